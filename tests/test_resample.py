"""``resample: generation``: each generation answers its own seeded item sample, shared by its candidates;
finalists are scored on items none of them answered; kill -9 + resume reproduces the ledger."""

import json

import pytest
from pydantic import ValidationError

from evomerge.execution.synthetic_irt import SyntheticIRTConfig
from evomerge.fitness.config import FitnessConfig
from evomerge.run import run_config_from_dict, run_search
from evomerge.run.ledger import Ledger

from tests.test_run_resume import killed_run_matches_uninterrupted


def search_cfg(optimizer=None, **fit):
    return {
        "name": "resample-test", "seed": 3, "base": "/m/base", "models": ["/m/a", "/m/b", "/m/c"],
        "space": {"preset": "ties_layerwise", "num_layers": 4},
        "fitness": {"kind": "synthetic_irt", "tasks": ["a", "b", "c"], "items_per_task": 60, "bank": "full",
                    "resample": "generation", "sample_per_task": 10, **fit},
        "objectives": [{"metric": "mean"}],
        "optimizer": optimizer or {"name": "cma", "population": 4},
        "budget": {"evaluations": 16},
        "finalists": {"top": 3, "items_per_task": 8},
    }


def _items(rec):
    return {t: sorted(int(i) for i in v) for t, v in rec["item_results"].items()}


def test_each_generation_shares_one_sample_and_generations_differ(tmp_path):
    run_search(run_config_from_dict(search_cfg()), tmp_path / "r")
    everything = Ledger(tmp_path / "r" / "ledger.jsonl").records()
    assert len(everything) == 17 and all(r["status"] == "ok" for r in everything)
    assert all(len(ids) == 10 for r in everything for ids in _items(r).values())
    recs, rec = everything[:16], everything[16]  # rec: the optimizer's recommendation, after the budget
    assert rec["origin"] == "recommended" and rec["gen"] == 4
    per_gen = {}
    for r in recs:
        per_gen.setdefault(r["gen"], []).append(_items(r))
    assert len(per_gen) == 4
    assert all(all(s == samples[0] for s in samples) for samples in per_gen.values())
    firsts = [samples[0] for samples in per_gen.values()]
    assert all(a != b for k, a in enumerate(firsts) for b in firsts[k + 1:])
    assert _items(rec) not in firsts  # the sample a fifth generation would answer
    # the told value is the accuracy on the generation's sample
    r = recs[5]
    assert r["metrics"]["a"] == pytest.approx(sum(r["item_results"]["a"].values()) / 10)
    # finalists: fresh items that none of them answered
    fin = json.loads((tmp_path / "r" / "finalists.json").read_text())["finalists"]
    assert len(fin) in (3, 4) and str(rec["eval_id"]) in fin
    answered = {t: set() for t in "abc"}
    for eid in fin:
        for t, ids in _items(everything[int(eid)]).items():
            answered[t].update(ids)
    for row in fin.values():
        assert row["status"] == "ok"
        assert all(len(v) == 8 and not answered[t] & {int(i) for i in v} for t, v in row["item_results"].items())


def test_samples_follow_the_fitness_seed_not_the_optimizer_seed(tmp_path):
    other_optimizer_seed = search_cfg() | {"seed": 4}
    for name, cfg in (("a", search_cfg()), ("b", other_optimizer_seed), ("c", search_cfg(seed=5))):
        run_search(run_config_from_dict(cfg), tmp_path / name)
    a, b, c = ([_items(r) for r in Ledger(tmp_path / n / "ledger.jsonl").records()] for n in "abc")
    assert [x["gen"] for x in Ledger(tmp_path / "a" / "ledger.jsonl").records()][::4] == [0, 1, 2, 3, 4]
    assert a[::4] == b[::4]  # generation k answers the same items whatever the optimizer's seed
    assert a[0] != c[0]  # another fitness seed, other items


def test_resample_needs_random_subset_fitness():
    with pytest.raises(ValidationError, match="subset_mean and anchors random"):
        FitnessConfig(tasks=["t"], estimator="adaptive", resample="generation")
    with pytest.raises(ValidationError, match="subset_mean and anchors random"):
        FitnessConfig(tasks=["t"], estimator="subset_mean", anchors="kmeans_correct", resample="generation")
    ok = FitnessConfig(tasks=["t"], estimator="subset_mean", anchors="random", items_per_task=50,
                       resample="generation")
    assert ok.generation_sample == 50 and FitnessConfig(tasks=["t"]).generation_sample is None
    with pytest.raises(ValidationError, match="bank: full"):
        SyntheticIRTConfig.model_validate(search_cfg(bank="online")["fitness"])


@pytest.mark.parametrize("optimizer", [{"name": "cma", "population": 4},
                                       {"name": "optuna", "population": 4, "options": {"sampler": "tpe"}}])
def test_sigkill_then_resume_gives_the_uninterrupted_ledger_with_resampling(tmp_path, optimizer):
    killed_run_matches_uninterrupted(search_cfg(optimizer, sleep_s=0.03), tmp_path, wait_s=240, timeout=600)
