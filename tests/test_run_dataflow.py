"""Data-flow recipes through the whole run pipeline on the CI zoo: a staged PS -> DFS job (real lm-eval)."""

import pytest
import yaml
from transformers import AutoModelForCausalLM

from evomerge.errors import ConfigError
from evomerge.recipe import MergeRecipe, recipe_from_dict
from evomerge.recipe.dataflow import DataFlowRecipe
from evomerge.run.export import export_run
from evomerge.run.ledger import Ledger
from evomerge.run.staged import load_job, run_staged, staged_config_from_dict

ZOO = [f"zoo://ci/{n}" for n in ("add", "reverse", "sort")]
FITNESS = {"kind": "lm_eval", "tasks": ["zoo_add", "zoo_sort"], "include_path": ["zoo"], "estimator": "subset_mean",
           "anchors": "random", "items_per_task": 6, "population": 0, "batch_size": 6,
           "test_tasks": ["zoo_add_test", "zoo_sort_test"],
           "gen_kwargs": {"max_gen_toks": 5}}  # the CI zoo rarely stops by itself: cap answers (4 chars + stop)


def experiment(space, name):
    return {"name": name, "seed": 1, "base": "zoo://ci/base", "models": ZOO, "space": space, "fitness": FITNESS,
            "objectives": [{"metric": "mean"}, {"metric": "params_m", "direction": "minimize"}],
            "optimizer": {"name": "random", "population": 2}, "budget": {"evaluations": 2}}


def staged_job():
    dfs_space = {"preset": "dataflow_splice", "repeats": 1, "max_depth": 4,
                 "models": {"ps": {"best_of": "ps"}, "sort": "zoo://ci/sort"}}
    return staged_config_from_dict({"name": "ps-dfs", "stages": [
        {"name": "ps", "experiment": experiment({"preset": "ties_layerwise", "num_layers": 2}, "ps")},
        {"name": "dfs", "experiment": experiment(dfs_space, "dfs")}]})


def test_staged_ps_then_dfs_runs_exports_and_resumes(ci_zoo, tmp_path):
    job = staged_job()
    ps_dir, dfs_dir = run_staged(job, tmp_path / "job")
    ps = Ledger(ps_dir / "ledger.jsonl").records()
    dfs = Ledger(dfs_dir / "ledger.jsonl").records()
    assert len(ps) == len(dfs) == 2 and all(r["status"] == "ok" for r in ps + dfs)
    for r in dfs:
        recipe = recipe_from_dict(r["recipe"])
        assert isinstance(recipe, DataFlowRecipe) and isinstance(recipe.models["ps"], MergeRecipe)
        assert r["metrics"]["num_layers"] == len(recipe.steps()) and r["metrics"]["params_m"] > 0
    # the stage's own config holds the PS winner in full
    saved = yaml.safe_load((dfs_dir / "config.yaml").read_text())
    assert saved["space"]["models"]["ps"]["method"] == "ties"
    # running the job again continues (both budgets spent): nothing is evaluated twice
    run_staged(job, tmp_path / "job")
    assert len(Ledger(dfs_dir / "ledger.jsonl").records()) == 2
    rows = export_run(dfs_dir, tmp_path / "out", which="best", materialize=True)
    model = AutoModelForCausalLM.from_pretrained(rows[0]["dir"] + "/model")
    assert model.config.num_hidden_layers == rows[0]["search"]["num_layers"]
    assert 0.0 <= rows[0]["test"]["mean"] <= 1.0


def test_best_of_must_name_an_earlier_stage(ci_zoo, tmp_path):
    job = staged_job()
    job.stages.reverse()
    with pytest.raises(ConfigError, match="asks best_of 'ps', which is not an earlier stage"):
        run_staged(job, tmp_path / "job")


def test_shipped_staged_job_loads():
    job = load_job("zoo_ps_dfs")
    assert [s.name for s in job.stages] == ["ps", "dfs"]
