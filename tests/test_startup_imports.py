"""Start-up stays light: the CLI module and the whole ``check`` path (config, space, optimizer, run dir, tasks
from the include path, model headers, memory plan) import no torch, transformers, lm-eval, scikit-learn or
pycma. Asserted on ``sys.modules`` in a fresh interpreter, not on timings (``benchmarks/startup.py`` times it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import yaml

HEAVY = ("torch", "transformers", "lm_eval", "sklearn", "cma", "scipy.stats", "matplotlib.pyplot")


def _run(code: str, cwd, env_home: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EVOMERGE_HOME=env_home)
    check = textwrap.dedent(f"""
        import sys
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        assert not heavy, f"imported: {{heavy}}"
        print("LIGHT")
    """)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code) + check], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_import_and_help_are_light(tmp_path):
    res = _run("""
        import evomerge.cli
        from evomerge.cli import _Group, cli
        try:
            cli.main(["--help"], prog_name="evomerge")
        except SystemExit:
            pass
    """, tmp_path, os.environ["EVOMERGE_HOME"])
    assert res.returncode == 0 and "LIGHT" in res.stdout, res.stderr[-2000:]


def test_check_path_is_light(ci_zoo, tmp_path):
    job = {"name": "light", "base": str(ci_zoo / "base"), "models": [str(ci_zoo / n) for n in ("add", "sort")],
           "space": {"preset": "ties_layerwise"}, "objectives": [{"metric": "mean"}],
           "fitness": {"kind": "lm_eval", "tasks": ["zoo_add", "zoo_sort"], "include_path": ["zoo"],
                       "test_tasks": ["zoo_add_test", "zoo_sort_test"], "estimator": "adaptive",
                       "anchors": "kmeans_correct"},
           "optimizer": {"name": "cma", "population": 4, "options": {"sigma0": 0.2}},
           "budget": {"evaluations": 8}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    res = _run("""
        from evomerge.cli import main
        try:
            main(["check", "job.yaml"])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
    """, tmp_path, os.environ["EVOMERGE_HOME"])
    assert res.returncode == 0 and "LIGHT" in res.stdout, (res.stdout[-2000:], res.stderr[-2000:])
    assert "tasks: 4 found in the include path" in res.stdout and "models: 3 folders" in res.stdout
