"""Anchors and estimators on simulated merge populations (no models): every estimator beats nothing, IRT
estimators beat the plain subset mean, mixing weights are tuned from data."""

import numpy as np
import pytest

from evomerge.errors import EvomergeError
from evomerge.fitness import ESTIMATORS, fit_item_bank, select_anchors
from evomerge.fitness.irt import predict_proba

TASKS = ["t0", "t1"]
NPER = 300


@pytest.fixture(scope="module")
def sim():
    rng = np.random.default_rng(0)
    n = NPER * len(TASKS)
    a = np.abs(rng.normal(1.0, 0.3, (n, 2)))
    a[:NPER, 0] *= 2.5
    a[NPER:, 1] *= 2.5
    b = rng.normal(0, 1.0, n)
    parents = np.array([[1.5, -1.0], [-1.0, 1.5], [-0.5, -0.5]])

    def merges(k):
        return rng.dirichlet(np.ones(3), size=k) @ parents + rng.normal(0, 0.05, (k, 2))

    def answers(theta):
        return (rng.random((len(theta), n)) < predict_proba(theta, a, b)).astype(float)

    y = answers(np.vstack([parents, merges(60)]))
    pop = {f"m{j}": {t: {i: y[j, k * NPER + i] for i in range(NPER)} for k, t in enumerate(TASKS)}
           for j in range(len(y))}
    bank = fit_item_bank(pop, TASKS, dim=2, endpoints=["m0", "m1", "m2"])
    yt = answers(merges(40))
    truth = np.stack([yt[:, k * NPER:(k + 1) * NPER].mean(1) for k in range(len(TASKS))], 1)
    return bank, yt, truth


def _errors(bank, yt, truth, estimator, anchors_method, n, **params):
    anchors = select_anchors(bank, anchors_method, n, seed=1)
    est = ESTIMATORS.get(estimator)(bank, anchors, **params)
    tuned = est.tune()
    rows = []
    for j in range(len(yt)):
        ans = {t: {i: yt[j, k * NPER + i] for i in anchors.items[t]} for k, t in enumerate(TASKS)}
        e = est.estimate(ans)
        rows.append([e[t] for t in TASKS])
    return np.abs(np.array(rows) - truth).mean(), tuned


@pytest.mark.parametrize("method", ["random", "stratified", "kmeans_correct", "kmeans_irt"])
def test_anchor_methods_give_weighted_items(sim, method):
    bank = sim[0]
    anchors = select_anchors(bank, method, 15, seed=0)
    for t in TASKS:
        assert 1 <= len(anchors.items[t]) <= 15 and len(set(anchors.items[t])) == len(anchors.items[t])
        assert sum(anchors.weights[t]) == pytest.approx(1.0)
        assert set(anchors.items[t]) <= set(bank.item_ids[t])


def test_anchor_bad_input(sim):
    with pytest.raises(EvomergeError, match="only 300 items"):
        select_anchors(sim[0], "random", 301)
    with pytest.raises(EvomergeError, match="unknown anchor method"):
        select_anchors(sim[0], "nope", 5)


def test_irt_estimators_beat_subset_mean(sim):
    bank, yt, truth = sim
    base, _ = _errors(bank, yt, truth, "subset_mean", "random", 20)
    for name in ("pirt", "mpirt"):
        err, _ = _errors(bank, yt, truth, name, "random", 20)
        assert err < 0.95 * base, (name, err, base)
    err_eap, _ = _errors(bank, yt, truth, "pirt", "random", 20, ability="eap")
    assert err_eap < 0.95 * base


@pytest.mark.parametrize("name", ["gpirt", "gmpirt"])
def test_mixed_estimators_tune_their_weights(sim, name):
    bank, yt, truth = sim
    err, tuned = _errors(bank, yt, truth, name, "kmeans_irt", 20, tune_folds=2)
    anchor_err, _ = _errors(bank, yt, truth, "anchor", "kmeans_irt", 20)
    assert set(tuned["mix"]) == set(TASKS) and all(0 <= v <= 1 for v in tuned["mix"].values())
    assert err < anchor_err


def test_fixed_mix_and_full(sim):
    bank, yt, truth = sim
    anchors = select_anchors(bank, "random", 10)
    ans = {t: {i: yt[0, k * NPER + i] for i in anchors.items[t]} for k, t in enumerate(TASKS)}
    one = ESTIMATORS.get("gpirt")(bank, anchors, mix=1.0).estimate(ans)
    mean = ESTIMATORS.get("anchor")(bank, anchors).estimate(ans)
    assert one == pytest.approx(mean)
    full = ESTIMATORS.get("full")(None, None).estimate({t: {i: 1.0 for i in range(4)} for t in TASKS})
    assert full == {"t0": 1.0, "t1": 1.0}


def test_estimator_bad_input(sim):
    bank = sim[0]
    anchors = select_anchors(bank, "random", 5)
    est = ESTIMATORS.get("pirt")(bank, anchors)
    with pytest.raises(EvomergeError, match="missing"):
        est.estimate({t: {} for t in TASKS})
    with pytest.raises(EvomergeError, match="needs an item bank"):
        ESTIMATORS.get("pirt")(None, anchors)
    with pytest.raises(EvomergeError, match="unknown estimator"):
        ESTIMATORS.get("nope")


def _adaptive_answers(est, anchors, row):
    """Answer the anchors, then every round the estimator asks for, from simulated full answers."""
    got = {t: {i: row[k * NPER + i] for i in anchors.items[t]} for k, t in enumerate(TASKS)}
    rounds = 1
    while (more := est.next_items(got)) is not None:
        for k, t in enumerate(TASKS):
            for i in more.get(t, []):
                assert i not in got[t], "an item was asked twice"
                got[t][i] = row[k * NPER + i]
        rounds += 1
    return got, rounds


def test_adaptive_testing_asks_its_budget_in_rounds_and_beats_static_anchors(sim):
    bank, yt, truth = sim
    params = {"items_per_task": 20, "rounds": 4, "first_fraction": 0.4}
    est_cls = ESTIMATORS.get("adaptive")
    assert est_cls.first_round(20, params) == 8
    anchors = select_anchors(bank, "random", 8, seed=1)
    est = est_cls(bank, anchors, **params)
    rows = []
    for j in range(len(yt)):
        got, rounds = _adaptive_answers(est, anchors, yt[j])
        assert rounds == 4 and all(len(got[t]) == 20 for t in TASKS)
        assert _adaptive_answers(est, anchors, yt[j])[0] == got  # deterministic in the answers
        rows.append([est.estimate(got)[t] for t in TASKS])
    adaptive = np.abs(np.array(rows) - truth).mean()
    static, _ = _errors(bank, yt, truth, "pirt", "random", 20)
    assert adaptive < 0.9 * static, (adaptive, static)


def test_adaptive_bad_params(sim):
    with pytest.raises(EvomergeError, match="first_fraction"):
        ESTIMATORS.get("adaptive").first_round(20, {"first_fraction": 0})
