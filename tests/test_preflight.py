"""``preflight`` as a function (what ``evomerge check`` and ``plan`` call) and its no-compute promise."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from evomerge.cli import cli
from evomerge.run import run_config_from_dict
from evomerge.run.preflight import PreflightReport, preflight

LM = {"kind": "lm_eval", "tasks": ["zoo_add"], "test_tasks": ["zoo_add_test"], "include_path": ["zoo"],
      "estimator": "full", "population": 0}


def job(**kw):
    return {"name": "pf", "base": "zoo://ci/base", "models": ["zoo://ci/add", "zoo://ci/sort"],
            "space": {"preset": "ties_layerwise"}, "fitness": LM, "objectives": [{"metric": "mean"}],
            "optimizer": {"name": "random", "population": 2}, "budget": {"evaluations": 2}, **kw}


def test_preflight_reports_every_check_and_writes_nothing(ci_zoo, tmp_path):
    rep = preflight(run_config_from_dict(job()), tmp_path / "run")
    assert isinstance(rep, PreflightReport) and rep.space.size() > 0 and rep.optimizer is not None
    text = "\n".join(rep.checks)
    assert "tasks: 2 found" in text and "models: 3 folders" in text and "run dir:" in text
    assert not (tmp_path / "run").exists()


def test_check_does_not_build_a_missing_zoo(tmp_path, monkeypatch):
    """Building the zoo is compute: check says the run will build it, and builds nothing."""
    monkeypatch.setenv("EVOMERGE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job()))
    res = CliRunner().invoke(cli, ["check", "job.yaml"])
    assert res.exit_code == 0, res.output
    assert "zoo ci: not built yet; the run builds it first" in res.output
    assert not (tmp_path / "home" / "zoo").exists() and not (tmp_path / "runs").exists()


def test_per_item_metric_is_checked_against_the_local_task_yamls(ci_zoo, tmp_path, monkeypatch):
    """A metric the search (or test) tasks do not report, or ``p_gold`` on a generation task, is one error line
    from ``evomerge run`` before the run folder exists; ``p_gold`` on the loglikelihood twins passes."""
    monkeypatch.chdir(tmp_path)
    soft = {**LM, "tasks": ["zoo_add_ll"], "estimator": "subset_mean", "anchors": "random", "items_per_task": 5}
    cases = [({**LM, "estimator": "subset_mean", "anchors": "random", "metric": "p_gold"},
              "error: metric p_gold needs a loglikelihood or multiple_choice task; 'zoo_add' is generate_until"),
             ({**LM, "metric": "acc"}, "error: task 'zoo_add' reports no metric 'acc' (has: exact_match"),
             ({**soft, "metric": "p_gold", "test_metric": "acc"}, "error: task 'zoo_add_test' reports no metric 'acc'")]
    for k, (fitness, want) in enumerate(cases):
        (tmp_path / f"job{k}.yaml").write_text(yaml.safe_dump(job(fitness=fitness)))
        res = CliRunner().invoke(cli, ["run", f"job{k}.yaml", "--run-dir", f"run{k}"])
        assert res.exit_code != 0 and want in res.output and "Traceback" not in res.output, res.output
        assert not (tmp_path / f"run{k}").exists()
    rep = preflight(run_config_from_dict(job(fitness={**soft, "metric": "p_gold"})), None)
    assert "tasks: 2 found" in "\n".join(rep.checks)
