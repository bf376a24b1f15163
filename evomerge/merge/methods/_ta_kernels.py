"""The tensor code of the task-arithmetic family (see :mod:`evomerge.merge.methods._task_arithmetic_core` for
the algebra): sparsifiers, the exact top-k over chunks, L1 rescaling and the sign-consensus merge. ``m`` is the
method (its ``sparsifier`` and ``consensus``). Imported on the first merged tensor, so the method metadata loads
without torch."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from evomerge.merge import counter_stream, engine
from evomerge.merge.engine import TensorInputs
from evomerge.merge.registry import TensorParams

_EPS = 1e-7


def linear_coefficients(p: TensorParams) -> list[float]:
    """Task arithmetic without sparsifier or consensus as ``(1 - sum_i c_i) base + sum_i c_i theta_i``: the
    ``c_i = lambda * w_i [/ W]`` (each source is then read once and no task vector is formed)."""
    weights = p.per_model["weight"]
    total = sum(weights)
    scale = p.shared["lambda"] / (total if p.shared["normalize"] and abs(total) >= 1e-8 else 1.0)
    return [scale * w for w in weights]


def _l1_factors(x: TensorInputs, mask_of) -> list[float]:
    """Per source, ``sum |d_i| / sum |mask_i * d_i|`` over the whole tensor (1.0 where either is ~0): the factor
    that keeps each sparsified task vector's L1 norm (one pass over the chunks, the same masks drawn)."""
    n = len(x.models)
    before = [0.0] * n
    after = [0.0] * n
    for chunk in x.chunks():
        for i in range(n):
            d = chunk.delta(i)
            before[i] += float(d.abs().sum(dtype=torch.float64))
            after[i] += float(_apply(mask_of(chunk, i, d), d, chunk.buffer("l1", d.shape, d.dtype))
                              .abs_().sum(dtype=torch.float64))
    return [b / a if b >= _EPS and a >= _EPS else 1.0 for b, a in zip(before, after)]


def _apply(mask, delta: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``delta`` where ``mask`` keeps it (a bool mask, or float 0/1 weights), into ``out``."""
    if isinstance(mask, float):
        return out.copy_(delta).mul_(mask)
    if mask.dtype == torch.bool:
        return torch.mul(delta, mask, out=out)  # bool promotes to 0/1
    return torch.mul(delta, mask, out=out)


def _abs_bits(delta: torch.Tensor, x: Optional[TensorInputs] = None) -> torch.Tensor:
    """|delta| as int32 bit patterns: for non-negative floats the integer order is the float order (into a
    scratch buffer of ``x`` when given: this runs for every chunk of every source)."""
    out = x.buffer("abs", delta.shape, torch.float32) if x is not None else None
    return torch.abs(delta, out=out).view(torch.int32)


def _top_count(x: TensorInputs, i: int, k: int) -> tuple[int, int, int]:
    """Where the k largest |delta_i| end: ``(value_bits, need, n_equal)``: every entry above the value is among
    them, plus the first ``need`` (in index order) of the ``n_equal`` entries equal to it. A two-pass radix
    select over the chunks (the high 16 bits, then the low 16 bits inside one bucket): exact, O(chunk) memory;
    the first pass's histogram is cached."""
    def high_hist() -> torch.Tensor:
        h = torch.zeros(1 << 15, dtype=torch.int64, device=x.device)  # sign bit is 0: 15 high bits
        for chunk in x.chunks():
            bits = _abs_bits(chunk.delta(i), chunk)
            high = torch.bitwise_right_shift(bits, 16, out=chunk.buffer("high", bits.shape, torch.int32))
            h += torch.bincount(high.reshape(-1), minlength=1 << 15)
        return h

    n = x.shape_numel
    if n <= engine.CHUNK_ELEMS:  # one chunk: a selection on the tensor itself beats two 64K-bin histograms
        def sorted_abs() -> torch.Tensor:
            (chunk,) = list(x.chunks())
            return torch.sort(chunk.delta(i).abs().reshape(-1)).values

        key = ("magsorted", x.models[i])
        if x.cache_room(key, 4 * n, 1):  # sorted once, then each candidate's k-th value is a lookup
            srt = x.cache(key, sorted_abs, 1)
            kth = srt[n - k: n - k + 1]
            lo, hi = int(torch.searchsorted(srt, kth)), int(torch.searchsorted(srt, kth, right=True))
            return int(kth.view(torch.int32)), k - (n - hi), hi - lo
        (chunk,) = list(x.chunks())
        a = chunk.delta(i).abs().reshape(-1)
        kth = torch.kthvalue(a, n - k + 1).values
        return (int(kth.view(torch.int32)), k - int(torch.count_nonzero(a > kth)),
                int(torch.count_nonzero(a == kth)))
    hist = x.cache(("maghist", x.models[i]), high_hist, 1)
    bucket, above, _ = _from_top(hist.cpu().numpy(), k)
    low = x.buffer("low_hist", (1 << 16,), torch.int64).zero_()
    for chunk in x.chunks():
        bits = _abs_bits(chunk.delta(i), chunk).reshape(-1)
        high = torch.bitwise_right_shift(bits, 16, out=chunk.buffer("high", bits.shape, torch.int32))
        inside = torch.eq(high, bucket, out=chunk.buffer("inside", bits.shape, torch.bool))
        low += torch.bincount(bits[inside] & 0xFFFF, minlength=1 << 16)
    lo, greater, n_equal = _from_top(low.cpu().numpy(), k - above)
    return (bucket << 16) | lo, k - above - greater, n_equal


def _from_top(hist: np.ndarray, k: int) -> tuple[int, int, int]:
    """The bin holding the k-th largest entry, the count of entries in higher bins, and the bin's count."""
    from_top = np.cumsum(hist[::-1])
    j = int(np.searchsorted(from_top, k))
    b = len(hist) - 1 - j
    return b, int(from_top[j] - hist[b]), int(hist[b])


def _in_top(x: TensorInputs, i: int, bits: torch.Tensor, k: int, key: str = "keep") -> torch.Tensor:
    """Mask of this chunk's entries among the k largest |delta_i| of the whole tensor (ties: lower index first),
    in scratch buffer ``key``."""
    keep = x.buffer(key, bits.shape, torch.bool)
    if k <= 0 or k >= x.shape_numel:
        return keep.fill_(k > 0)
    value, need, n_equal = x.stat(("top", i, k), lambda: _top_count(x, i, k))
    if need == n_equal:
        return torch.ge(bits, value, out=keep)
    torch.gt(bits, value, out=keep)
    carry_key = ("tie_carry", x.pass_id, i, k)
    seen = x.stats.get(carry_key, 0)
    if seen < need:  # the next (need - seen) entries equal to the value, in index order, are kept
        ties = torch.nonzero((bits == value).view(-1)).squeeze(1)
        keep.view(-1)[ties[: need - seen]] = True
        x.stats[carry_key] = seen + ties.numel()
    return keep


def _magnitude_mask(x: TensorInputs, i: int, delta: torch.Tensor, density: float) -> torch.Tensor:
    k = max(1, int(density * x.shape_numel))
    return _in_top(x, i, _abs_bits(delta, x), k)


def _magnitude_masked(x: TensorInputs, i: int, delta: torch.Tensor, density: float, out: torch.Tensor):
    """``delta`` with all but its top-k magnitudes zeroed, into ``out``. Without a tie to break at the k-th value
    this is float arithmetic alone (sign(d) * threshold(|d|)): CPU kernels on bool masks are several times
    slower than on floats."""
    k = max(1, int(density * x.shape_numel))
    if 0 < k < x.shape_numel:
        value, need, n_equal = x.stat(("top", i, k), lambda: _top_count(x, i, k))
        if need == n_equal:
            kth = torch.tensor([value], dtype=torch.int32).view(torch.float32)
            below = float(torch.nextafter(kth, torch.zeros_like(kth)))  # keep |d| > below, i.e. |d| >= k-th
            kept = F.threshold(torch.abs(delta, out=x.buffer("abs", delta.shape, torch.float32)), below, 0.0,
                               inplace=True)
            return torch.sign(delta, out=out).mul_(kept)
    return _apply(_magnitude_mask(x, i, delta, density), delta, out)


def _outlier_mask(x: TensorInputs, i: int, delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Drop the ``gamma`` fraction of largest |delta| and then the smallest, keeping ``int(density * n)``."""
    n = x.shape_numel
    target = int(density * n)
    n_bot = max(0, n - target - int(gamma * n))
    bits = _abs_bits(delta, x)
    return _in_top(x, i, bits, n - n_bot, "keep_hi") & ~_in_top(x, i, bits, n - n_bot - target, "keep_lo")


def _uniform_bits(x: TensorInputs, i: int, delta: torch.Tensor) -> torch.Tensor:
    """The counter stream's 24-bit draws for this chunk of source ``i`` (see :mod:`evomerge.merge.counter_stream`)."""
    key = counter_stream.stream_key(x.seed, x.models[i], x.name)
    return counter_stream.uniform_bits(key, x.index0, delta.numel(), x.device).view(delta.shape)


def _random_mask(x: TensorInputs, i: int, delta: torch.Tensor, density: float) -> torch.Tensor:
    return torch.lt(_uniform_bits(x, i, delta), counter_stream.threshold(density),
                    out=x.buffer("draw", delta.shape, torch.bool))


def _della_rank_norm(delta: torch.Tensor) -> torch.Tensor:
    """Per row, the magnitude rank of each entry scaled to [0, 1]."""
    rows = delta.reshape(1, -1) if delta.dim() < 2 else delta.reshape(delta.shape[0], -1)
    ranks = rows.abs().argsort(dim=1).argsort(dim=1).float() + 1
    lo = ranks.min(dim=1, keepdim=True).values
    hi = ranks.max(dim=1, keepdim=True).values
    return ((ranks - lo) / (hi - lo)).clamp(0, 1).view_as(delta)


def _della_mask(x: TensorInputs, i: int, delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    rank_norm = x.cache(("della_rank", x.models[i], x.rows[0]), lambda: _della_rank_norm(delta))
    probs = torch.mul(rank_norm, 2 * epsilon, out=x.buffer("probs", delta.shape, torch.float32)).add_(density - epsilon)
    thresholds = probs.mul_(counter_stream.ONE).round_().clamp_(0, counter_stream.ONE)
    return torch.lt(_uniform_bits(x, i, delta), thresholds, out=x.buffer("draw", delta.shape, torch.bool))


def mask(m, x: TensorInputs, i: int, delta: torch.Tensor, p: TensorParams) -> torch.Tensor:
    density = p.per_model["density"][i]
    if m.sparsifier == "magnitude":
        return _magnitude_mask(x, i, delta, density)
    if m.sparsifier == "random":
        return _random_mask(x, i, delta, density)
    if m.sparsifier == "outliers":
        return _outlier_mask(x, i, delta, density, p.per_model["gamma"][i])
    if m.sparsifier == "della":
        return _della_mask(x, i, delta, density, p.per_model["epsilon"][i])
    raise AssertionError(m.sparsifier)

def _mergekit_sparsify(m, x: TensorInputs, i: int, delta: torch.Tensor, p: TensorParams, rescale: bool):
    """DARE / DELLA with mergekit's stream and mergekit's float32 operations, in its order (``random_stream:
    mergekit``; ``delta`` is the whole tensor): the mask of ``mergekit.sparsify`` and its L1 rescale (float32
    sums over the whole tensor, the ratio applied as a float32 factor)."""
    density = p.per_model["density"][i]
    if m.sparsifier == "random":
        probs = torch.full_like(delta, density, dtype=torch.float32)
    else:  # DELLA: magnitude ranks along dimension 1 of the tensor (a 1-D tensor is one row)
        t = delta.view(x.shape) if len(x.shape) >= 2 else delta.reshape(1, -1)
        ranks = torch.argsort(t.abs(), dim=1, descending=False).argsort(dim=1).to(torch.float32) + 1
        lo = ranks.min(dim=1, keepdim=True).values
        hi = ranks.max(dim=1, keepdim=True).values
        epsilon = p.per_model["epsilon"][i]
        probs = (density - epsilon) + ((ranks - lo) / (hi - lo)).clamp(0, 1) * 2 * epsilon
    mask = x.rng_stream.draw(x.name, i, probs).view_as(delta)
    masked = torch.mul(delta, mask, out=x.buffer("masked", delta.shape, delta.dtype))
    if rescale:
        before, after = delta.abs().sum(), masked.abs().sum()
        if not (before < _EPS or after < _EPS):
            masked.mul_(before / after)
    return masked


def sparsify(m, x: TensorInputs, i: int, delta: torch.Tensor, p: TensorParams, rescale: bool):
    if m.sparsifier is None or p.per_model["density"][i] >= 1:
        return delta
    if x.rng_stream is not None:
        return _mergekit_sparsify(m, x, i, delta, p, rescale)
    buf = x.buffer("masked", delta.shape, delta.dtype)
    if m.sparsifier == "magnitude":
        masked = _magnitude_masked(x, i, delta, p.per_model["density"][i], buf)
    else:
        masked = _apply(mask(m, x, i, delta, p), delta, buf)
    if rescale:
        factors = x.stat("l1", lambda: _l1_factors(x, lambda c, j, d: mask(m, c, j, d, p)
                                                   if p.per_model["density"][j] < 1 else 1.0))
        if factors[i] != 1.0:
            masked *= factors[i]
    return masked


def merge(m, x: TensorInputs, p: TensorParams, out: torch.Tensor) -> None:
    if out.dtype != torch.float32:  # a destination the fused kernels would have written: merge, then cast
        merged = x.buffer("merged", out.shape, torch.float32)
        merge_float32(m, x, p, merged)
        out.copy_(merged)
        return
    merge_float32(m, x, p, out)


def merge_float32(m, x: TensorInputs, p: TensorParams, out: torch.Tensor) -> None:
    if m.sparsifier is None and not m.consensus:
        coef = linear_coefficients(p)
        torch.mul(x.base, 1.0 - sum(coef), out=out)
        for i, c in enumerate(coef):
            out.add_(x.source(i), alpha=c)
        return
    base, deltas = x.base, x.deltas
    n = deltas.shape[0]
    w = torch.tensor(p.per_model["weight"], dtype=deltas.dtype, device=deltas.device)
    rescale = bool(p.shared.get("rescale", False))
    # row-wise loops over the (few) sources: contiguous adds beat strided reductions over dim 0
    work = x.buffer("deltas", deltas.shape, deltas.dtype, deltas.device)
    weights = p.per_model["weight"]
    for i in range(n):
        torch.mul(sparsify(m, x, i, deltas[i], p, rescale), weights[i], out=work[i])
    mixed = x.buffer("mixed", base.shape, base.dtype, base.device)
    if m.consensus:
        # keep d_i where sign(d_i) == majority sign (+1 when sum_i d_i >= 0); zeros never agree
        mixed.copy_(work[0])
        for i in range(1, n):
            mixed.add_(work[i])
        # with g = +-1 the elected sign: kept d_i = g * relu(g * d_i), its weight counts where that is > 0
        sign = x.buffer("sign", base.shape, base.dtype, base.device)
        torch.sign(mixed, out=sign).add_(0.5).sign_()  # +1 where the sum is >= 0, else -1 (floats only)
        divisor = x.buffer("divisor", base.shape, base.dtype, base.device).zero_()
        mixed.zero_()
        for i in range(n):
            agree = work[i].mul_(sign).relu_()
            mixed.add_(agree)
            divisor.add_(agree.sign_(), alpha=weights[i])
        mixed.mul_(sign)
        divisor.masked_fill_(torch.eq(divisor, 0, out=x.buffer("ge", base.shape, torch.bool)), 1)
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
