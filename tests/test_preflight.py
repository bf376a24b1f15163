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
