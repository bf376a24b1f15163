"""The task-arithmetic family on CPU through the fused kernels of :mod:`evomerge.merge.methods._cpu_kernels`:
per chunk, the keep rules, rescale factors and weights are set up here and one kernel call merges the chunk
from the stored sources. Whole-tensor statistics (the k-th magnitude, L1 norms) come from fused passes too.

Used for every method of the family on CPU except DELLA (its per-row ranks stay in torch) and
``random_stream: mergekit``; the torch kernels serve GPUs and those cases, with the same arithmetic.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch

from evomerge.merge import counter_stream, engine
from evomerge.merge.engine import TensorInputs
from evomerge.merge.methods import _ta_kernels
from evomerge.merge.methods._ta_kernels import linear_coefficients
from evomerge.merge.registry import TensorParams

log = logging.getLogger(__name__)

_ALL = (-1, 0, 0)  # a cut-off every magnitude is above
_NONE = (0x7FFFFFFF, 0, 1)  # one nothing is above (and no tie is kept)
_FUSED_SPARSIFIERS = (None, "magnitude", "random", "outliers")
_EPS = 1e-7
_HIST_KEEP_ELEMS = 1 << 18

try:
    from evomerge.merge.methods import _cpu_kernels as K
except ImportError as exc:  # pragma: no cover - numba is a dependency; without it the torch kernels run
    K = None
    log.info("fused CPU merge kernels unavailable (%s): using the torch kernels", exc)

ENABLED = K is not None  # tests switch it off to compare with the torch kernels
OUT_DTYPES = (torch.float32, torch.bfloat16)  # what the kernels write (bfloat16 rounded as torch rounds it)
_READS = (torch.float32, torch.bfloat16, torch.float16)  # what they read, as ``as_kernel_array`` views it


def as_kernel_array(t: torch.Tensor) -> Optional[np.ndarray]:
    """A flat numpy view the kernels read (float32; bfloat16 bits as int16; float16 bits as uint16)."""
    t = t.reshape(-1)
    if not t.is_contiguous():
        t = t.contiguous()
    if t.dtype == torch.float32:
        return t.numpy()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy()
    if t.dtype == torch.float16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return None


def usable(m, x: TensorInputs) -> bool:
    return ENABLED and x.device.type == "cpu" and x.rng_stream is None and m.sparsifier in _FUSED_SPARSIFIERS


def writes(m, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the fused path writes merged chunks of ``dtype`` straight into the destination."""
    return streams(m, device) and dtype in OUT_DTYPES


def streams(m, device: torch.device) -> bool:
    """Whether the fused path merges ``m``'s tensors on ``device`` (any number of rows, block-sized scratch)."""
    return ENABLED and device.type == "cpu" and m.sparsifier in _FUSED_SPARSIFIERS


def reads(base_dtype: Optional[torch.dtype], source_dtypes: list) -> bool:
    """Whether the kernels read a base and sources stored in these dtypes as they are (``as_kernel_array``
    views each; the sources alike)."""
    dtypes = ([base_dtype] if base_dtype is not None else []) + list(source_dtypes)
    return all(d in _READS for d in dtypes) and len(set(source_dtypes)) == 1


def peak_value(bits: int) -> float:
    """The largest ``|value|`` a kernel wrote, from the bits it returns (NaN if a NaN was written)."""
    return float(np.array([bits], np.int32).view(np.float32)[0])


class _Chunk:
    """The stored arrays of one chunk, as the kernels read them."""

    def __init__(self, x: TensorInputs):
        self.base = as_kernel_array(x.stored_base())
        self.srcs = [as_kernel_array(x.stored_source(i)) for i in range(len(x.models))]
        self.ok = self.base is not None and all(s is not None for s in self.srcs) \
            and len({s.dtype for s in self.srcs}) == 1
        self.index0 = x.rows[0] * engine.geometry(x.shape)[1]


def _scratch(x: TensorInputs, rows: int) -> np.ndarray:
    return x.buffer("fused", (rows, K.BLOCK), torch.float32).numpy()


def _hists(x: TensorInputs, which: list[int], buckets: list[int], bins: int) -> np.ndarray:
    """Fused histogram passes over the tensor's chunks (see :func:`_cpu_kernels.abs_bits_hists`)."""
    hists = np.zeros((len(which), bins), np.int64)
    for chunk in x.chunks():
        c = _Chunk(chunk)
        K.abs_bits_hists(c.base, tuple(c.srcs), np.asarray(which, np.int64), np.asarray(buckets, np.int64), hists,
                         _scratch(chunk, 1))
    return hists


def _top_counts(x: TensorInputs, wanted: list[tuple[int, int]]) -> None:
    """Into ``x.stats``: ``("top", i, k) -> (value_bits, need, n_equal)`` of the k largest |d_i| for each wanted
    ``(i, k)``, as :func:`_ta_kernels._top_count` gives them: the high bits' histogram per source (cached), then
    one pass that reads out the magnitudes inside every wanted bucket (a histogram of their low bits where a
    bucket is crowded), all sources together."""
    wanted = [(i, k) for i, k in dict.fromkeys(wanted) if ("top", i, k) not in x.stats]
    if not wanted:
        return
    n = x.shape_numel
    if n <= engine.CHUNK_ELEMS:  # sorted magnitudes the cache holds (or can): each k is a lookup
        sorted_ok = [(i, k) for i, k in wanted if x.cache_room(("magsorted", x.models[i]), 4 * n, 1)]
        for i, k in sorted_ok:
            x.stats[("top", i, k)] = _ta_kernels._top_count(x, i, k)
        wanted = [w for w in wanted if w not in sorted_ok]
        if not wanted:
            return
    models = sorted({i for i, _ in wanted})
    high = {}
    todo = []
    for i in models:
        key = ("maghist", x.models[i])
        if x.cache_has(key):
            high[i] = x.cache(key, None, 1).numpy()
        else:
            todo.append(i)
    if todo:
        fresh = _hists(x, todo, [-1] * len(todo), 1 << 15)
        for i, h in zip(todo, fresh):
            # a histogram (256 KB) is kept for tensors it is small beside
            high[i] = x.cache(("maghist", x.models[i]), lambda h=h: torch.from_numpy(h), 1).numpy() \
                if n >= _HIST_KEEP_ELEMS else h
    found = [K.from_top(high[i], k) for i, k in wanted]
    which = [i for i, _ in wanted]
    buckets = [int(b) for b, _, _ in found]
    sizes = [int(in_bucket) for _, _, in_bucket in found]
    if max(sizes) <= engine.CHUNK_ELEMS:  # the bucket's magnitudes themselves: within a chunk's scratch
        for (i, k), (_, above, _), v in zip(wanted, found, _bucket_values(x, which, buckets, sizes)):
            v.sort()
            r = k - above  # the r-th largest in the bucket
            t = v[len(v) - r]
            lo, hi = np.searchsorted(v, t, side="left"), np.searchsorted(v, t, side="right")
            x.stats[("top", i, k)] = (int(t), int(r - (len(v) - hi)), int(hi - lo))
        return
    low = _hists(x, which, buckets, 1 << 16)  # a crowded bucket (equal magnitudes): its low bits' histogram
    for (i, k), (bucket, above, _), hist in zip(wanted, found, low):
        lo, greater, n_equal = K.from_top(hist, k - above)
        x.stats[("top", i, k)] = ((int(bucket) << 16) | int(lo), int(k - above - greater), int(n_equal))


def _bucket_values(x: TensorInputs, which: list[int], buckets: list[int], sizes: list[int]) -> list[np.ndarray]:
    """The magnitudes' bits of source ``which[p]`` in high-bits bucket ``buckets[p]`` (``sizes[p]`` of them)."""
    vals = np.empty((len(which), max(sizes) + 8), np.int32)
    filled = np.zeros(len(which), np.int64)
    for chunk in x.chunks():
        c = _Chunk(chunk)
        K.bucket_bits(c.base, tuple(c.srcs), np.asarray(which, np.int64), np.asarray(buckets, np.int64), filled,
                      vals, _scratch(chunk, 3))
    if list(filled) != sizes:  # pragma: no cover - the cached histogram is of the same entries
        raise AssertionError(f"bucket sizes {list(filled)} != {sizes} for {x.name}")
    return [vals[p, :size] for p, size in enumerate(sizes)]


def _cut(x: TensorInputs, i: int, k: int) -> tuple[int, int, int]:
    if k <= 0:
        return _NONE
    if k >= x.shape_numel:
        return _ALL
    return x.stats[("top", i, k)]


class _Rules:
    """Per-source keep rules of one tensor and candidate (the kernels' ``kind``, ``cut``, ``keys``, ``thr``)."""

    def __init__(self, m, x: TensorInputs, p: TensorParams):
        n = len(x.models)
        self.kind = np.zeros(n, np.int64)
        self.cut = np.zeros((n, 2, 3), np.int64)
        self.cut[:, 0], self.cut[:, 1] = _ALL, _NONE  # keep all, as a band (the kernels' unrolled loops)
        self.keys = np.zeros(n, np.uint64)
        self.thr = np.full(n, counter_stream.ONE, np.int64)  # keep all, as a draw
        numel = x.shape_numel
        bands: dict[int, tuple[int, int]] = {}
        for i in range(n):
            density = p.per_model["density"][i] if m.sparsifier else 1.0
            if m.sparsifier is None or density >= 1:
                continue
            if m.sparsifier == "random":
                self.kind[i] = 2
                self.keys[i] = counter_stream.stream_key(x.seed, x.models[i], x.name)
                self.thr[i] = counter_stream.threshold(density)
                continue
            self.kind[i] = 1
            if m.sparsifier == "magnitude":
                bands[i] = max(1, int(density * numel)), 0
            else:  # outliers: drop the gamma largest, then the smallest
                target = int(density * numel)
                n_bot = max(0, numel - target - int(p.per_model["gamma"][i] * numel))
                bands[i] = numel - n_bot, numel - n_bot - target
        _top_counts(x, [(i, k) for i, band in bands.items() for k in band if 0 < k < numel])
        for i, (hi, lo) in bands.items():
            self.cut[i, 0] = _cut(x, i, hi)
            self.cut[i, 1] = _cut(x, i, lo)

    def seen(self, x: TensorInputs) -> np.ndarray:
        """Ties kept so far in this pass, per source and cut-off (carried from chunk to chunk)."""
        return x.stats.setdefault(("seen", x.pass_id), np.zeros((len(x.models), 2), np.int64))


def _l1_factors(x: TensorInputs, rules: _Rules) -> list[float]:
    """Per source, ``sum |d_i| / sum |kept d_i|`` over the whole tensor (1.0 where either is ~0)."""
    sums = np.zeros((len(x.models), 2))
    if rules.kind.any():
        for chunk in x.chunks():
            c = _Chunk(chunk)
            K.ta_l1(c.base, tuple(c.srcs), c.index0, rules.kind, rules.cut, rules.seen(chunk), rules.keys,
                    rules.thr, sums, _scratch(chunk, 4))
    return [float(b / a) if k and b >= _EPS and a >= _EPS else 1.0 for (b, a), k in zip(sums, rules.kind)]


def weighted_sum(x: TensorInputs, coefs: list[float], out: torch.Tensor) -> Optional[float]:
    """``out = sum_i coefs[i] * source_i`` (the linear method) with the fused kernel: the largest ``|value|``
    written, or None (nothing done) where it cannot."""
    if not (ENABLED and x.device.type == "cpu" and len(coefs) > 1 and out.dtype in OUT_DTYPES
            and out.is_contiguous()):
        return None
    srcs = [as_kernel_array(x.stored_source(i)) for i in range(len(coefs))]
    if any(s is None for s in srcs) or len({s.dtype for s in srcs}) != 1:
        return None
    return peak_value(K.linear_combination(srcs[0], tuple(srcs[1:]), np.float32(coefs[0]),
                                           np.asarray(coefs[1:], np.float32), as_kernel_array(out), _scratch(x, 1)))


def merge(m, x: TensorInputs, p: TensorParams, out: torch.Tensor) -> Optional[float]:
    """Merge this chunk into ``out`` with the fused kernels: the largest ``|value|`` written, or None (nothing
    done) where they cannot read it."""
    c = _Chunk(x)
    if not c.ok or out.dtype not in OUT_DTYPES or not out.is_contiguous():
        return None
    n = len(x.models)
    dest = as_kernel_array(out)
    if m.sparsifier is None and not m.consensus:
        coef = linear_coefficients(p)
        return peak_value(K.linear_combination(c.base, tuple(c.srcs), np.float32(1.0 - sum(coef)),
                                               np.asarray(coef, np.float32), dest, _scratch(x, 1)))
    rules = x.stat("rules", lambda: _Rules(m, x, p))
    factor = np.ones(n, np.float32)
    if p.shared.get("rescale", False):
        factor[:] = x.stat("l1", lambda: _l1_factors(x, rules))
    weights = torch.tensor(p.per_model["weight"], dtype=torch.float32)
    divisor = weights.sum()
    if divisor.abs() < 1e-8:
        divisor = torch.ones_like(divisor)
    lam = p.shared["lambda"]
    kernel = K.TA_MERGE[int(rules.kind.max())]  # one rule per method: its sources' largest kind
    return peak_value(kernel(c.base, tuple(c.srcs), c.index0, rules.kind, rules.cut, rules.seen(x), rules.keys,
                             rules.thr, factor, weights.numpy(), bool(m.consensus), bool(p.shared["normalize"]),
                             np.float32(divisor), np.float32(lam), lam != 1, dest, _scratch(x, n + 6)))
