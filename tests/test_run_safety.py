"""Resuming a run directory someone sent you runs none of their code; interrupted writes leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from evomerge.cli import cli
from evomerge.errors import EvomergeError
from evomerge.run import run_config_from_dict, run_search
from evomerge.run.checkpoint import dumps, load_latest_checkpoint
from evomerge.safe_pickle import safe_loads

CFG = {"name": "safety", "seed": 1, "base": "/m/base", "models": ["/m/a", "/m/b"],
       "space": {"preset": "ties_layerwise", "num_layers": 4}, "fitness": {"kind": "synthetic"},
       "objectives": [{"metric": "mean"}], "optimizer": {"name": "cma", "population": 4},
       "budget": {"evaluations": 8}}


class _RunsCode:
    """A pickle that calls a function on load (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tamper(ckpt: Path, data: bytes) -> None:
    """Write a checkpoint file and a matching checksum, as an attacker would."""
    ckpt.write_bytes(data)
    ckpt.with_suffix(".sha256").write_text(hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("where", ["legacy_pkl_file", "optimizer_blob", "pickle_named_npz"])
def test_a_tampered_checkpoint_is_refused_without_running_code(where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = run_search(run_config_from_dict(CFG), tmp_path / "run")
    marker = tmp_path / "pwned"
    folder = run_dir / "checkpoints"
    step, state = load_latest_checkpoint(folder)
    if where == "legacy_pkl_file":  # a newer checkpoint in the pickle format of earlier versions
        state["extra"] = _RunsCode(marker)
        _tamper(folder / f"ckpt-{step + 1:06d}.pkl", pickle.dumps(state))
    elif where == "optimizer_blob":  # pycma's state is the one pickle inside the data file
        state["optimizer"]["blob"] = pickle.dumps((_RunsCode(marker), []))
        _tamper(folder / f"ckpt-{step:06d}.npz", dumps(state))
    else:  # a pickle where the data file should be: numpy refuses it (allow_pickle=False)
        state["extra"] = _RunsCode(marker)
        _tamper(folder / f"ckpt-{step:06d}.npz", pickle.dumps(state))
    res = CliRunner().invoke(cli, ["resume", str(run_dir), "--evaluations", "12"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ")
    if where == "pickle_named_npz":
        assert "is not an .npz archive" in lines[0], lines[0]
    else:
        assert "posix.system" in lines[0] and "allow-list" in lines[0], lines[0]
    assert not marker.exists()


@pytest.mark.parametrize("optimizer", [{"name": "optuna", "population": 4, "options": {"sampler": "tpe"}},
                                       {"name": "optuna", "population": 4, "options": {"sampler": "nsga2"}},
                                       {"name": "random", "population": 4}])
def test_plain_state_checkpoints_hold_no_pickle(optimizer, tmp_path):
    """optuna and random search checkpoint as JSON + numpy arrays: nothing in the file is a pickle."""
    import io
    import json

    import numpy as np

    run_dir = run_search(run_config_from_dict({**CFG, "optimizer": optimizer}), tmp_path / "run")
    files = sorted((run_dir / "checkpoints").glob("ckpt-*"))
    assert files and not [p for p in files if p.suffix not in (".npz", ".sha256")]
    for path in (p for p in files if p.suffix == ".npz"):
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        text = arrays.pop("__state__").tobytes().decode()
        state = json.loads(text)
        assert "__bytes__" not in text and "blob" not in state["optimizer"]
        assert all(a.dtype != object and not a.tobytes().startswith(b"\x80") for a in arrays.values())
        assert state["optimizer"]["n_told"] > 0


def test_safe_loads_takes_optimizer_states_and_refuses_builtins():
    import numpy as np

    rs = np.random.RandomState(3)
    state = {"a": np.arange(3), "rs": rs, "randn": rs.randn, "t": (1, 2.5, "x")}
    back = safe_loads(pickle.dumps(state))
    assert back["randn"].__self__ is back["rs"] and back["t"] == (1, 2.5, "x")
    for evil in (eval, exec, getattr(os, "system"), __import__):
        with pytest.raises(EvomergeError, match="allow-list"):
            safe_loads(pickle.dumps(evil))

    class Reach:  # getattr may only reach the sampling methods of a numpy generator
        def __reduce__(self):
            return (getattr, (rs, "__setstate__"))

    with pytest.raises(EvomergeError, match="refusing getattr"):
        safe_loads(pickle.dumps(Reach()))


def test_resume_removes_stale_temp_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = run_search(run_config_from_dict(CFG), tmp_path / "run")
    dead_pid = 2 ** 22 + 12345  # above pid_max: no such process
    stale = [run_dir / "checkpoints" / f".ckpt-000002.npz.tmp-{dead_pid}", run_dir / f".config.yaml.tmp-{dead_pid}"]
    for p in stale:
        p.write_bytes(b"half a write")
    res = CliRunner().invoke(cli, ["resume", str(run_dir), "--evaluations", "12"])
    assert res.exit_code == 0, res.output
    assert not any(p.exists() for p in stale)
    assert not list(run_dir.rglob("*.tmp-*"))


def test_run_name_stays_under_the_run_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({**CFG, "name": "ok.name-1"}))
    res = CliRunner().invoke(cli, ["run", "job.yaml"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "ok.name-1" / "ledger.jsonl").exists()


def test_library_classes_that_run_commands_are_not_allowed():
    """Allowed modules are listed one by one: nevergrad's CommandFunction (runs a command when called) is not."""
    from nevergrad.parametrization.utils import CommandFunction

    with pytest.raises(EvomergeError, match="CommandFunction, which is not on the allow-list"):
        safe_loads(pickle.dumps(CommandFunction(["true"])))


@pytest.mark.parametrize("optimizer", [{"name": "cma", "population": 4},
                                       {"name": "optuna", "population": 4, "options": {"sampler": "tpe"}}])
def test_pickle_checkpoints_of_earlier_versions_still_resume(optimizer, tmp_path):
    """A run dir whose checkpoints are ``ckpt-N.pkl`` (the whole state pickled, optuna's study too) resumes
    through the allow-list and ends with the uninterrupted run's ledger."""
    from evomerge.optim import make_optimizer
    from evomerge.run import resume
    from evomerge.run.ledger import Ledger
    from evomerge.spaces import build_space

    cfg = {**CFG, "optimizer": optimizer, "budget": {"evaluations": 12}}
    ref = run_search(run_config_from_dict(cfg), tmp_path / "ref")
    run_dir = run_search(run_config_from_dict({**cfg, "budget": {"evaluations": 8}}), tmp_path / "old")
    folder = run_dir / "checkpoints"
    step, state = load_latest_checkpoint(folder)
    if optimizer["name"] == "optuna":  # the format before: the optuna Study object, pickled
        rc = run_config_from_dict(cfg)
        opt = make_optimizer("optuna", build_space(rc.space, base=rc.base, models=rc.models), rc.directions,
                             seed=rc.seed, population=4, options=optimizer["options"])
        opt.load_state_dict(state["optimizer"])
        state["optimizer"] = {"blob": pickle.dumps((opt._study, opt._pending)), "n_told": opt.n_told}
    for p in folder.iterdir():
        p.unlink()
    _tamper(folder / f"ckpt-{step:06d}.pkl", pickle.dumps(state))
    resume(run_dir, budget={"evaluations": 12})
    strip = lambda d: [{k: v for k, v in r.items() if k not in ("time", "timings")}  # noqa: E731
                       for r in Ledger(d / "ledger.jsonl")]
    assert strip(run_dir) == strip(ref)
    assert sorted(p.suffix for p in folder.glob("ckpt-*") if p.suffix != ".sha256") == [".npz", ".pkl"]
