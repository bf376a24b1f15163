"""A Ray cluster of several nodes on one machine (``ray.cluster_utils.Cluster``: one raylet per node, fake GPUs):
workers spread over the nodes, actors that need k GPUs placed as a unit, a node lost mid-run (its candidates
retried elsewhere, the ledger equal to the uninterrupted run's), the driver killed and resumed, and a model the
driver has but a node lacks refused before any compute."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from evomerge.errors import EvomergeError
from evomerge.execution.base import EXECUTORS, WorkerSpec
from evomerge.run import resume, run_config_from_dict, run_search
from evomerge.run.ledger import Ledger
from hub_cache import seed_hub_cache

SYN = {"kind": "synthetic", "tasks": ["a", "b"], "sleep_s": 0.4}


@pytest.fixture(scope="module")
def cluster(ci_zoo, tmp_path_factory):
    """Head (no GPU) + nodes A, B (2 fake GPUs each) + node C (1 GPU, an empty offline hub cache)."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cache = tmp_path_factory.mktemp("hub-cache")
    seed_hub_cache(cache, "org/base", ci_zoo / "base")
    seed_hub_cache(cache, "org/add", ci_zoo / "add")
    env = {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    temp = tempfile.mkdtemp(prefix="emc")  # short: Unix socket paths are limited to 107 bytes
    old_tmp = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp  # the cluster's address file too, never /tmp/ray
    os.makedirs(os.path.join(temp, "ray"))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": os.path.join(temp, "ray"),
                                                      "env_vars": {**env, "HF_HUB_CACHE": str(cache)}})
    nodes = {name: c.add_node(num_cpus=1, num_gpus=gpus, env_vars={**env, "HF_HUB_CACHE": str(where)})
             for name, gpus, where in (("A", 2, cache), ("B", 2, cache), ("C", 1, cache.parent / "empty"))}
    c.wait_for_nodes()
    c.nodes_by_name, c.hub_cache = nodes, cache
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()
    if old_tmp is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = old_tmp
    shutil.rmtree(temp, ignore_errors=True)


def job(cluster, **kw):
    return {"name": "cl", "seed": 2, "base": "/m/base", "models": ["/m/a", "/m/b"],
            "space": {"preset": "ties_layerwise", "num_layers": 4}, "fitness": SYN,
            "objectives": [{"metric": "mean"}], "optimizer": {"name": "cma", "population": 4, "warm_start": "none"},
            "budget": {"evaluations": 12}, "finalists": {"top": 0, "recommended": False},
            "executor": {"name": "ray", "options": {"address": cluster.address, "num_gpus": 1, "num_cpus": 1,
                                                    "start_timeout_s": 120, "max_retries": 3}}, **kw}


def stable(run_dir):
    return [{k: v for k, v in r.items() if k not in ("time", "timings")} for r in Ledger(Path(run_dir) / "ledger.jsonl")]


def reference(cluster, tmp_path):
    cfg = job(cluster, executor={"name": "local"})
    run_search(run_config_from_dict(cfg), tmp_path / "ref")
    return stable(tmp_path / "ref")


def _where(cluster, gpus):
    import ray

    spec = WorkerSpec(fitness=SYN, sources=["/m/a", "/m/b"], base="/m/base")
    ex = EXECUTORS.get("ray")(spec, address=cluster.address, num_gpus=gpus, num_cpus=1, start_timeout_s=120)
    try:
        ex.wait_ready()
        return ray.get([s.actor.where.remote() for s in ex._slots.values()])
    finally:
        ex.close()


def test_workers_spread_over_nodes_and_multi_gpu_actors_are_placed_whole(cluster):
    ids = {name: n.node_id for name, n in cluster.nodes_by_name.items()}
    one = _where(cluster, 1)  # one actor per node with a GPU and a CPU: A, B and C
    assert sorted(node for node, _ in one) == sorted(ids.values())
    assert all(len(g) == 1 for _, g in one)
    two = _where(cluster, 2)  # two GPUs per actor: only A and B hold them, each actor gets both of its node's
    assert sorted(node for node, _ in two) == sorted([ids["A"], ids["B"]])
    assert all(len(g) == 2 for _, g in two)


def test_a_model_the_driver_has_but_a_node_lacks_is_refused_before_any_compute(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(cluster.hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = job(cluster, base="org/base", models=["org/add"], space={"preset": "ties_layerwise"},
              fitness={"kind": "lm_eval", "tasks": ["zoo_add"], "include_path": ["zoo"], "estimator": "full",
                       "population": 0})
    with pytest.raises(EvomergeError) as ei:
        run_search(run_config_from_dict(cfg), tmp_path / "r")
    msg = str(ei.value)
    assert "org/base" in msg and cluster.nodes_by_name["C"].node_id[:8] in msg and "\n" not in msg
    ledger = tmp_path / "r" / "ledger.jsonl"
    assert not ledger.exists() or not ledger.read_text().strip()  # nothing evaluated


def test_a_node_lost_mid_run_retries_its_candidates_elsewhere(cluster, tmp_path):
    want = reference(cluster, tmp_path)
    lost = []

    def on_event(ev):
        if ev.get("event") == "candidate" and ev["n_evals"] == 3 and not lost:
            lost.append(cluster.nodes_by_name["C"])
            cluster.remove_node(cluster.nodes_by_name["C"], allow_graceful=False)

    run_search(run_config_from_dict(job(cluster)), tmp_path / "run", progress=on_event)
    assert lost and stable(tmp_path / "run") == want
    attempts = [r["timings"].get("ray_attempts", 1.0) for r in Ledger(tmp_path / "run" / "ledger.jsonl")]
    assert max(attempts) >= 2.0  # the candidates the lost node held ran again elsewhere
    # the cluster lives on without node C
    cluster.nodes_by_name["C"] = cluster.add_node(num_cpus=1, num_gpus=1, env_vars={
        "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cluster.hub_cache.parent / "empty")})
    cluster.wait_for_nodes()


def test_the_driver_killed_then_resumed_gives_the_uninterrupted_ledger(cluster, tmp_path):
    want = reference(cluster, tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job(cluster)))
    code = "import sys; from evomerge.cli import main; main(sys.argv[1:])"
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.Popen([sys.executable, "-c", code, "run", "job.yaml"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ledger = tmp_path / "runs" / "cl" / "ledger.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if ledger.exists() and ledger.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 5 <= len(Ledger(ledger)) < 12
    resume(tmp_path / "runs" / "cl")
    assert stable(tmp_path / "runs" / "cl") == want
