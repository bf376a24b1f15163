"""The Ray executor on a real local Ray (one module-scoped session of 2 CPUs; starting Ray costs seconds)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from evomerge.errors import ConfigError, EvomergeError  # noqa: E402
from evomerge.execution import EXECUTORS, WORKERS, WorkerSpec  # noqa: E402
from evomerge.run import run_config_from_dict, run_search  # noqa: E402
from evomerge.run.validate import validate_run  # noqa: E402
from evomerge.run.ledger import Ledger  # noqa: E402

VOLATILE = ("eval_id", "time", "timings", "n_asked")  # n_asked: when a steady-state result was told


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """One local Ray for the module (2 CPUs, temp dir under pytest's short tmp root, dashboard off)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, _temp_dir=str(tmp_path_factory.mktemp("ray")), include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def config(ci_zoo, executor, **kw):
    zoo = [f"zoo://ci/{n}" for n in ("add", "reverse", "sort")]
    cfg = {
        "name": "ray-test", "seed": 5, "base": "zoo://ci/base", "models": zoo,
        "space": {"preset": "ties_layerwise", "num_layers": 2},
        "fitness": {"kind": "synthetic", "tasks": ["add", "reverse", "sort"], "num_layers": 2, "sleep_s": 0.05},
        "objectives": [{"metric": "mean"}],
        "optimizer": {"name": "cma", "population": 5},
        "budget": {"evaluations": 10},
        "executor": executor,
    }
    cfg.update(kw)
    return cfg


def by_slot(run_dir):
    """Ledger records keyed by (generation, index), without what depends on completion order or timing."""
    return {(r["gen"], r["index"]): {k: v for k, v in r.items() if k not in VOLATILE}
            for r in Ledger(Path(run_dir) / "ledger.jsonl")}


RAY2 = {"name": "ray", "options": {"num_workers": 2, "num_cpus": 1, "timeout_s": 60}}


def test_ray_search_gives_the_in_process_ledger(ray_session, ci_zoo, tmp_path):
    local = run_search(run_config_from_dict(config(ci_zoo, {"name": "local"})), tmp_path / "local")
    remote = run_search(run_config_from_dict(config(ci_zoo, RAY2)), tmp_path / "ray")
    a, b = by_slot(local), by_slot(remote)
    assert len(a) == 10 and a == b
    assert all(r["status"] == "ok" for r in b.values())


def test_steady_state_search_on_ray_tells_every_result_once(ray_session, ci_zoo, tmp_path):
    from evomerge.run.checkpoint import load_latest_checkpoint

    tpe = {"name": "optuna", "population": 5, "options": {"sampler": "tpe", "sampler_options": {"n_startup_trials": 4}}}
    run_dir = run_search(run_config_from_dict(config(ci_zoo, RAY2, optimizer=tpe)), tmp_path / "ray")
    recs = Ledger(run_dir / "ledger.jsonl").records()
    assert sorted(r["index"] for r in recs) == list(range(10)) and all(r["status"] == "ok" for r in recs)
    assert all(r["n_asked"] <= r["eval_id"] + 2 for r in recs)  # 2 workers: never more than 2 points out
    state = load_latest_checkpoint(run_dir / "checkpoints")[1]
    opt = state["optimizer"]  # optuna's state is plain data (no pickle)
    assert opt["pending"] == [] and state["schedule"] == "steady_state"
    assert sorted(t["values"][0] for t in opt["state"]["trials"]) == sorted(-r["values"][0] for r in recs)


@pytest.mark.slow  # ~4 min on 2 busy cores: each actor loads the CI zoo and builds the lm-eval tasks
@pytest.mark.skipif("lm_eval" not in WORKERS, reason="the lm_eval worker has not landed yet")
def test_ray_search_on_the_ci_zoo_with_lm_eval_matches_in_process(ray_session, ci_zoo, tmp_path):
    fitness = {"kind": "lm_eval", "tasks": ["zoo_add", "zoo_reverse"], "include_path": ["zoo"],
               "estimator": "full", "population": 0, "batch_size": 16}
    kw = dict(fitness=fitness, objectives=[{"metric": "zoo_add"}, {"metric": "zoo_reverse"}],
              optimizer={"name": "random", "population": 3}, budget={"evaluations": 3})
    local = run_search(run_config_from_dict(config(ci_zoo, {"name": "local"}, **kw)), tmp_path / "local")
    remote = run_search(run_config_from_dict(config(ci_zoo, RAY2, **kw)), tmp_path / "ray")
    a, b = by_slot(local), by_slot(remote)
    assert len(a) == 3 and a == b


@pytest.mark.slow  # replaces both actors (a fresh Python + torch import each): minutes on 2 busy cores
def test_killing_workers_mid_candidate_retries_and_completes(ray_session, ci_zoo, tmp_path):
    cfg = config(ci_zoo, RAY2, fitness={"kind": "synthetic", "tasks": ["add", "reverse", "sort"], "num_layers": 2,
                                        "sleep_s": 0.6})
    killed: list[str] = []

    def progress(event):
        # at the first completed candidate the other worker is mid-candidate: kill every worker of the pool
        if event["event"] == "candidate" and not killed:
            for name in ray.util.list_named_actors():
                if name.startswith("evomerge-") and "-worker-" in name:
                    ray.kill(ray.get_actor(name), no_restart=True)
                    killed.append(name)

    run_dir = run_search(run_config_from_dict(cfg), tmp_path / "killed", progress=progress)
    assert len(killed) == 2
    records = Ledger(run_dir / "ledger.jsonl").records()
    assert len(records) == 10 and all(r["status"] == "ok" for r in records)
    assert sum(r["timings"]["ray_attempts"] > 1 for r in records) >= 1  # the killed candidate ran again
    reference = run_search(run_config_from_dict({**cfg, "executor": {"name": "local"},
                                                 "fitness": {**cfg["fitness"], "sleep_s": 0.0}}), tmp_path / "ref")
    assert by_slot(run_dir) == by_slot(reference)


@pytest.mark.slow  # starts three actors in turn
def test_a_hung_candidate_times_out_is_retried_then_recorded_failed(ray_session, ci_zoo, tmp_path):
    from evomerge.optim import make_optimizer
    from evomerge.spaces import build_space

    models = [f"zoo://ci/{n}" for n in ("add", "reverse")]
    space = build_space({"preset": "ties_layerwise", "num_layers": 2}, base="zoo://ci/base", models=models)
    recipe = space.decode(make_optimizer("random", space, ["maximize"], seed=0).ask(1)[0])
    spec = WorkerSpec(fitness={"kind": "synthetic", "num_layers": 2, "sleep_s": 120}, sources=space.sources(),
                      base="zoo://ci/base")
    with EXECUTORS.get("ray")(spec, run_dir=tmp_path, num_workers=1, timeout_s=1.5, max_retries=1) as ex:
        t0 = time.monotonic()
        [(key, res)] = list(ex.map([("hung", recipe)]))
        elapsed = time.monotonic() - t0
    assert key == "hung" and res.status == "failed"
    assert res.reason.startswith("timed out after 1.5 s") and "attempt 2 of 2" in res.reason
    assert ex.last_stats["replaced"] == 2 and ex.last_stats["retries"] == 1
    assert elapsed < 120  # far below the candidate's 120 s sleep: it was cut off, twice


def test_bad_input_fails_with_one_line(ray_session, ci_zoo, tmp_path):
    spec = WorkerSpec(fitness={"kind": "synthetic"}, sources=["a", "b"])
    ray_cls = EXECUTORS.get("ray")
    t0 = time.monotonic()
    with pytest.raises(EvomergeError, match=r"^Ray cluster at 127\.0\.0\.1:1 is unreachable") as err:
        ray_cls(spec, run_dir=tmp_path, address="127.0.0.1:1", connect_timeout_s=2)
    assert "\n" not in str(err.value) and time.monotonic() - t0 < 5
    with pytest.raises(EvomergeError, match=r"num_gpus=1 but the local machine has at most 0 GPU") as err:
        ray_cls(spec, run_dir=tmp_path, num_gpus=1)
    with pytest.raises(EvomergeError, match=r"num_cpus=3 but the local machine has at most 2 CPU"):
        ray_cls(spec, run_dir=tmp_path, num_cpus=3)
    with pytest.raises(ConfigError, match="above 1 it must be a whole number"):
        ray_cls(spec, run_dir=tmp_path, num_gpus=1.5)
    # typed options are checked by validate_run, before Ray or any model is touched
    cfg = run_config_from_dict(config(ci_zoo, {"name": "ray", "options": {"num_worker": 2}}))
    with pytest.raises(ConfigError, match="invalid ray executor options: num_worker: Extra inputs"):
        validate_run(cfg)


def test_a_broken_worker_build_is_one_clear_error(ray_session, tmp_path):
    missing = str(tmp_path / "missing-model")  # the spec is valid; building the worker in the actor fails
    spec = WorkerSpec(fitness={"kind": "lm_eval", "tasks": ["zoo_add"], "include_path": ["zoo"]},
                      sources=[missing], base=missing)
    ex = EXECUTORS.get("ray")(spec, run_dir=tmp_path, num_workers=1, start_timeout_s=600)
    with pytest.raises(EvomergeError, match="ray worker could not build its evaluator: EvomergeError: model folder "
                                            "not found"):
        list(ex.map([(0, None)]))
    ex.close()


@pytest.mark.slow  # a fresh process starts its own Ray: a minute or two on 2 busy cores
def test_cli_run_starts_ray_inside_the_run_dir_and_writes_nothing_in_home(ci_zoo, tmp_path):
    """A fresh process: `evomerge run` with executor ray starts its own Ray in RUN_DIR/ray (dashboard off)."""
    home = tmp_path / "home"
    home.mkdir()
    cfg = config(ci_zoo, {"name": "ray", "options": {"num_workers": 2}}, budget={"evaluations": 4},
                 optimizer={"name": "random", "population": 4})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "a-long-run-directory-name-so-that-the-socket-path-needs-the-short-link" / "run"
    env = dict(os.environ, HOME=str(home), PYTHONHASHSEED="0")
    env.pop("RAY_ADDRESS", None)
    code = "import sys; from evomerge.cli import main; main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, "run", str(tmp_path / "c.yaml"), "--run-dir", str(run_dir)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(Ledger(run_dir / "ledger.jsonl").records()) == 4
    sessions = [p for p in (run_dir / "ray").glob("session_*") if not p.is_symlink()]
    assert sessions and (sessions[0] / "logs").is_dir()
    assert not any(home.iterdir()), sorted(p.name for p in home.iterdir())
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("evomerge-ray-*"))  # the short link is removed


def ledger_lines(run_dir):
    """The ledger as written, record by record, without the timing fields (wall-clock dependent)."""
    import json

    return [json.dumps({k: v for k, v in r.items() if k not in ("time", "timings")}, sort_keys=True)
            for r in Ledger(Path(run_dir) / "ledger.jsonl")]


@pytest.mark.slow  # two Ray runs with uneven candidate costs: about a minute on 2 busy cores
def test_two_ray_runs_write_the_local_ledger_in_proposal_order(ray_session, ci_zoo, tmp_path):
    fitness = {"kind": "synthetic", "tasks": ["add", "reverse", "sort"], "num_layers": 2, "sleep_s": 0.02,
               "sleep_spread_s": 0.4}  # uneven costs: results come back out of proposal order
    kw = dict(fitness=fitness, budget={"evaluations": 10})
    local = run_search(run_config_from_dict(config(ci_zoo, {"name": "local"}, **kw)), tmp_path / "local")
    runs = [run_search(run_config_from_dict(config(ci_zoo, RAY2, **kw)), tmp_path / f"ray{i}") for i in range(2)]
    want = ledger_lines(local)
    assert len(want) == 10
    assert [r["index"] for r in Ledger(local / "ledger.jsonl")] == [0, 1, 2, 3, 4] * 2
    for run_dir in runs:
        assert ledger_lines(run_dir) == want
