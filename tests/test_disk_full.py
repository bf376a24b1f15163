"""A full disk mid-run or mid-export: one `error:` line, nothing half-written read back as valid, and the run
resumes to the uninterrupted ledger. The disk fills for real: the command runs under a file size limit
(RLIMIT_FSIZE), so a write past it is cut short and then fails, as on a full device."""

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evomerge.errors import EvomergeError
from evomerge.models.safetensors_io import LazyCheckpoint
from evomerge.run import run_config_from_dict, run_search
from evomerge.run.ledger import Ledger

JOB = {"name": "full", "seed": 3, "base": "/m/base", "models": ["/m/a", "/m/b", "/m/c"],
       "space": {"preset": "ties_layerwise", "num_layers": 4},
       "fitness": {"kind": "synthetic", "tasks": ["a", "b", "c"]}, "objectives": [{"metric": "mean"}],
       "optimizer": {"name": "cma", "population": 5}, "budget": {"evaluations": 20},
       "finalists": {"top": 0, "recommended": False}}


def _evomerge(args, cwd, max_file_bytes=None):
    def limit():
        if max_file_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    code = "import sys; from evomerge.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=300, preexec_fn=limit, env=dict(os.environ, PYTHONHASHSEED="0"))


def _stable(run_dir):
    return [{k: v for k, v in r.items() if k not in ("time", "timings")} for r in Ledger(Path(run_dir) / "ledger.jsonl")]


def _one_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "━" not in ln]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("limit, what", [(30_000, "ledger"), (20_000, "checkpoint")])
def test_a_full_disk_mid_run_stops_cleanly_and_the_run_resumes(tmp_path, limit, what):
    run_search(run_config_from_dict(JOB), tmp_path / "ref")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(JOB))
    line = _one_error(_evomerge(["run", "job.yaml"], tmp_path, max_file_bytes=limit))
    assert f"cannot write {what}" in line and "no space left" in line and "evomerge resume" in line
    run_dir = tmp_path / "runs" / "full"
    ledger = (run_dir / "ledger.jsonl").read_bytes()
    assert ledger.endswith(b"\n") and len(ledger) <= limit  # whole records only: the torn one was cut off
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]  # no temp file left behind
    assert 0 < len(Ledger(run_dir / "ledger.jsonl")) < 20
    res = _evomerge(["resume", str(run_dir)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert _stable(run_dir) == _stable(tmp_path / "ref")


def test_a_full_disk_mid_export_leaves_no_model_behind(ci_zoo, tmp_path):
    recipe = {"method": "linear", "models": [{"model": str(ci_zoo / "add")}, {"model": str(ci_zoo / "sort")}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    model_bytes = sum(p.stat().st_size for p in (ci_zoo / "add").glob("*.safetensors"))
    line = _one_error(_evomerge(["merge", "r.yaml", "out"], tmp_path, max_file_bytes=model_bytes // 2))
    assert "cannot write export shard" in line and "no space left" in line and "incomplete" in line
    out = tmp_path / "out"
    assert not (out / "model.safetensors.index.json").exists() and not list(out.glob("*.safetensors"))
    with pytest.raises(EvomergeError):  # what is left is never read as a model
        LazyCheckpoint(str(out))
    out.rename(tmp_path / "broken")
    assert _evomerge(["merge", "r.yaml", "out"], tmp_path).returncode == 0  # with space, the same merge works
