"""Ability of one model from its answers to a few items, with a Gaussian prior (MAP or EAP).

The latent ``z`` has prior N(mean, cov) and the ability is ``theta = T z`` (T = identity for ordinary
abilities; T = parents' abilities as columns for MERGE^3-style merged-model abilities, where z are the mixing
coefficients). The log posterior is concave in z, so damped Newton's method converges in a few steps; EAP uses
self-normalised importance sampling from the Laplace approximation around the MAP.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from scipy.special import expit

from evomerge.errors import EvomergeError


def _log_lik(z: np.ndarray, y: np.ndarray, design: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bernoulli log-likelihood of rows of z (S, K)."""
    logits = z @ design.T - b
    return (y * logits - np.logaddexp(0.0, logits)).sum(axis=-1)


def fit_latent(y: np.ndarray, a: np.ndarray, b: np.ndarray, prior_mean: np.ndarray, prior_cov: np.ndarray,
               transform: Optional[np.ndarray] = None, method: Literal["map", "eap"] = "map",
               n_samples: int = 2000, seed: int = 0, max_iter: int = 50) -> np.ndarray:
    """Posterior MAP or mean of the latent z given answers ``y`` (items,) to items (a, b).

    ``transform`` (D, K) maps z to theta; ``prior_mean`` (K,), ``prior_cov`` (K, K).
    """
    y = np.asarray(y, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if y.ndim != 1 or len(y) != len(a) or len(b) != len(a):
        raise EvomergeError(f"ability fit: {len(y)} answers for {len(a)} items")
    design = a if transform is None else a @ np.asarray(transform, dtype=np.float64)
    k = design.shape[1]
    m = np.asarray(prior_mean, dtype=np.float64).reshape(k)
    prec = np.linalg.inv(np.asarray(prior_cov, dtype=np.float64).reshape(k, k))

    def log_post(zs: np.ndarray) -> np.ndarray:
        """Unnormalised log posterior of rows of z (S, K)."""
        return _log_lik(zs, y, design, b) - 0.5 * np.einsum("si,ij,sj->s", zs - m, prec, zs - m)

    z = m.copy()
    current = log_post(z[None])[0]
    for _ in range(max_iter):
        p = expit(design @ z - b)
        grad = design.T @ (y - p) - prec @ (z - m)
        hess = design.T @ (design * (p * (1 - p))[:, None]) + prec  # negative Hessian, positive definite
        step = np.linalg.solve(hess, grad)
        # damped Newton: a full step overshoots (and diverges) when the items are sharp and the answers
        # nearly separable, so halve it until the log posterior rises (it is concave, so one always does)
        t = 1.0
        while t > 1e-6:
            new = log_post((z + t * step)[None])[0]
            if new >= current - 1e-12:
                break
            t *= 0.5
        z, current = z + t * step, new
        if np.max(np.abs(t * step)) < 1e-8:
            break
    if method == "map":
        return z
    if method != "eap":
        raise EvomergeError(f"unknown ability method {method!r} (known: map, eap)")
    p = expit(design @ z - b)
    cov = np.linalg.inv(design.T @ (design * (p * (1 - p))[:, None]) + prec)
    rng = np.random.default_rng(seed)
    # Student-t-like heavier proposal: Laplace covariance inflated, so the weights stay bounded.
    prop_cov = 1.5 * cov
    samples = rng.multivariate_normal(z, prop_cov, size=n_samples)
    diff = samples - z
    log_prop = -0.5 * np.einsum("si,ij,sj->s", diff, np.linalg.inv(prop_cov), diff)
    lw = log_post(samples) - log_prop
    w = np.exp(lw - lw.max())
    return (w[:, None] * samples).sum(axis=0) / w.sum()
