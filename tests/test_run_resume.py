"""Kill -9 and resume: a real subprocess, SIGKILLed at several points, ends with the uninterrupted ledger."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from evomerge.errors import ConfigError, EvomergeError
from evomerge.run import resume, run_config_from_dict, run_search
from evomerge.run.ledger import Ledger

VOLATILE = ("time", "timings")


def config(**kw):
    cfg = {
        "name": "resume-test", "seed": 3, "base": "/m/base", "models": ["/m/a", "/m/b", "/m/c"],
        "space": {"preset": "ties_layerwise", "num_layers": 4},
        "fitness": {"kind": "synthetic", "tasks": ["a", "b", "c"], "sleep_s": 0.03},
        "objectives": [{"metric": "mean"}],
        "optimizer": {"name": "cma", "population": 5},
        "budget": {"evaluations": 32},
    }
    cfg.update(kw)
    return cfg


def stable(run_dir):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in Ledger(Path(run_dir) / "ledger.jsonl")]


def _spawn(args):
    env = dict(os.environ, PYTHONHASHSEED="0")
    # only this package's verbs: loading every verb module (zoo training code...) costs seconds per spawn
    code = "import sys; import evomerge.run.cli; from evomerge.cli import cli; cli.main(sys.argv[1:], prog_name='evomerge')"
    return subprocess.Popen([sys.executable, "-c", code] + args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _lines(path):
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_at_ledger_sizes(cfg_path, run_dir, targets, wait_s=60.0):
    """Start ``evomerge run`` and kill -9 it once the ledger holds each of ``targets`` records (resuming after
    each kill); returns the number of kills and the command line that continues the run."""
    args, killed = ["run", str(cfg_path), "--run-dir", str(run_dir)], 0
    for target in targets:
        proc = _spawn(args)
        deadline = time.time() + wait_s
        while _lines(run_dir / "ledger.jsonl") < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        if (run_dir / "config.yaml").exists():
            args = ["resume", str(run_dir)]
    return killed, args


def killed_run_matches_uninterrupted(cfg: dict, tmp_path, targets=(2, 6, 9), wait_s=60.0, timeout=120) -> list:
    """Run ``cfg`` uninterrupted, then again with kill -9 at ``targets`` ledger sizes and a final resume; assert
    both ledgers match (and that at least two kills landed). Returns the reference ledger."""
    run_search(run_config_from_dict(cfg), tmp_path / "ref")
    reference = stable(tmp_path / "ref")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "killed"
    killed, args = kill_at_ledger_sizes(cfg_path, run_dir, targets, wait_s=wait_s)
    proc = _spawn(args)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()
    assert killed >= 2
    assert stable(run_dir) == reference
    return reference


@pytest.mark.parametrize("optimizer", [{"name": "cma", "population": 5},
                                       {"name": "optuna", "population": 4, "options": {"sampler": "tpe"}}])
def test_sigkill_at_several_points_then_resume_gives_the_uninterrupted_ledger(tmp_path, optimizer):
    cfg = config(optimizer=optimizer)
    ref_dir = tmp_path / "ref"
    run_search(run_config_from_dict(cfg), ref_dir)
    reference = stable(ref_dir)
    assert len(reference) == 32

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "killed"
    # kill after the ledger reached these sizes: mid-generation, right at a generation end, and again later;
    # the last one is a kill 0.05 s after start-up of a resume (before or during its first evaluations)
    killed, args = kill_at_ledger_sizes(cfg_path, run_dir, [3, 10, 11, 22])
    proc = _spawn(args)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc = _spawn(["resume", str(run_dir)])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert killed >= 3
    assert stable(run_dir) == reference
    ids = [r["eval_id"] for r in stable(run_dir)]
    assert ids == list(range(32))  # nothing lost, nothing evaluated twice


def test_corrupt_latest_checkpoint_falls_back_and_still_matches(tmp_path):
    cfg = run_config_from_dict(config(budget={"evaluations": 20}, fitness={"kind": "synthetic", "tasks": ["a", "b"]}))
    run_search(cfg, tmp_path / "ref")
    reference = stable(tmp_path / "ref")
    run_dir = tmp_path / "run"
    run_search(run_config_from_dict(config(budget={"evaluations": 15},
                                           fitness={"kind": "synthetic", "tasks": ["a", "b"]})), run_dir)
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt-*.npz"))
    assert [p.name for p in ckpts] == ["ckpt-000002.npz", "ckpt-000003.npz"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:-7])  # torn latest checkpoint
    resume(run_dir, budget={"evaluations": 20})
    assert stable(run_dir) == reference


def test_failed_candidates_are_penalised_recorded_and_the_run_goes_on(tmp_path):
    cfg = run_config_from_dict(config(
        fitness={"kind": "synthetic", "tasks": ["a", "b"], "fail_above": 1.45, "nan_above": 1.4},
        objectives=[{"metric": "mean", "penalty": -5.0}],
        optimizer={"name": "random", "population": 10}, budget={"generations": 3}))
    run_search(cfg, tmp_path / "r")
    recs = Ledger(tmp_path / "r" / "ledger.jsonl").records()
    assert len(recs) == 30
    failed = [r for r in recs if r["status"] == "failed"]
    crashed = [r for r in failed if "synthetic merge failure" in r["reason"]]
    nan = [r for r in failed if "non-finite" in r["reason"]]
    assert crashed and nan and len(crashed) + len(nan) == len(failed) < 30
    assert all(r["values"] == [-5.0] for r in failed)
    assert all(r["status"] == "ok" and r["values"][0] > 0 for r in recs if r not in failed)


@pytest.mark.parametrize("change, msg", [
    ({"optimizer": {"name": "nosuch"}}, "unknown optimizer 'nosuch'"),
    ({"space": "nosuch_space"}, "neither a path nor a shipped name"),
    ({"space": {"preset": "ties_layerwise", "method": "nosuch"}}, "unknown merge method 'nosuch'"),
    ({"space": {"preset": "ties_layerwise", "weight": {"low": 1, "high": 0}}}, "bounds inverted"),
    ({"models": []}, "models is empty"),
    ({"objectives": []}, "objectives is empty"),
    ({"objectives": [{"metric": "nosuch"}]}, "objective metric 'nosuch' is not reported"),
    ({"budget": None}, "budget is missing"),
    ({"budget": {}}, "at least one of"),
    ({"fitness": {"kind": "nosuch"}}, "unknown fitness kind 'nosuch'"),
    ({"executor": {"name": "nosuch"}}, "unknown executor 'nosuch'"),
])
def test_bad_run_config_is_one_line_before_any_compute(tmp_path, change, msg):
    cfg = config(**change)
    with pytest.raises(EvomergeError, match=msg) as ei:
        run_search(run_config_from_dict(cfg), tmp_path / "r")
    assert "\n" not in str(ei.value)
    assert not (tmp_path / "r").exists()


def test_missing_model_is_refused(tmp_path):
    cfg = config(fitness={"kind": "lm_eval", "tasks": ["zoo_add"]}, models=[str(tmp_path / "nope")])
    with pytest.raises(EvomergeError, match="not found|nope"):
        run_search(run_config_from_dict(cfg), tmp_path / "r")


def test_run_dir_holding_a_different_run_is_refused(tmp_path):
    run_search(run_config_from_dict(config(budget={"evaluations": 5})), tmp_path / "r")
    with pytest.raises(ConfigError, match="different run .*seed"):
        run_search(run_config_from_dict(config(seed=4, budget={"evaluations": 5})), tmp_path / "r")


def test_cli_prints_one_error_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config(optimizer={"name": "nosuch"})))
    proc = _spawn(["run", str(bad), "--run-dir", str(tmp_path / "r")])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.decode().strip().splitlines() == ["error: unknown optimizer 'nosuch' (known: cma, nevergrad, optuna, random)"]


def test_wall_time_and_generation_budgets(tmp_path):
    cfg = run_config_from_dict(config(budget={"wall_time_s": 0.2},
                                      fitness={"kind": "synthetic", "tasks": ["a"], "sleep_s": 0.05}))
    run_search(cfg, tmp_path / "w")
    recs = Ledger(tmp_path / "w" / "ledger.jsonl").records()
    # the budget is checked between generations: the first generation (5 x 0.05 s) already spends it
    assert len(recs) == 5
    run_search(run_config_from_dict(config(budget={"generations": 2, "evaluations": 100})), tmp_path / "g")
    assert [r["gen"] for r in Ledger(tmp_path / "g" / "ledger.jsonl")] == [0] * 5 + [1] * 5
    run_search(run_config_from_dict(config(budget={"evaluations": 7})), tmp_path / "e")
    assert [r["gen"] for r in Ledger(tmp_path / "e" / "ledger.jsonl")] == [0] * 5 + [1] * 2


@pytest.mark.parametrize("damage, words", [
    (lambda s: s.pop("optimizer"), "optimizer is None, not a mapping"),
    (lambda s: s.update(optimizer={"x": 1}), "CMAES optimizer state has no pickled blob"),
    (lambda s: s["optimizer"].update(blob=b"\x80\x04K\x01."), "holds an optimizer state cma cannot restore"),
    (lambda s: s.update(gen="three"), "gen is 'three', not a count"),
    (lambda s: s.update(n_records=-4), "n_records is -4, not a count"),
    (lambda s: s.update(in_flight=[["a", 1]]), "in_flight is [['a', 1]], not a list of (index, point) pairs"),
], ids=["no-optimizer", "foreign-optimizer-state", "optimizer-blob-of-another-shape", "gen-not-a-number", "negative-count", "in-flight-garbled"])
def test_a_tampered_checkpoint_with_a_valid_checksum_is_one_error_line(tmp_path, damage, words):
    """A checkpoint edited by hand (its checksum redone) still holds only data: resume names what is wrong."""
    from click.testing import CliRunner

    from evomerge.cli import cli
    from evomerge.run.checkpoint import load_latest_checkpoint, save_checkpoint

    run_dir = tmp_path / "run"
    run_search(run_config_from_dict(config(budget={"evaluations": 10})), run_dir)
    step, state = load_latest_checkpoint(run_dir / "checkpoints")
    damage(state)
    save_checkpoint(run_dir / "checkpoints", step, state)
    before = (run_dir / "ledger.jsonl").read_text()
    res = CliRunner().invoke(cli, ["resume", str(run_dir), "--evaluations", "15"])
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert res.exit_code == 2 and len(errors) == 1 and words in errors[0], res.output
    assert "internal error" not in res.output and (run_dir / "ledger.jsonl").read_text() == before


@pytest.mark.parametrize("optimizer", [{"name": "cma", "population": 5}, {"name": "nevergrad", "population": 5},
                                       {"name": "optuna", "population": 5}, {"name": "random", "population": 5}],
                         ids=lambda o: o["name"])
def test_any_older_checkpoint_recovers_by_replaying_the_ledger(tmp_path, optimizer):
    """The run resumes from a checkpoint two generations behind the ledger (the newer ones lost): it replays
    the ledger's records instead of evaluating them again, and ends with the uninterrupted run's ledger."""
    import shutil

    def cfg(n):
        return run_config_from_dict(config(budget={"evaluations": n}, optimizer=optimizer,
                                           fitness={"kind": "synthetic", "tasks": ["a", "b"]}))

    run_search(cfg(25), tmp_path / "ref")
    run_dir = tmp_path / "run"
    run_search(cfg(10), run_dir)
    old = tmp_path / "old-checkpoints"
    shutil.copytree(run_dir / "checkpoints", old)  # the checkpoints as they were at 10 evaluations
    resume(run_dir, budget={"evaluations": 20})
    timings = [r["timings"] for r in Ledger(run_dir / "ledger.jsonl")]
    shutil.rmtree(run_dir / "checkpoints")
    shutil.copytree(old, run_dir / "checkpoints")  # the newer checkpoints are gone
    resume(run_dir, budget={"evaluations": 25})
    assert stable(run_dir) == stable(tmp_path / "ref")
    assert [r["timings"] for r in Ledger(run_dir / "ledger.jsonl")][:20] == timings  # replayed, not redone
