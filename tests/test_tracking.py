"""Watching a search: the optuna journal mirror (kill -9 + resume, rebuild), optuna-dashboard's HTTP API on a real
ci-zoo run, MLflow (a local server started here) and W&B (offline) receiving one entry per candidate, trackers
that raise or stall, and the HTML report."""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from evomerge.cli import cli
from evomerge.run import resume, run_config_from_dict, run_search
from evomerge.run.ledger import Ledger
from evomerge.run.run_dir import load_run_dir_config
from evomerge.spaces import build_space
from evomerge.tracking import TRACKERS, Tracker
from evomerge.tracking.base import TrackedRun
from evomerge.tracking.optuna_journal import journal_matches, journal_path

from test_run_resume import _spawn, config, kill_at_ledger_sizes, stable


def tracked(run_dir: Path) -> tuple[TrackedRun, object]:
    cfg = load_run_dir_config(run_dir)
    space = build_space(cfg.space, base=cfg.base, models=cfg.models)
    return TrackedRun(cfg.name, run_dir, cfg.model_dump(mode="json"), [o.metric for o in cfg.objectives],
                      cfg.directions, space.names()), space


def mirror_equals_ledger(run_dir: Path) -> bool:
    run, space = tracked(run_dir)
    return journal_matches(run_dir, Ledger(run_dir / "ledger.jsonl").records(), run, space)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_http(url: str, proc: subprocess.Popen, seconds: float = 90.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {seconds} s")


# ---- the optuna journal mirror -------------------------------------------------------------------------------

def test_journal_mirror_equals_the_ledger_after_kill_9_and_resume(tmp_path):
    cfg = config(fitness={"kind": "synthetic", "tasks": ["a", "b", "c"], "sleep_s": 0.03, "fail_above": 0.93},
                 optimizer={"name": "optuna", "population": 4})
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "killed"
    killed, args = kill_at_ledger_sizes(cfg_path, run_dir, (3, 9, 15))
    assert killed >= 2
    proc = _spawn(args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    records = Ledger(run_dir / "ledger.jsonl").records()
    assert len(records) >= 32 and any(r["status"] != "ok" for r in records)  # failed candidates mirrored too
    assert mirror_equals_ledger(run_dir)
    import optuna

    study = optuna.load_study(study_name=cfg["name"],
                              storage=optuna.storages.JournalStorage(
                                  optuna.storages.journal.JournalFileBackend(str(journal_path(run_dir)))))
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE" if r["status"] == "ok" else "FAIL" for r in records]
    assert [t.params for t in study.trials] == [r["point"] for r in records]  # every parameter in the space
    run_search(run_config_from_dict(cfg), tmp_path / "ref")  # and the killed run's ledger is the uninterrupted one
    assert stable(run_dir) == stable(tmp_path / "ref")


def test_a_journal_that_differs_from_the_ledger_is_rebuilt_and_one_that_lags_is_extended(tmp_path):
    cfg = run_config_from_dict(config(budget={"evaluations": 10}))
    run_search(cfg, tmp_path / "r")
    path = journal_path(tmp_path / "r")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-3]) + lines[-3][:20])  # lags by three trials, the last one torn
    resume(tmp_path / "r", budget={"evaluations": 14})
    assert mirror_equals_ledger(tmp_path / "r") and len(Ledger(tmp_path / "r" / "ledger.jsonl")) == 14
    data = path.read_text().replace('"gen":1', '"gen":7')  # a hand-edited journal: rebuilt from the ledger
    path.write_text(data)
    assert not mirror_equals_ledger(tmp_path / "r")
    resume(tmp_path / "r", budget={"evaluations": 16})
    assert mirror_equals_ledger(tmp_path / "r")
    path.unlink()  # `evomerge dashboard` rebuilds a missing journal when no search holds it
    from evomerge.tracking.serve import refresh_journal

    assert refresh_journal(tmp_path / "r") == path and mirror_equals_ledger(tmp_path / "r")


def test_pruned_candidates_keep_their_estimate_as_an_intermediate_value():
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from evomerge.tracking.optuna_journal import frozen_trial

    rec = {"eval_id": 4, "gen": 1, "point": {"w": 0.5, "gone": 3}, "status": "ok", "values": [0.41], "time": 1e9,
           "fidelity": {"items": 24, "se": 0.08, "level": 0, "stopped": True, "fingerprint": {"x": 1}}}
    t = frozen_trial(rec, {"w": FloatDistribution(0, 1)}, ["mean"])
    assert t.state == TrialState.PRUNED and t.values is None and t.intermediate_values == {24: 0.41}
    assert t.user_attrs["fidelity"] == {"items": 24, "se": 0.08, "level": 0, "stopped": True}
    assert t.user_attrs["params_outside_space"] == {"gone": 3} and t.params == {"w": 0.5}


# ---- optuna-dashboard on a real run folder ---------------------------------------------------------------------

def ci_zoo_job(run_name: str, **kw) -> dict:
    return {"name": run_name, "seed": 0, "base": "zoo://ci/base",
            "models": ["zoo://ci/add", "zoo://ci/reverse", "zoo://ci/sort"],
            "space": {"preset": "method_choice"},
            "fitness": {"kind": "lm_eval", "tasks": ["zoo_add", "zoo_reverse"], "include_path": ["zoo"],
                        "estimator": "subset_mean", "anchors": "random", "items_per_task": 12, "population": 0},
            "objectives": [{"metric": "zoo_add"}, {"metric": "zoo_reverse"}],
            "optimizer": {"name": "optuna", "population": 3, "options": {"sampler": "nsga2"}},
            "budget": {"evaluations": 6}, "finalists": {"top": 0, "recommended": False}, **kw}


def test_optuna_dashboard_serves_the_runs_trials(ci_zoo, tmp_path):
    run_dir = tmp_path / "run"
    run_search(run_config_from_dict(ci_zoo_job("dash")), run_dir)
    records = Ledger(run_dir / "ledger.jsonl").records()
    from evomerge.run.html_report import write_html_report

    html = write_html_report(run_dir).read_text()  # two objectives: the front's plot and table too
    assert "<h2>Pareto front</h2>" in html and html.count("data:image/png;base64,") == 3
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "evomerge.cli", "dashboard", str(run_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("optuna-dashboard: http://127.0.0.1:"), line + proc.stderr.read().decode()
        base = line.split()[1].rsplit("/dashboard", 1)[0]
        studies = get_json(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["dash"]
        assert studies[0]["directions"] == ["maximize", "maximize"]
        study = get_json(f"{base}/api/studies/{studies[0]['study_id']}?after=0")
        trials = study["trials"]
        assert len(trials) == len(records) == 6
        assert [t["values"] for t in trials] == [r["values"] for r in records]
        assert [{p["name"] for p in t["params"]} for t in trials] == [set(r["point"]) for r in records]
        assert study["objective_names"] == ["zoo_add", "zoo_reverse"]
        assert {t["number"] for t in study["best_trials"]} == {r["eval_id"] for r in _front(run_dir)}
        page = urllib.request.urlopen(f"{base}/dashboard", timeout=10).read()
        assert b"<html" in page.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_an_open_dashboard_follows_a_resumed_search(tmp_path):
    run_dir = run_search(run_config_from_dict(config(budget={"evaluations": 5})), tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "evomerge.cli", "dashboard", str(run_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        base = proc.stdout.readline().decode().split()[1].rsplit("/dashboard", 1)[0]
        assert len(get_json(f"{base}/api/studies/0?after=0")["trials"]) == 5
        with open(journal_path(run_dir), "ab") as fh:  # a kill -9 in the middle of appending a trial
            fh.write(b'{"op_code":4,"worker_id":"x","study_id":0,"datetime_st')
        assert len(get_json(f"{base}/api/studies/0?after=0")["trials"]) == 5
        resume(run_dir, budget={"evaluations": 9})  # the same dashboard, not restarted, sees every trial
        deadline = time.time() + 30  # optuna-dashboard caches a study's trials for 2-10 s
        while len(trials := get_json(f"{base}/api/studies/0?after=0")["trials"]) < 9 and time.time() < deadline:
            time.sleep(0.5)
        assert [t["values"] for t in trials] == [r["values"] for r in Ledger(run_dir / "ledger.jsonl")]
        assert len(trials) == 9
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _front(run_dir):
    from evomerge.run.report import RunReport

    rep = RunReport.load(run_dir)
    fronts = rep.front()
    values = {json.dumps(r["values"]) for r in fronts}
    return [r for r in rep.ok() if json.dumps(r["values"]) in values]  # optuna keeps equal points on the front


# ---- trackers --------------------------------------------------------------------------------------------------

def read_wandb_history(path: Path) -> list[dict]:
    """History rows of an offline W&B run file (its LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind in (3, 4):
            buf += chunk
            if kind == 4:
                chunks.append(buf)
    rows = []
    for chunk in chunks:
        rec = pb.Record()
        rec.ParseFromString(chunk)
        if rec.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return rows


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--default-artifact-root", str(tmp_path / "mlartifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_mlflow_server_and_wandb_offline_get_one_entry_per_candidate(mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = config(budget={"evaluations": 12}, fitness={"kind": "synthetic", "tasks": ["a", "b"], "fail_above": 0.93},
                 tracking=["wandb", {"name": "mlflow", "options": {"tracking_uri": mlflow_server,
                                                                   "experiment": "tracking-test"}}])
    run_dir = run_search(run_config_from_dict(cfg), tmp_path / "run")
    records = Ledger(run_dir / "ledger.jsonl").records()
    assert len(records) == 12

    client = MlflowClient(tracking_uri=mlflow_server)
    parent_id = json.loads((run_dir / "tracking" / "mlflow.json").read_text())["run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000)
    by_id = {int(c.data.tags["evomerge.eval_id"]): c for c in children}
    assert sorted(by_id) == [r["eval_id"] for r in records]
    for r in records:
        child = by_id[r["eval_id"]]
        assert child.info.status == ("FINISHED" if r["status"] == "ok" else "FAILED")
        assert {k: float(v) for k, v in child.data.params.items()} == pytest.approx(r["point"])
        if r["status"] == "ok":
            assert child.data.metrics["objective/mean"] == pytest.approx(r["values"][0])
    history = client.get_metric_history(parent_id, "objective/mean")
    assert sorted(m.step for m in history) == [r["eval_id"] for r in records if r["status"] == "ok"]
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"config.json", "pareto_front.json", "plots", "winner_recipe.yaml"} <= artifacts

    wb = list((run_dir / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(wb) == 1
    rows = [row for row in read_wandb_history(wb[0]) if "eval_id" in row]
    assert [row["eval_id"] for row in rows] == [r["eval_id"] for r in records]
    assert [row.get("objective/mean") for row in rows] == [r["values"][0] if r["status"] == "ok" else None
                                                           for r in records]


def test_mlflow_default_local_store_logs_into_the_same_run_after_a_resume(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = run_config_from_dict(config(budget={"evaluations": 6}, tracking=["mlflow"],
                                      fitness={"kind": "synthetic", "tasks": ["a", "b"]}))
    run_dir = run_search(cfg, tmp_path / "run")
    state = json.loads((run_dir / "tracking" / "mlflow.json").read_text())
    state["logged_through"] = 3  # as if killed after logging candidate 5 but before noting it
    (run_dir / "tracking" / "mlflow.json").write_text(json.dumps(state))
    resume(run_dir, budget={"evaluations": 10})
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'tracking' / 'mlflow.db'}")
    parent = client.get_run(state["run_id"])
    children = client.search_runs([parent.info.experiment_id], max_results=100,
                                  filter_string=f"tags.mlflow.parentRunId = '{state['run_id']}'")
    assert sorted(int(c.data.tags["evomerge.eval_id"]) for c in children) == list(range(10))  # none twice
    assert len(client.search_runs([parent.info.experiment_id], filter_string="tags.mlflow.runName = 'resume-test'"))\
        == 1
    assert json.loads((run_dir / "tracking" / "mlflow.json").read_text())["logged_through"] == 9
    assert not (tmp_path / "mlruns").exists()  # the artifacts stay in the run folder
    assert (run_dir / "tracking" / "mlflow-artifacts").is_dir()


class Exploding(Tracker):
    def candidate(self, record):
        if record["eval_id"] >= 2:
            raise RuntimeError("tracker server said no")


class Stalling(Tracker):
    seen: list = []

    def candidate(self, record):
        time.sleep(0.25)
        type(self).seen.append(record["eval_id"])


TRACKERS.register("test-exploding")(Exploding)
TRACKERS.register("test-stalling")(Stalling)


def test_a_tracker_that_raises_or_stalls_changes_nothing_and_slows_nothing(tmp_path, caplog, monkeypatch):
    cfg = config(budget={"evaluations": 16}, fitness={"kind": "synthetic", "tasks": ["a", "b"]})
    run_search(run_config_from_dict(cfg), tmp_path / "plain")
    with caplog.at_level(logging.WARNING, logger="evomerge.tracking"):
        run_search(run_config_from_dict({**cfg, "tracking": ["test-exploding", "test-stalling"]}), tmp_path / "t")
    assert stable(tmp_path / "t") == stable(tmp_path / "plain")
    warned = [r.getMessage() for r in caplog.records if "test-exploding" in r.getMessage()]
    assert len(warned) == 1 and "tracker server said no" in warned[0] and "goes on without it" in warned[0]
    times = [r["time"] for r in Ledger(tmp_path / "t" / "ledger.jsonl")]
    assert times[-1] - times[0] < 16 * 0.25 / 2  # the search never waited for the stalling tracker ...
    assert Stalling.seen == list(range(16))  # ... which still got every candidate before the run returned
    assert json.loads((tmp_path / "t" / "tracking" / "test-stalling.json").read_text())["logged_through"] == 15


def test_a_tracker_whose_package_is_missing_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config(tracking=["wandb"])))
    res = CliRunner().invoke(cli, ["run", "job.yaml"])
    assert res.exit_code == 2 and "error: tracker wandb needs the wandb package (pip install 'evomerge[wandb]')" \
        in res.output
    assert not (tmp_path / "runs").exists()


# ---- the HTML report -----------------------------------------------------------------------------------------

def test_html_report_is_self_contained_and_shows_the_run(ci_zoo, tmp_path):
    run_dir = tmp_path / "run"
    run_search(run_config_from_dict(ci_zoo_job("rep", objectives=[{"metric": "mean"}],
                                                optimizer={"name": "cma", "population": 3},
                                                space={"preset": "task_arithmetic_attn_mlp"},
                                                finalists={"top": 2, "items_per_task": 10})), run_dir)
    res = CliRunner().invoke(cli, ["report", str(run_dir), "--html"])
    assert res.exit_code == 0, res.output
    html = (run_dir / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html  # opens offline
    assert html.count("data:image/png;base64,") == 2  # progress, the winner's recipe per layer and model
    assert "Finalists" in html and "best 6 candidates" in html
    from evomerge.run.report import RunReport

    best = RunReport.load(run_dir).best()
    assert f"Winner: candidate {best['eval_id']}" in html and "zoo://ci/add" in html


def test_recipe_grids_show_the_weight_in_force_per_layer_module_and_model():
    from evomerge.run.recipe_grid import recipe_grids

    recipe = {"method": "ties", "base": "zoo://ci/base", "params": {"density": 0.5},
              "models": [{"model": "zoo://ci/add", "params": {"weight": 0.3}},
                         {"model": "org/rev@abc", "params": {"weight": 0.6}}],
              "overrides": [{"layers": [1, 2], "modules": ["mlp"], "model": "zoo://ci/add", "params": {"weight": 0.9}},
                            {"layers": [0, 1], "modules": ["self_attn"], "params": {"density": 0.2}}]}
    density, weight = recipe_grids(recipe, n_layers=3)  # global parameters first
    assert weight.rows == ["add mlp", "add self_attn", "rev mlp", "rev self_attn"] and weight.cols == ["0", "1", "2"]
    assert weight.values == [[0.3, 0.9, 0.3], [0.3, 0.3, 0.3], [0.6, 0.6, 0.6], [0.6, 0.6, 0.6]]
    assert density.values[1] == [0.2, 0.5, 0.5] and density.values[0] == [0.5, 0.5, 0.5]
    path = recipe_grids({"kind": "dataflow", "models": {"a": "zoo://ci/add", "b": "zoo://ci/sort"},
                         "path": [["a", 0], ["b", 0, 0.5], ["a", 1]]})
    assert len(path) == 1 and path[0].labels == [["L0", "", "L1"], ["", "L0", ""]]
    assert path[0].values[1][1] == 0.5 and path[0].rows == ["a (add)", "b (sort)"]
