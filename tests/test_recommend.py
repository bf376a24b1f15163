"""The optimizer's recommendation (``run/recommend.py``): after the budget, its own estimate of the best point is
evaluated once, recorded (origin ``recommended``, never told), and competes in the finalists; resume reuses it."""

import json

import numpy as np
import pytest

from evomerge.run import resume, run_config_from_dict, run_search
from evomerge.run.checkpoint import load_latest_checkpoint
from evomerge.run.validate import validate_run
from evomerge.run.report import FINALISTS_FILE as FILE
from evomerge.run.ledger import Ledger
from evomerge.run.report import RunReport

from tests.test_online_bank import search_cfg
from tests.test_run_resume import killed_run_matches_uninterrupted


def cfg_with(**over):
    cfg = search_cfg()
    cfg["finalists"] = {"top": 3, "items_per_task": 10}
    cfg.update(over)
    return cfg


def restored_optimizer(run_dir):
    cfg = RunReport.load(run_dir).config
    _, opt, _ = validate_run(cfg)
    opt.load_state_dict(load_latest_checkpoint(run_dir / "checkpoints")[1]["optimizer"])
    return opt


def test_cma_mean_is_evaluated_after_the_budget_recorded_and_a_finalist(tmp_path):
    run_dir = tmp_path / "r"
    run_search(run_config_from_dict(cfg_with()), run_dir)
    records = Ledger(run_dir / "ledger.jsonl").records()
    assert len(records) == 17
    rec = records[-1]
    assert rec["origin"] == "recommended" and rec["status"] == "ok" and rec["gen"] == 4
    assert not any(r.get("origin") == "recommended" for r in records[:-1])
    opt = restored_optimizer(run_dir)
    assert opt.n_told == 16  # never told
    assert rec["point"] == pytest.approx(opt.recommend())
    es = opt._es  # the point is CMA-ES's distribution mean, not one it sampled
    assert np.allclose(opt.space.to_unit(rec["point"]), np.clip(es.result.xfavorite, 0, 1))
    assert all(r["point"] != rec["point"] for r in records[:-1])
    data = json.loads((run_dir / FILE).read_text())
    assert str(rec["eval_id"]) in data["finalists"] and len(data["finalists"]) in (3, 4)
    assert RunReport.load(run_dir).finalists()  # the saved step matches the ledger


def test_off_when_disabled_or_without_finalists(tmp_path):
    off = cfg_with(finalists={"top": 3, "items_per_task": 10, "recommended": False})
    run_search(run_config_from_dict(off), tmp_path / "off")
    assert len(Ledger(tmp_path / "off" / "ledger.jsonl").records()) == 16
    run_search(run_config_from_dict(cfg_with(finalists={"top": 0})), tmp_path / "top0")
    assert len(Ledger(tmp_path / "top0" / "ledger.jsonl").records()) == 16
    random = cfg_with(optimizer={"name": "random", "population": 4})  # no recommendation of its own
    run_search(run_config_from_dict(random), tmp_path / "random")
    assert len(Ledger(tmp_path / "random" / "ledger.jsonl").records()) == 16


def test_resume_reuses_a_written_recommendation_and_redoes_a_lost_one(tmp_path):
    run_dir = tmp_path / "r"
    run_search(run_config_from_dict(cfg_with()), run_dir)
    ledger = run_dir / "ledger.jsonl"
    full = Ledger(ledger).records()
    finalists = json.loads((run_dir / FILE).read_text())
    strip = ("time", "timings")
    (run_dir / FILE).unlink()  # killed after the recommendation was written, before the finalists were saved
    resume(run_dir)
    assert Ledger(ledger).records() == full
    assert json.loads((run_dir / FILE).read_text()) == finalists
    lines = ledger.read_text().splitlines(keepends=True)
    ledger.write_text("".join(lines[:-1]))  # killed while evaluating it
    (run_dir / FILE).unlink()
    resume(run_dir)
    again = Ledger(ledger).records()
    assert [{k: v for k, v in r.items() if k not in strip} for r in again] == \
        [{k: v for k, v in r.items() if k not in strip} for r in full]
    assert json.loads((run_dir / FILE).read_text()) == finalists


def test_steady_state_schedule_takes_it_too(tmp_path, monkeypatch):
    """nevergrad recommends the best candidate it saw (already in the ledger: nothing to evaluate); a point of
    its own is evaluated, and a resume's replay skips it (it was never told)."""
    from evomerge.optim.nevergrad_opt import Nevergrad

    cfg = cfg_with(optimizer={"name": "nevergrad", "population": 4, "options": {"name": "CMA"}})
    run_search(run_config_from_dict(cfg), tmp_path / "best")
    assert len(Ledger(tmp_path / "best" / "ledger.jsonl").records()) == 16
    monkeypatch.setattr(Nevergrad, "_recommend", lambda self: self.space.from_unit(np.full(self.space.size(), 0.5)))
    run_search(run_config_from_dict(cfg), tmp_path / "own")
    records = Ledger(tmp_path / "own" / "ledger.jsonl").records()
    assert len(records) == 17 and records[-1]["origin"] == "recommended" and "n_asked" not in records[-1]
    (tmp_path / "own" / FILE).unlink()
    resume(tmp_path / "own")
    assert Ledger(tmp_path / "own" / "ledger.jsonl").records() == records


def test_sigkill_around_the_final_step_then_resume_gives_the_uninterrupted_ledger(tmp_path):
    cfg = cfg_with()
    cfg["fitness"]["sleep_s"] = 0.03
    ref = killed_run_matches_uninterrupted(cfg, tmp_path, targets=(6, 16, 17), wait_s=240, timeout=600)
    assert ref[-1]["origin"] == "recommended"
