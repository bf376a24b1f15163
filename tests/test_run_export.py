"""Status, plots and export: exported recipe / mergekit YAML re-merge to the exported weights."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from evomerge.errors import EvomergeError
from evomerge.merge import InMemoryMerger, from_mergekit_yaml
from evomerge.recipe import recipe_from_yaml
from evomerge.run import run_config_from_dict, run_search
from evomerge.run.export import export_run
from evomerge.run.plots import write_plots
from evomerge.run.report import RunReport


def _cfg(zoo, **kw):
    cfg = {
        "name": "export-test", "seed": 0, "base": str(zoo / "base"),
        "models": [str(zoo / s) for s in ("add", "reverse", "sort")],
        "space": {"preset": "ties_layerwise"},
        "fitness": {"kind": "synthetic", "tasks": ["a", "b", "c"]},
        "objectives": [{"metric": "a"}, {"metric": "b"}],
        "optimizer": {"name": "optuna", "population": 6, "options": {"sampler": "nsga2"}},
        "budget": {"generations": 3},
    }
    cfg.update(kw)
    return run_config_from_dict(cfg)


@pytest.fixture(scope="module")
def run_dir(ci_zoo, tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    run_search(_cfg(ci_zoo), d)
    return d


def _weights(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_export_pareto_materialized_round_trips(run_dir, tmp_path, ci_zoo):
    rows = export_run(run_dir, tmp_path / "out", which="pareto", materialize=True)
    rep = RunReport.load(run_dir)
    assert {r["eval_id"] for r in rows} == {r["eval_id"] for r in rep.front()}
    assert len(rows) >= 2  # two conflicting objectives
    merger = InMemoryMerger([str(ci_zoo / s) for s in ("base", "add", "reverse", "sort")])
    for row in rows:
        folder = tmp_path / "out" / row["name"]
        recipe = recipe_from_yaml(folder / "recipe.yaml")
        exported = _weights(folder / "model")
        again = merger.merge_state_dict(recipe)
        via_mergekit = merger.merge_state_dict(from_mergekit_yaml((folder / "mergekit.yaml").read_text()))
        for name, t in exported.items():
            torch.testing.assert_close(again[name], t, rtol=0, atol=1e-6)
            torch.testing.assert_close(via_mergekit[name], t, rtol=0, atol=1e-6)
        # test-split scores were computed (synthetic test split differs from search)
        assert set(row["test"]) == {"a", "b", "c", "mean"} and row["test"] != row["search"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["eval_id"] for s in summary] == [r["eval_id"] for r in rows]
    assert "a search | a test" in (tmp_path / "out" / "summary.md").read_text()
    assert RunReport.load(run_dir).test_scores().keys() >= {r["eval_id"] for r in rows}


def test_export_best_and_refuses_non_empty_out(run_dir, tmp_path):
    rows = export_run(run_dir, tmp_path / "best", which="best")
    assert len(rows) == 1 and rows[0]["eval_id"] == RunReport.load(run_dir).best()["eval_id"]
    assert not (tmp_path / "best" / rows[0]["name"] / "model").exists()
    with pytest.raises(EvomergeError, match="not empty"):
        export_run(run_dir, tmp_path / "best", which="best")


def test_report_and_plots(run_dir, tmp_path):
    rep = RunReport.load(run_dir)
    gens = rep.per_generation()
    assert [g["gen"] for g in gens] == [0, 1, 2] and rep.generations_done == 3
    hv = [g["hypervolume"] for g in gens]
    assert hv == sorted(hv) and hv[-1] > 0  # hypervolume of the growing set never shrinks
    paths = write_plots(rep, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["pareto.png", "progress.png"]
    assert all(p.stat().st_size > 5000 for p in paths)


def test_status_cli(run_dir):
    # only this package's verbs: loading every verb module (zoo training code...) costs seconds per spawn
    code = "import sys; import evomerge.run.cli; from evomerge.cli import cli; cli.main(sys.argv[1:], prog_name='evomerge')"
    proc = subprocess.run([sys.executable, "-c", code, "status", str(run_dir), "--top", "3"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "18 evaluations" in proc.stdout and "hypervolume" in proc.stdout
    assert (run_dir / "plots" / "progress.png").exists()
