"""End to end on real models: the demo pipeline on the CI zoo (slow: minutes on 2 CPU cores)."""

import json

import pytest

from evomerge.run.demo import baseline_recipes, demo_config, run_demo
from evomerge.run.ledger import Ledger


def test_demo_config_and_baselines_are_valid():
    from evomerge.merge.plan import validate_recipe

    cfg = demo_config("ci")
    assert all(m.startswith("zoo://ci/") for m in cfg.models) and cfg.base == "zoo://ci/base"
    fams = baseline_recipes(cfg)
    assert len(fams["parent"]) == 3 and len(fams["task_arithmetic"]) == len(fams["ties"]) == 6
    assert len(fams["average"]) == 1
    for fam in fams.values():
        for r in fam.values():
            validate_recipe(r)


@pytest.mark.slow
def test_demo_on_ci_zoo_runs_end_to_end(ci_zoo, tmp_path):
    res = run_demo(tmp_path / "demo", variant="ci")
    recs = Ledger(tmp_path / "demo" / "ledger.jsonl").records()
    searched = [r for r in recs if r.get("origin") != "recommended"]  # + CMA-ES's mean after the budget
    assert len(searched) == demo_config("ci").budget.evaluations and len(recs) <= len(searched) + 1
    assert all(set(r["item_results"]) == {"zoo_add", "zoo_reverse", "zoo_sort"} for r in recs if r["status"] == "ok")
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["rows"][-1]["model"].startswith("winner") and len(saved["rows"]) == 7
    assert set(saved["margin_vs"]) == {r["model"] for r in saved["rows"][:-1]}
    assert res["beats_all"] == all(m > 0 for m in res["margin_vs"].values())


def test_demo_run_dir_skips_a_folder_holding_another_run(tmp_path):
    from evomerge.run.demo import demo_run_dir

    preferred = tmp_path / "zoo_demo"
    assert demo_run_dir(preferred, "ci") == (preferred, [])  # nothing there yet
    preferred.mkdir()
    assert demo_run_dir(preferred, "ci")[0] == preferred  # a folder without a run is used
    (preferred / "config.yaml").write_text(demo_config("full").to_yaml())  # the other variant's run
    chosen, diff = demo_run_dir(preferred, "ci")
    assert chosen == tmp_path / "zoo_demo-2" and "base" in diff
    (chosen).mkdir()
    (chosen / "config.yaml").write_text(demo_config("ci").to_yaml())  # this demo's own run: resumed there
    assert demo_run_dir(preferred, "ci")[0] == chosen
    (chosen / "config.yaml").write_text("{not yaml")  # unreadable: skipped, never overwritten
    assert demo_run_dir(preferred, "ci")[0] == tmp_path / "zoo_demo-3"
