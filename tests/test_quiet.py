"""Quiet by default: a run, an export and a merge print only evomerge's own lines (no third-party warnings, no
tqdm bars of lm-eval or transformers); ``-v`` lets the warnings through."""

import os
import subprocess
import sys

import yaml

JOB = {"name": "quiet", "base": "zoo://ci/base", "models": ["zoo://ci/add", "zoo://ci/sort"],
       "space": {"preset": "ties_layerwise"},
       "fitness": {"kind": "lm_eval", "tasks": ["zoo_add"], "include_path": ["zoo"], "estimator": "subset_mean",
                   "anchors": "random", "items_per_task": 6, "test_tasks": ["zoo_add_test"],
                   "gen_kwargs": {"max_gen_toks": 5}},
       "objectives": [{"metric": "mean"}], "optimizer": {"name": "cma", "population": 2, "warm_start": "none"},
       "budget": {"evaluations": 2}, "finalists": {"top": 0, "recommended": False}}
# a third-party module that warns while a command runs, as transformers' deprecations do mid-run
NOISY = """
import warnings
import evomerge.cli

def noisy(fn):
    def call(*args, **kwargs):
        warnings.warn("past_key_values is deprecated", FutureWarning)
        return fn(*args, **kwargs)
    return call

setup = evomerge.cli.cli.callback

def callback(*args, **kwargs):  # once the CLI has set itself up, as a library imported by a verb would be
    setup(*args, **kwargs)
    import evomerge.merge.export
    import evomerge.run.loop

    evomerge.run.loop._search = noisy(evomerge.run.loop._search)
    evomerge.merge.export.export_recipe = noisy(evomerge.merge.export.export_recipe)

evomerge.cli.cli.callback = callback
"""


def _evomerge(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(cwd))
    code = "import sys, noisy_dep; from evomerge.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def _foreign(stderr: str) -> list[str]:
    ours = ("gen ", "error:", "re-evaluating", "merging")
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.lstrip().startswith(ours) and "━" not in ln]


def test_run_export_and_merge_print_only_our_lines(ci_zoo, tmp_path):
    (tmp_path / "noisy_dep.py").write_text(NOISY)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(JOB))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"method": "linear", "models": [{"model": "zoo://ci/add"},
                                                                                    {"model": "zoo://ci/sort"}]}))
    for args in (["run", "job.yaml"], ["export", "runs/quiet", "out", "--materialize"], ["merge", "r.yaml", "m"]):
        res = _evomerge(args, tmp_path)
        assert res.returncode == 0, res.stderr
        assert not _foreign(res.stderr), (args, res.stderr)
    loud = _evomerge(["-v", "merge", "r.yaml", "m2"], tmp_path)
    assert "FutureWarning" in loud.stderr or "past_key_values" in loud.stderr
