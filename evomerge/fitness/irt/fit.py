"""Fit a multidimensional 2PL IRT model by MAP (Gaussian priors) with scipy L-BFGS and analytic gradients.

Model: P(model j answers item i correctly) = sigmoid(a_i . theta_j - b_i), with theta_j in R^D (ability),
a_i in R^D (discrimination) and b_i (difficulty). Priors: theta ~ N(0, I), a ~ N(0, prior_a^2),
b ~ N(0, prior_b^2). The priors keep all-right / all-wrong items and models finite and fix the scale; the
rotation of theta is not identifiable, but nothing downstream depends on it (only a.theta - b does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from evomerge.errors import EvomergeError

log = logging.getLogger(__name__)


@dataclass
class IRTFit:
    """Fitted parameters: ``a`` (items, D), ``b`` (items,), ``theta`` (models, D)."""

    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray
    neg_log_posterior: float


def fit_mirt_2pl(responses: np.ndarray, dim: int = 2, prior_a: float = 1.5, prior_b: float = 3.0,
                 prior_theta: float = 1.0, max_iter: int = 2000, seed: int = 0) -> IRTFit:
    """MAP fit of a D-dimensional 2PL model to a (models, items) matrix of 0/1 (NaN = not observed).

    Fractional scores in [0, 1] are accepted (Bernoulli likelihood with soft labels).
    """
    y = np.asarray(responses, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 1:
        raise EvomergeError(f"IRT fit needs a (models, items) matrix with >= 2 models, got shape {y.shape}")
    if dim < 1:
        raise EvomergeError(f"IRT dimension must be >= 1, got {dim}")
    mask = ~np.isnan(y)
    if np.nanmin(y) < 0 or np.nanmax(y) > 1:
        raise EvomergeError("IRT responses must lie in [0, 1]")
    n_models, n_items = y.shape
    yz = np.nan_to_num(y)
    m = mask.astype(np.float64)
    rng = np.random.default_rng(seed)
    # Start: b from item logits, small random a and theta (symmetry breaking).
    p_item = np.clip(np.nanmean(y, axis=0), 0.02, 0.98)
    x0 = np.concatenate([0.1 * rng.standard_normal(n_items * dim), -np.log(p_item / (1 - p_item)),
                         0.1 * rng.standard_normal(n_models * dim)])
    na = n_items * dim

    def unpack(x):
        return x[:na].reshape(n_items, dim), x[na:na + n_items], x[na + n_items:].reshape(n_models, dim)

    def objective(x):
        a, b, theta = unpack(x)
        z = theta @ a.T - b
        nll = float(((np.logaddexp(0.0, z) - yz * z) * m).sum())
        r = (expit(z) - yz) * m
        prior = 0.5 * (np.sum(a * a) / prior_a**2 + np.sum(b * b) / prior_b**2 + np.sum(theta * theta) / prior_theta**2)
        grad = np.concatenate([(r.T @ theta + a / prior_a**2).ravel(), -r.sum(axis=0) + b / prior_b**2,
                               (r @ a + theta / prior_theta**2).ravel()])
        return nll + prior, grad

    res = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-6})
    a, b, theta = unpack(res.x)
    log.debug("mirt fit: %d models x %d items, dim %d, -log posterior %.3f (%s)", n_models, n_items, dim,
              res.fun, res.message)
    return IRTFit(a=a.copy(), b=b.copy(), theta=theta.copy(), neg_log_posterior=float(res.fun))


def predict_proba(theta: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(correct) for abilities ``theta`` (..., D) on items (a, b): shape (..., items)."""
    return expit(np.asarray(theta) @ np.asarray(a).T - np.asarray(b))
