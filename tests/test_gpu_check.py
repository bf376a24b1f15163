"""The GPU acceptance script cannot rot between runs on a GPU: its CPU dry run (``--device cpu --small``) runs
every step here and fails on any step that fails."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_cpu(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--small",
                          "--root", str(tmp_path), "--out", str(tmp_path / "rows.json")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    steps = {r["step"] for r in rows}
    assert {"versions", "merge", "plan", "scored == exported", "two GPUs", "zoo search", "hf vs vllm"} <= steps
    assert not [r for r in rows if r["metric"] == "FAILED" or r["ok"] is False], rows
    assert "| step | metric | value | target | met |" in res.stdout
