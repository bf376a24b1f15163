"""LMEvalEvaluator on the CI zoo: per-item results equal the zoo's direct greedy decode, subsets run only
their docs, weights swapped in place are picked up, bad input fails with one line."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from evomerge.errors import ConfigError, EvomergeError
from evomerge.fitness import Fitness, FitnessConfig, ItemBank, LMEvalEvaluator, fit_item_bank, select_anchors
from evomerge.resources import shipped_dir
from evomerge.zoo.data import load_split
from evomerge.zoo.decode import exact_match

ZOO_TASKS = str(shipped_dir("fitness") / "zoo")
N = 40


@pytest.fixture(scope="module")
def evaluator():
    return LMEvalEvaluator(["zoo_add", "zoo_sort"], include_path=ZOO_TASKS, batch_size=64)


@pytest.fixture(scope="module")
def models(ci_zoo):
    tok = AutoTokenizer.from_pretrained(str(ci_zoo / "base"))
    return {n: AutoModelForCausalLM.from_pretrained(str(ci_zoo / n)).eval() for n in ("base", "add", "sort")}, tok


def test_per_item_results_match_direct_greedy_decode(evaluator, models):
    ms, tok = models
    items = {"zoo_add": list(range(N)), "zoo_sort": list(range(N))}
    for name in ("add", "sort"):
        res = evaluator.evaluate(ms[name], tok, items)
        for task, skill in (("zoo_add", "add"), ("zoo_sort", "sort")):
            direct = exact_match(ms[name], tok, load_split(skill, "search")[:N])
            assert [res.scores[task][i] for i in range(N)] == [float(x) for x in direct], (name, task)
            assert res.metrics[task] == pytest.approx(sum(direct) / N)


def test_subset_runs_only_the_chosen_items(evaluator, models):
    ms, tok = models
    res = evaluator.evaluate(ms["add"], tok, {"zoo_add": [3, 17, 999]})
    assert list(res.scores) == ["zoo_add"] and sorted(res.scores["zoo_add"]) == [3, 17, 999]
    assert set(res.outputs["zoo_add"]) == {3, 17, 999}


def test_in_place_weight_swap_is_seen(evaluator, models):
    ms, tok = models
    model = AutoModelForCausalLM.from_pretrained(str(next(iter(ms.values())).name_or_path)).eval()
    items = {"zoo_add": list(range(N))}
    before = evaluator.evaluate(model, tok, items)
    with torch.no_grad():
        for p, q in zip(model.parameters(), ms["add"].parameters()):
            p.copy_(q)
    after = evaluator.evaluate(model, tok, items)
    assert after.scores == evaluator.evaluate(ms["add"], tok, items).scores
    assert before.outputs != after.outputs


def test_bad_input(evaluator, models):
    ms, tok = models
    with pytest.raises(EvomergeError, match="unknown lm-eval task"):
        LMEvalEvaluator(["zoo_nope"], include_path=ZOO_TASKS)
    with pytest.raises(EvomergeError, match="empty item subset"):
        evaluator.evaluate(ms["add"], tok, {"zoo_add": []})
    with pytest.raises(EvomergeError, match="empty item subset"):
        evaluator.evaluate(ms["add"], tok, {})
    with pytest.raises(EvomergeError, match="out of range"):
        evaluator.evaluate(ms["add"], tok, {"zoo_add": [10**6]})
    with pytest.raises(EvomergeError, match="does not run"):
        evaluator.evaluate(ms["add"], tok, {"zoo_reverse": [0]})
    with pytest.raises(ConfigError, match="unknown estimator"):
        Fitness.from_config({"tasks": ["zoo_add"], "include_path": ["zoo"], "estimator": "nope"})


def test_bank_from_another_task_set_is_refused(tmp_path, models):
    import numpy as np

    from evomerge.fitness import fit_item_bank

    pop = {f"m{j}": {"zoo_add": {i: float((i + j) % 2) for i in range(20)}} for j in range(4)}
    fit_item_bank(pop, ["zoo_add"], dim=1).save(tmp_path / "bank")
    assert isinstance(ItemBank.load(tmp_path / "bank").a, np.ndarray)
    fit = Fitness.from_config(FitnessConfig(tasks=["zoo_add", "zoo_sort"], include_path=["zoo"], estimator="pirt",
                                            bank=str(tmp_path / "bank")))
    with pytest.raises(EvomergeError, match="built for tasks"):
        fit.prepare()


def test_adaptive_fitness_runs_its_rounds_on_the_live_model(tmp_path, models):
    import numpy as np

    from evomerge.fitness import fit_item_bank

    rng = np.random.default_rng(0)
    pop = {f"m{j}": {t: {i: float(rng.random() < 0.3 + 0.05 * j) for i in range(60)} for t in ("zoo_add", "zoo_sort")}
           for j in range(8)}
    fit_item_bank(pop, ["zoo_add", "zoo_sort"], dim=2).save(tmp_path / "bank")
    fit = Fitness.from_config(FitnessConfig(tasks=["zoo_add", "zoo_sort"], include_path=["zoo"], estimator="adaptive",
                                            items_per_task=9, estimator_params={"rounds": 3},
                                            bank=str(tmp_path / "bank")))
    fit.prepare()
    assert all(len(v) == 4 for v in fit.anchors.items.values())  # round 1: 40% of 9
    calls = []
    real = fit.evaluator.evaluate
    fit.evaluator.evaluate = lambda m, t, items=None: calls.append(items) or real(m, t, items)
    ms, tok = models
    est, raw = fit.score(ms["add"], tok)
    assert [sorted(len(v) for v in c.values()) for c in calls] == [[4, 4], [3, 3], [2, 2]]
    assert all(len(raw.scores[t]) == 9 for t in ("zoo_add", "zoo_sort"))
    assert est == fit.estimator.estimate(raw.scores) and all(0 <= v <= 1 for v in est.values())


class _CountingEvaluator:
    """Stands in for lm-eval when only the bank-building logic is under test: seeded 0/1 answers."""

    task_names = ["zoo_add", "zoo_sort"]
    fingerprint = {"tasks": task_names}

    def __init__(self):
        self.calls = 0

    def evaluate(self, model, tokenizer, items=None):
        import numpy as np

        from evomerge.fitness import ItemResults

        self.calls += 1
        rng = np.random.default_rng(self.calls)
        return ItemResults.from_scores({t: {i: float(rng.random() < 0.5) for i in range(30)} for t in self.task_names})


class _NoMerge:
    def merge_into(self, recipe, model):
        pass


def test_bank_population_mixes_space_samples_and_is_built_once_by_concurrent_workers(tmp_path, ci_zoo):
    import threading

    from evomerge.fitness.population import space_samples
    from evomerge.recipe import MergeRecipe
    from evomerge.spaces import build_space

    zoo = [f"zoo://ci/{n}" for n in ("add", "sort")]
    space = build_space({"preset": "ties_layerwise"}, base="zoo://ci/base", models=zoo)
    samples = space_samples(space, 3, seed=0)
    assert len(samples) == 3 and all(isinstance(r, MergeRecipe) for r in samples)
    assert [r.model_dump() for r in samples] == [r.model_dump() for r in space_samples(space, 3, seed=0)]
    flow = build_space({"preset": "dataflow_splice"}, models=zoo)
    assert space_samples(flow, 3) == []  # data-flow candidates are not merges: random merges only

    cfg = FitnessConfig(tasks=["zoo_add", "zoo_sort"], include_path=["zoo"], population=4, irt_dim=2, bank="build",
                        cache_endpoints=False)
    fits = []
    for _ in range(3):
        fit = Fitness(cfg, _CountingEvaluator())
        fits.append(fit)
    threads = [threading.Thread(target=f.prepare, args=(object(), None, _NoMerge(), zoo, "zoo://ci/base", tmp_path),
                                kwargs={"space": space}) for f in fits]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(f.evaluator.calls for f in fits) == [0, 0, 7]  # base + 2 parents + 2 random + 2 space samples
    models = fits[0].bank.models
    assert sum(m.startswith("space-") for m in models) == 2 and sum(m.startswith("random-") for m in models) == 2
    assert all(f.bank.models == models for f in fits)


def test_p_gold_is_the_models_probability_of_the_gold_answer(models):
    """``p_gold`` on a loglikelihood twin = exp(sum of the answer's and newline's log-probs), computed here
    directly; on a multiple-choice task = the gold choice's softmax share, whose argmax is lm-eval's acc."""
    ms, tok = models
    model, n = ms["add"], 12
    ev = LMEvalEvaluator(["zoo_add_ll", "zoo_add_mc"], include_path=ZOO_TASKS, metric="p_gold")
    acc = LMEvalEvaluator(["zoo_add_ll", "zoo_add_mc", "zoo_add"], include_path=ZOO_TASKS,
                          metric={"zoo_add_ll": "acc", "zoo_add_mc": "acc", "zoo_add": "exact_match"})
    items = {"zoo_add_ll": list(range(n)), "zoo_add_mc": list(range(n))}
    soft = ev.evaluate(model, tok, items).scores
    hard = acc.evaluate(model, tok, {**items, "zoo_add": list(range(n))}).scores
    assert hard["zoo_add_ll"] == hard["zoo_add"]  # the twin's 0/1 verdict is exact match's
    docs = load_split("add", "search")[:n]
    for i, doc in enumerate(docs):
        ids = tok(doc["prompt"] + doc["answer"] + "\n", add_special_tokens=False)["input_ids"]
        n_prompt = len(tok(doc["prompt"], add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        want = sum(float(logp[j - 1, ids[j]]) for j in range(n_prompt, len(ids)))
        assert soft["zoo_add_ll"][i] == pytest.approx(float(np.exp(want)), rel=1e-4)
        assert 0.0 < soft["zoo_add_mc"][i] < 1.0
    assert sum(soft["zoo_add_mc"].values()) > 0.25 * n  # above chance among 4 choices on its own skill
    assert all(v >= 0.25 for i, v in soft["zoo_add_mc"].items() if hard["zoo_add_mc"][i] == 1.0)


def test_metric_is_checked_before_any_compute():
    with pytest.raises(EvomergeError, match="p_gold needs a loglikelihood or multiple_choice task"):
        LMEvalEvaluator(["zoo_add"], include_path=ZOO_TASKS, metric="p_gold")
    with pytest.raises(EvomergeError, match="reports no metric 'acc' .has: exact_match"):
        LMEvalEvaluator(["zoo_add"], include_path=ZOO_TASKS, metric="acc")
    with pytest.raises(ConfigError, match="p_gold gives graded scores, and estimator 'adaptive' fits an IRT"):
        Fitness.from_config({"tasks": ["zoo_add_ll"], "include_path": ["zoo"], "metric": "p_gold"})
    cfg = FitnessConfig(tasks=["zoo_add_ll"], test_tasks=["zoo_add_test"], include_path=["zoo"], metric="p_gold",
                        estimator="subset_mean", anchors="random")
    assert cfg.test_metric_or_default is None  # the test tasks keep their own metric (exact match)
    assert FitnessConfig(tasks=["zoo_add_mc"], include_path=["zoo"], metric="acc_norm").test_metric_or_default \
        == "acc_norm"


def test_random_anchors_need_no_item_bank(tmp_path, models):
    """``subset_mean`` on random anchors reads no bank: prepare evaluates nothing and writes no bank; its
    anchors are the ones a bank of the same split would have given."""
    ms, tok = models
    fit = Fitness.from_config({"tasks": ["zoo_add", "zoo_sort"], "include_path": ["zoo"], "estimator": "subset_mean",
                               "anchors": "random", "items_per_task": 7, "seed": 3})
    fit.prepare(model=None, tokenizer=None, merger=None, run_dir=tmp_path)  # nothing to merge or evaluate
    assert fit.bank is None and not (tmp_path / "item_bank").exists()
    assert {t: len(v) for t, v in fit.items.items()} == {"zoo_add": 7, "zoo_sort": 7}
    pop = {m: {t: {i: float((i + k) % 2) for i in range(n)} for t, n in fit.evaluator.n_docs.items()}
           for k, m in enumerate(["m0", "m1"])}
    bank = fit_item_bank(pop, ["zoo_add", "zoo_sort"], dim=1)
    assert fit.items == select_anchors(bank, "random", 7, 3).items
    vals, raw = fit.score(ms["add"], tok)
    assert raw.n_items() == 14 and vals["zoo_add"] == pytest.approx(raw.metrics["zoo_add"])
