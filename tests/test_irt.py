"""IRT core on simulated responses: the fit recovers known item parameters; abilities with a prior."""

import numpy as np
import pytest

from evomerge.errors import EvomergeError
from evomerge.fitness.irt import ItemBank, fit_item_bank, fit_latent, fit_mirt_2pl, predict_proba


def _simulate(n_models=200, n_items=300, dim=1, seed=0):
    rng = np.random.default_rng(seed)
    a = np.abs(rng.normal(1.2, 0.4, (n_items, dim)))
    b = rng.normal(0, 1.0, n_items)
    theta = rng.normal(0, 1, (n_models, dim))
    y = (rng.random((n_models, n_items)) < predict_proba(theta, a, b)).astype(float)
    return a, b, theta, y


def test_fit_recovers_1d_item_parameters():
    a, b, theta, y = _simulate(dim=1)
    fit = fit_mirt_2pl(y, dim=1)
    sign = np.sign(np.corrcoef(fit.a[:, 0], a[:, 0])[0, 1])
    assert np.corrcoef(sign * fit.a[:, 0], a[:, 0])[0, 1] > 0.8
    assert np.corrcoef(fit.b, b)[0, 1] > 0.95
    assert np.corrcoef(sign * fit.theta[:, 0], theta[:, 0])[0, 1] > 0.95


def test_fit_recovers_2d_rotation_invariants():
    a, b, theta, y = _simulate(n_models=300, dim=2, seed=1)
    fit = fit_mirt_2pl(y, dim=2)
    # b and |a| do not depend on the (unidentifiable) rotation of the ability space
    assert np.corrcoef(fit.b, b)[0, 1] > 0.95
    assert np.corrcoef(np.linalg.norm(fit.a, axis=1), np.linalg.norm(a, axis=1))[0, 1] > 0.6
    err = np.abs(predict_proba(fit.theta, fit.a, fit.b) - predict_proba(theta, a, b)).mean()
    assert err < 0.06


def test_fit_rejects_bad_matrix():
    with pytest.raises(EvomergeError):
        fit_mirt_2pl(np.array([[0.0, 1.0]]))
    with pytest.raises(EvomergeError):
        fit_mirt_2pl(np.array([[0.0, 2.0], [1.0, 0.0]]))


def test_fit_handles_missing_and_constant_items():
    _, _, _, y = _simulate(n_models=50, n_items=40)
    y[:, 0] = 1.0
    y[:, 1] = 0.0
    y[3, 5:10] = np.nan
    fit = fit_mirt_2pl(y, dim=1)
    assert np.all(np.isfinite(fit.a)) and np.all(np.isfinite(fit.b))
    assert fit.b[0] < fit.b[2] < fit.b[1] or fit.b[0] < fit.b[1]


def test_map_and_eap_ability_finite_and_close():
    a, b, theta, _ = _simulate(n_items=200, dim=2, n_models=1, seed=3)
    rng = np.random.default_rng(0)
    y = (rng.random(200) < predict_proba(theta[0], a, b)).astype(float)
    m = fit_latent(y, a, b, np.zeros(2), np.eye(2), method="map")
    e = fit_latent(y, a, b, np.zeros(2), np.eye(2), method="eap")
    assert np.linalg.norm(m - theta[0]) < 0.6 and np.linalg.norm(e - m) < 0.2
    # all right answers: the prior keeps the ability finite
    top = fit_latent(np.ones(10), a[:10], b[:10], np.zeros(2), np.eye(2))
    assert np.all(np.isfinite(top)) and np.all(np.abs(top) < 10)


def test_bank_round_trip_and_task_check(tmp_path):
    _, _, _, y = _simulate(n_models=20, n_items=30)
    pop = {f"m{j}": {"t1": {i: y[j, i] for i in range(15)}, "t2": {i: y[j, 15 + i] for i in range(15)}}
           for j in range(20)}
    bank = fit_item_bank(pop, ["t1", "t2"], dim=1, fingerprint={"num_fewshot": 0}, endpoints=["m0", "m1"])
    loaded = ItemBank.load(bank.save(tmp_path / "bank"))
    assert loaded.tasks == ["t1", "t2"] and loaded.endpoints == ["m0", "m1"]
    np.testing.assert_allclose(loaded.a, bank.a)
    loaded.check_tasks(["t2", "t1"], {"num_fewshot": 0})
    with pytest.raises(EvomergeError, match="built for tasks"):
        loaded.check_tasks(["t1", "t3"])
    with pytest.raises(EvomergeError, match="num_fewshot"):
        loaded.check_tasks(["t1", "t2"], {"num_fewshot": 5})
    with pytest.raises(EvomergeError, match="not in the item bank"):
        loaded.columns("t1", [99])
    with pytest.raises(EvomergeError, match="no item bank"):
        ItemBank.load(tmp_path / "nothing")


def test_ability_fit_converges_where_a_plain_newton_step_diverges():
    # a wide prior and a true ability far from its mean: undamped Newton overshot to |theta| ~ 100s here
    from scipy.optimize import minimize

    for seed in (2, 10, 11):
        rng = np.random.default_rng(seed)
        a, b = rng.normal(0, 1.2, (60, 3)), rng.normal(0, 3.0, 60)
        theta = rng.normal(2.5, 4.5, 3)
        y = (rng.random(60) < predict_proba(theta, a, b)).astype(float)
        mean, prec = np.full(3, 2.5), np.eye(3) / 20

        def neg_log_post(v):
            logits = a @ v - b
            return -(y * logits - np.logaddexp(0, logits)).sum() + 0.5 * (v - mean) @ prec @ (v - mean)

        z = fit_latent(y, a, b, mean, 20 * np.eye(3))
        ref = minimize(neg_log_post, mean, method="BFGS").x
        assert np.all(np.abs(z) < 20), (seed, z)
        assert neg_log_post(z) <= neg_log_post(ref) + 1e-6
