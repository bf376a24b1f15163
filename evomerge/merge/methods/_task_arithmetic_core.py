"""Shared core of the task-arithmetic family (task_arithmetic, ties, dare_*, breadcrumbs*, della*).

Generalised task arithmetic, the same algebra as mergekit's ``GeneralizedTaskArithmeticMerge``::

    d_i   = sparsify(theta_i - theta_base, density_i)           # optional, per source
    d_i  *= w_i
    m     = sign(d_i) == sign(sum_j d_j)                        # optional TIES sign consensus ("sum")
    delta = sum_i m_i d_i / (sum_i m_i w_i  if normalize else 1)
    theta = theta_base + lambda * delta

Sparsifiers: ``magnitude`` keeps the top-k |d| (TIES), ``random`` keeps each entry with probability density
(DARE), ``magnitude_outliers`` drops the gamma largest then the smallest (Breadcrumbs), ``della_magprune``
keeps entries with rank-dependent probability in [density - eps, density + eps] per row (DELLA). With
``rescale`` the kept entries are scaled so the L1 norm of d_i is preserved (mergekit's convention; in
expectation the same as the papers' 1/density).

Magnitude orders and DELLA ranks depend only on the source and tensor, so they are cached in
``TensorInputs.cache`` (kept across candidates by the in-memory merger).
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch

from evomerge.merge.registry import MergeMethod, ParamSpec, TensorInputs, TensorParams

_EPS = 1e-7


def common_params(normalize: bool, rescale: bool) -> tuple[ParamSpec, ...]:
    return (
        ParamSpec("weight", float, 1.0, doc="scale of this source's task vector"),
        ParamSpec("normalize", bool, normalize, scope="global", doc="divide by the sum of (kept) weights"),
        ParamSpec("lambda", float, 1.0, scope="global", doc="scale of the merged task vector"),
    )


DENSITY = ParamSpec("density", float, 1.0, bounds=(0.0, 1.0), open_low=True, doc="fraction of entries kept")


def rescale_param(default: bool) -> ParamSpec:
    return ParamSpec("rescale", bool, default, scope="global", doc="keep the L1 norm of each sparsified delta")


def _rescaled(delta: torch.Tensor, mask: torch.Tensor, rescale: bool) -> torch.Tensor:
    masked = delta * mask
    if not rescale:
        return masked
    before = delta.abs().sum()
    after = masked.abs().sum()
    if before < _EPS or after < _EPS:
        return masked
    return masked * (before / after)


def _cached(x: TensorInputs, key, make):
    val = x.cache.get(key)
    if val is None:
        val = x.cache[key] = make()
    return val


def _ranks(order: torch.Tensor) -> torch.Tensor:
    """Inverse permutation: ``rank[order[j]] = j`` (int32), so ``rank < k`` selects exactly ``order[:k]``."""
    rank = torch.empty(order.numel(), dtype=torch.int32, device=order.device)
    rank[order] = torch.arange(order.numel(), dtype=torch.int32, device=order.device)
    return rank


def sparsify_magnitude(x: TensorInputs, i: int, delta: torch.Tensor, density: float, rescale: bool):
    """Keep the top ``k = max(1, int(density * n))`` entries by |delta| (the same set as mergekit's
    ``argsort(descending)[:k]``; the cached rank makes it one comparison per candidate)."""
    if density >= 1:
        return delta
    n = delta.numel()
    k = max(1, int(density * n))
    rank = _cached(x, ("mag_desc", x.models[i]),
                   lambda: _ranks(torch.argsort(delta.abs().reshape(-1).float(), descending=True)))
    mask = (rank < k).view_as(delta)
    return _rescaled(delta, mask, rescale)


def sparsify_outliers(x: TensorInputs, i: int, delta, density: float, rescale: bool, gamma: float):
    """Drop the ``gamma`` fraction of largest |delta| and then the smallest, keeping ``int(density * n)``."""
    if density >= 1:
        return delta
    n = delta.numel()
    target = int(density * n)
    n_bot = max(0, n - target - int(gamma * n))
    rank = _cached(x, ("mag_asc", x.models[i]),
                   lambda: _ranks(torch.sort(delta.abs().reshape(-1).float(), descending=False).indices))
    mask = ((rank >= n_bot) & (rank < n_bot + target)).view_as(delta)
    return _rescaled(delta, mask, rescale)


def sparsify_random(x: TensorInputs, i: int, delta, density: float, rescale: bool):
    if density >= 1:
        return delta
    probs = x.buffer("probs", delta.shape, torch.float32, delta.device).fill_(density)
    mask = torch.bernoulli(probs, generator=x.generator(x.models[i])).to(delta.dtype)
    return _rescaled(delta, mask, rescale)


def _della_rank_norm(delta: torch.Tensor) -> torch.Tensor:
    rows = delta.reshape(1, -1) if delta.dim() < 2 else delta.reshape(delta.shape[0], -1)
    ranks = rows.abs().argsort(dim=1).argsort(dim=1).float() + 1
    lo = ranks.min(dim=1, keepdim=True).values
    hi = ranks.max(dim=1, keepdim=True).values
    return ((ranks - lo) / (hi - lo)).clamp(0, 1)


def sparsify_della(x: TensorInputs, i: int, delta, density: float, rescale: bool, epsilon: float):
    if density >= 1:
        return delta
    rank_norm = _cached(x, ("della_rank", x.models[i]), lambda: _della_rank_norm(delta))
    probs = (density - epsilon) + rank_norm * (2 * epsilon)
    mask = torch.bernoulli(probs, generator=x.generator(x.models[i])).to(delta.dtype)
    return _rescaled(delta, mask.view_as(delta), rescale)


class TaskArithmeticFamily(MergeMethod):
    """Base class of the family; subclasses pick a sparsifier, a consensus rule and defaults."""

    sparsifier: ClassVar[Optional[str]] = None  # magnitude | random | outliers | della
    consensus: ClassVar[bool] = False

    def _sparsify(self, x: TensorInputs, i: int, delta: torch.Tensor, p: TensorParams, rescale: bool):
        if self.sparsifier is None:
            return delta
        density = p.per_model["density"][i]
        if self.sparsifier == "magnitude":
            return sparsify_magnitude(x, i, delta, density, rescale)
        if self.sparsifier == "random":
            return sparsify_random(x, i, delta, density, rescale)
        if self.sparsifier == "outliers":
            return sparsify_outliers(x, i, delta, density, rescale, p.per_model["gamma"][i])
        if self.sparsifier == "della":
            return sparsify_della(x, i, delta, density, rescale, p.per_model["epsilon"][i])
        raise AssertionError(self.sparsifier)

    def merge_tensor(self, x: TensorInputs, p: TensorParams, out: torch.Tensor) -> None:
        base, deltas = x.base, x.deltas
        n = deltas.shape[0]
        w = torch.tensor(p.per_model["weight"], dtype=deltas.dtype, device=deltas.device)
        rescale = bool(p.shared.get("rescale", False))
        if self.sparsifier is None and not self.consensus:
            # plain task arithmetic: one matrix-vector product, no scratch stack
            mixed = torch.matmul(w.unsqueeze(0), deltas.reshape(n, -1)).view_as(base)
            divisor = w.sum()
            if p.shared["normalize"] and divisor.abs() >= 1e-8:
                mixed /= divisor
        else:
            # row-wise loops over the (few) sources: contiguous adds beat strided reductions over dim 0
            work = x.buffer("deltas", deltas.shape, deltas.dtype, deltas.device)
            weights = p.per_model["weight"]
            for i in range(n):
                torch.mul(self._sparsify(x, i, deltas[i], p, rescale), weights[i], out=work[i])
            mixed = x.buffer("mixed", base.shape, base.dtype, base.device)
            if self.consensus:
                # keep d_i where sign(d_i) == majority sign (+1 when sum_i d_i >= 0); zeros never agree
                mixed.copy_(work[0])
                for i in range(1, n):
                    mixed.add_(work[i])
                # with g = +-1 the elected sign: kept d_i = g * relu(g * d_i), its weight counts where that is > 0
                sign = x.buffer("sign", base.shape, base.dtype, base.device)
                sign.copy_(mixed >= 0).mul_(2).sub_(1)
                divisor = x.buffer("divisor", base.shape, base.dtype, base.device).zero_()
                mixed.zero_()
                for i in range(n):
                    agree = work[i].mul_(sign).relu_()
                    mixed.add_(agree)
                    divisor.add_(agree.sign_(), alpha=weights[i])
                mixed.mul_(sign)
                divisor.masked_fill_(divisor == 0, 1)
            else:
                mixed.copy_(work[0])
                for i in range(1, n):
                    mixed.add_(work[i])
                divisor = w.sum()
                if divisor.abs() < 1e-8:
                    divisor = torch.ones_like(divisor)
            if p.shared["normalize"]:
                mixed /= divisor
        lam = p.shared["lambda"]
        if lam != 1:
            mixed *= lam
        torch.add(base, mixed, out=out)
