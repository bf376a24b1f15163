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
from evomerge.run.checkpoint import load_latest_checkpoint
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


def _tamper(ckpt: Path, state) -> None:
    """Replace a checkpoint and fix its checksum, as an attacker would."""
    data = pickle.dumps(state)
    ckpt.write_bytes(data)
    ckpt.with_suffix(".sha256").write_text(hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("where", ["file", "optimizer_blob"])
def test_a_tampered_checkpoint_is_refused_without_running_code(where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = run_search(run_config_from_dict(CFG), tmp_path / "run")
    marker = tmp_path / "pwned"
    ckpt = sorted((run_dir / "checkpoints").glob("ckpt-*.pkl"))[-1]
    state = load_latest_checkpoint(run_dir / "checkpoints")[1]
    if where == "file":
        state["extra"] = _RunsCode(marker)
    else:
        state["optimizer"]["blob"] = pickle.dumps((_RunsCode(marker), []))
    _tamper(ckpt, state)
    res = CliRunner().invoke(cli, ["resume", str(run_dir), "--evaluations", "12"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and "posix.system" in lines[0] and "allow-list" in lines[0]
    assert not marker.exists()


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
    stale = [run_dir / "checkpoints" / f".ckpt-000002.pkl.tmp-{dead_pid}", run_dir / f".config.yaml.tmp-{dead_pid}"]
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
