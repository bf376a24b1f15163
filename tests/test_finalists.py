"""Finalists: after the budget, the top candidates answer fresh search items none of them answered, and the
winner is the best on told + fresh items pooled; saved once, redone when the settings or the top change."""

import json

import pytest
import yaml

from evomerge.execution.synthetic_irt import SyntheticIRTConfig, SyntheticIRTWorker
from evomerge.fitness.online.request import FitnessRequest, answer_request
from evomerge.recipe import recipe_from_dict
from evomerge.run import resume, run_config_from_dict, run_search
from evomerge.run.finalists import pooled
from evomerge.run.report import FINALISTS_FILE as FILE
from evomerge.run.ledger import Ledger
from evomerge.run.report import RunReport

from tests.test_online_bank import search_cfg


def test_pooled_weights_told_and_fresh_by_their_item_counts():
    out = pooled({"a": 0.9, "b": 0.5}, {"a": 100, "b": 20}, {"a": 0.6, "b": 0.5}, {"a": 200, "b": 80})
    assert out["a"] == pytest.approx((100 * 0.9 + 200 * 0.6) / 300)
    assert out["b"] == pytest.approx(0.5)
    assert out["mean"] == pytest.approx((out["a"] + out["b"]) / 2)


def test_a_seed_request_with_exclude_draws_only_other_items():
    all_items = {"a": list(range(30)), "b": list(range(30))}
    req = FitnessRequest(pool_per_task=10, seed=1, exclude={"a": list(range(25)), "b": [0, 1]})
    seen = {}
    vals, answers, fid = answer_request(req, lambda items: seen.update(items) or
                                        {t: {i: 1.0 for i in v} for t, v in items.items()}, lambda: all_items)
    assert sorted(answers["a"]) == [25, 26, 27, 28, 29]  # only 5 left: all of them
    assert len(answers["b"]) == 10 and not {0, 1} & set(answers["b"])
    assert fid["items"] == 15 and vals == {"a": 1.0, "b": 1.0}


def test_finalists_answer_fresh_items_and_name_the_winner(tmp_path):
    cfg = search_cfg()
    cfg["finalists"] = {"top": 3, "items_per_task": 10}
    run_dir = tmp_path / "r"
    run_search(run_config_from_dict(cfg), run_dir)
    data = json.loads((run_dir / FILE).read_text())
    report = RunReport.load(run_dir)
    rec = report.records[-1]  # the optimizer's recommendation (run/recommend.py), evaluated after the budget
    assert len(report.records) == 17 and rec["origin"] == "recommended" and rec["status"] == "ok"
    top = report.ranked()[:3] + ([rec] if rec not in report.ranked()[:3] else [])
    assert data["settings"]["candidates"] == [r["eval_id"] for r in top]
    answered = {t: {i for r in top for i in r["item_results"][t]} for t in ("a", "b", "c")}
    worker = SyntheticIRTWorker(SyntheticIRTConfig.model_validate(cfg["fitness"]), cfg["models"], cfg["base"])
    drawn = None
    for r in top:
        row = data["finalists"][str(r["eval_id"])]
        assert row["status"] == "ok" and row["fresh_items"] == {"a": 10, "b": 10, "c": 10}
        ids = {t: sorted(int(i) for i in v) for t, v in row["item_results"].items()}
        assert drawn in (None, ids)  # the same fresh items for every finalist
        drawn = ids
        assert all(not set(map(str, ids[t])) & answered[t] for t in ids)  # none answered before
        truth = worker.answers(recipe_from_dict(r["recipe"]), ids)
        assert row["fresh"]["a"] == pytest.approx(sum(truth["a"].values()) / 10)
        n = len(r["item_results"]["a"])
        assert row["metrics"]["a"] == pytest.approx((n * r["metrics"]["a"] + 10 * row["fresh"]["a"]) / (n + 10))
    best = report.best()
    assert best["finalist"]["value"] == max(v["value"] for v in data["finalists"].values())
    items = sum(len(v) for r in report.records for v in r["item_results"].values())
    assert report.items_evaluated() == {"candidates": items, "finalists": len(top) * 3 * 10}
    # a finished run resumed with the same settings does not redo the step; with others it does
    mtime = (run_dir / FILE).stat().st_mtime_ns
    resume(run_dir)
    assert (run_dir / FILE).stat().st_mtime_ns == mtime
    cfg_file = run_dir / "config.yaml"
    stored = yaml.safe_load(cfg_file.read_text())
    stored["finalists"]["top"] = 2
    cfg_file.write_text(yaml.safe_dump(stored))
    resume(run_dir)
    assert len(json.loads((run_dir / FILE).read_text())["finalists"]) == len(top) - 1
    assert len(Ledger(run_dir / "ledger.jsonl").records()) == 17  # the finalists are not candidates


def test_no_finalists_when_off_or_when_the_fitness_reads_the_whole_split(tmp_path):
    cfg = search_cfg()
    cfg["finalists"] = {"top": 0}
    run_search(run_config_from_dict(cfg), tmp_path / "off")
    assert not (tmp_path / "off" / FILE).exists()
    report = RunReport.load(tmp_path / "off")
    assert report.best()["eval_id"] == report.ranked()[0]["eval_id"] and "finalist" not in report.best()
    whole = search_cfg(bank="full")
    run_search(run_config_from_dict(whole), tmp_path / "whole")
    assert not (tmp_path / "whole" / FILE).exists()


def test_a_stale_or_broken_finalists_file_is_ignored(tmp_path):
    run_dir = tmp_path / "r"
    cfg = search_cfg()
    cfg["finalists"] = {"top": 2, "items_per_task": 5}
    run_search(run_config_from_dict(cfg), run_dir)
    report = RunReport.load(run_dir)
    assert report.finalists()
    data = json.loads((run_dir / FILE).read_text())
    data["settings"]["candidates"] = [999, 998]  # not the ledger's top any more
    (run_dir / FILE).write_text(json.dumps(data))
    assert RunReport.load(run_dir).finalists() == {}
    assert RunReport.load(run_dir).best()["eval_id"] == report.ranked()[0]["eval_id"]
    (run_dir / FILE).write_text("{not json")
    assert RunReport.load(run_dir).finalists() == {}
    resume(run_dir)  # redone
    assert RunReport.load(run_dir).finalists()
