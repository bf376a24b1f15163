"""Fused CPU kernels of the task-arithmetic family (numba, compiled on first use and cached on disk).

One kernel call handles one chunk: it reads the stored sources in their own dtype (float32, bfloat16 bits as
int16, float16 bits as uint16), upcasts inside the loop, and does a method's whole per-element work (task
vector, magnitude or random keep rule, rescale, weights, sign election, disjoint mean) in one pass, block by
block, with no chunk-sized temporaries. ``nogil``: the merge threads (:class:`evomerge.merge.engine.TensorPool`)
run them side by side. The arithmetic is the float32 arithmetic of the torch kernels in
:mod:`evomerge.merge.methods._ta_kernels`, operation by operation (tests compare the two bit for bit).

Keep rules per source (``kind``): 0 keeps every entry; 1 keeps the entries inside a band of magnitudes, among
the ``hi`` largest and not among the ``lo`` largest (TIES: no ``lo``; Breadcrumbs: both), each cut-off given as
``(value bits, need, n_equal)`` with ties kept in index order (``seen`` carries the count across chunks);
2 keeps entry ``j`` where the counter stream of :mod:`evomerge.merge.counter_stream` is below a threshold.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from evomerge.merge.counter_stream import FINAL_SHIFT, M1, M2, M3, S1, S2, S3

BLOCK = 1024  # elements per inner block: a source block, its task vector and the outputs stay in L1


def load(src, start, stop, buf, lut):  # pragma: no cover - replaced by the overload below inside numba
    raise NotImplementedError


@overload(load, inline="always")
def _load_impl(src, start, stop, buf, lut):
    """``src[start:stop]`` as float32: a view for float32, else upcast into ``buf``."""
    if src.dtype == types.int16:  # bfloat16 bits: the high half of a float32
        def bf16(src, start, stop, buf, lut):
            part = src[start:stop]  # a slice first: the loop then vectorises
            u = buf.view(np.int32)
            for j in range(part.shape[0]):
                u[j] = np.int32(part[j]) << 16
            return buf[: stop - start]
        return bf16
    if src.dtype == types.uint16:  # float16 bits: a 64K-entry table (exact, subnormals and all)
        def fp16(src, start, stop, buf, lut):
            part = src[start:stop]
            for j in range(part.shape[0]):
                buf[j] = lut[part[j]]
            return buf[: stop - start]
        return fp16

    def f32(src, start, stop, buf, lut):
        return src[start:stop]
    return f32


def out_block(out, start, stop, res):  # pragma: no cover - replaced by the overload below inside numba
    raise NotImplementedError


@overload(out_block, inline="always")
def _out_block_impl(out, start, stop, res):
    """Where a block's float32 results go: ``out[start:stop]`` itself, or ``res`` for a bfloat16 ``out``."""
    if out.dtype == types.int16:
        return lambda out, start, stop, res: res[: stop - start]
    return lambda out, start, stop, res: out[start:stop]


def flush(out, start, stop, res):  # pragma: no cover - replaced by the overload below inside numba
    raise NotImplementedError


@overload(flush, inline="always")
def _flush_impl(out, start, stop, res):
    """Into a bfloat16 ``out`` (int16 bits): ``res`` rounded to nearest even, NaN as 0x7FC0 (torch's cast)."""
    if out.dtype == types.int16:
        def bf16(out, start, stop, res):
            u = res.view(np.uint32)
            o = out[start:stop].view(np.uint16)
            for j in range(stop - start):
                x = u[j]
                r = (x + np.uint32(0x7FFF) + ((x >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
                o[j] = np.uint16(0x7FC0) if (x & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else np.uint16(r)
        return bf16
    return lambda out, start, stop, res: None


@njit(inline="always")
def counter_u24(key, index):
    """24 uniform bits, a pure function of (key, element index) (splitmix64's finaliser)."""
    z = np.uint64(key) + np.uint64(index) * np.uint64(M1)
    z = (z ^ (z >> np.uint64(S1))) * np.uint64(M2)
    z = (z ^ (z >> np.uint64(S2))) * np.uint64(M3)
    z = z ^ (z >> np.uint64(S3))
    return z >> np.uint64(FINAL_SHIFT)


@njit(inline="always")
def _keep_block(kind, cut, seen, i, key, thr, index, d, dbits, w, m):
    """``w[:m]`` = the task vector ``d`` where source ``i``'s rule keeps it, ``d * 0`` elsewhere."""
    zero = np.float32(0.0)
    if kind == 0:
        for j in range(m):
            w[j] = d[j]
    elif kind == 1:  # among the cut[i, 0] largest and not among the cut[i, 1] largest; ties in index order
        v0, need0, eq0 = cut[i, 0, 0], cut[i, 0, 1], cut[i, 0, 2]
        v1, need1, eq1 = cut[i, 1, 0], cut[i, 1, 1], cut[i, 1, 2]
        hits = 0
        for j in range(m):  # branch-free while no magnitude equals a cut-off value (the common case)
            bits = dbits[j] & np.int32(0x7FFFFFFF)
            hits += (bits == v0) | (bits == v1)
            w[j] = d[j] if (bits > v0) & (bits < v1) else d[j] * zero
        if hits:  # the entries equal to a cut-off value again, in index order, counting the ties kept
            s0, s1 = seen[i, 0], seen[i, 1]
            for j in range(m):
                bits = dbits[j] & np.int32(0x7FFFFFFF)
                if bits != v0 and bits != v1:
                    continue
                keep = bits > v0
                if bits == v0:
                    keep = need0 == eq0 or s0 < need0
                    s0 += 1
                if bits > v1:
                    keep = False
                elif bits == v1:
                    if need1 == eq1 or s1 < need1:
                        keep = False
                    s1 += 1
                w[j] = d[j] if keep else d[j] * zero
            seen[i, 0], seen[i, 1] = s0, s1
    else:
        for j in range(m):
            w[j] = d[j] if counter_u24(key, index + j) < thr else d[j] * zero


@njit(nogil=True, cache=True, error_model="numpy")
def ta_merge(base, srcs, lut, index0, kind, cut, seen, keys, thr, factor, weight, consensus, normalize,
             divisor, lam, apply_lam, out, buf):
    """One chunk of the task-arithmetic family into ``out`` (float32, or bfloat16 bits as int16). ``buf``:
    float32 ``[n + 6, BLOCK]``."""
    n = len(srcs)
    total = out.shape[0]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    ld, bb, d = buf[n], buf[n + 1], buf[n + 2]
    dbits = d.view(np.int32)
    for s in range(0, total, BLOCK):
        e = min(total, s + BLOCK)
        m = e - s
        b = load(base, s, e, bb, lut)
        for i in range(n):
            x = load(srcs[i], s, e, ld, lut)
            for j in range(m):
                d[j] = x[j] - b[j]
            w = buf[i]
            _keep_block(kind[i], cut, seen, i, keys[i], thr[i], index0 + s, d, dbits, w, m)
            f = factor[i]
            wt = weight[i]
            if f != one:
                for j in range(m):
                    w[j] = (w[j] * f) * wt
            else:
                for j in range(m):
                    w[j] = w[j] * wt
        o = out_block(out, s, e, ld)
        if n <= MAX_UNROLLED:
            combine(srcs, buf, weight, consensus, normalize, divisor, lam, apply_lam, b, o, m)
        else:
            _combine_any(buf, n, weight, consensus, normalize, divisor, lam, apply_lam, b, o, m)
        flush(out, s, e, ld)


@njit(inline="always")
def _combine_any(buf, n, weight, consensus, normalize, divisor, lam, apply_lam, b, o, m):
    """The merged block from the weighted, kept task vectors ``buf[:n]`` (any n; see :func:`combine`)."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    mixed, sign, acc, div = buf[n + 3], buf[n + 2], buf[n + 4], buf[n + 5]
    w = buf[0]
    for j in range(m):
        mixed[j] = w[j]
    for i in range(1, n):
        w = buf[i]
        for j in range(m):
            mixed[j] = mixed[j] + w[j]
    if consensus:  # sign: +1 where the sum is >= 0 (NaN stays NaN); keep the d_i that agree with it
        for j in range(m):
            v = mixed[j]
            sign[j] = v if v != v else (one if v >= zero else -one)
            acc[j] = zero
            div[j] = zero
        for i in range(n):
            w = buf[i]
            wt = weight[i]
            for j in range(m):
                a = w[j] * sign[j]
                pos = a > zero
                nan = a != a
                acc[j] = acc[j] + (a if pos | nan else zero)
                div[j] = div[j] + (wt if pos else (a if nan else zero))
        for j in range(m):
            mixed[j] = acc[j] * sign[j]
            if div[j] == zero:
                div[j] = one
    else:
        for j in range(m):
            div[j] = divisor
    for j in range(m):
        v = mixed[j]
        if normalize:
            v = v / div[j]
        if apply_lam:
            v = v * lam
        o[j] = b[j] + v


MAX_UNROLLED = 8
_COMBINE_TEMPLATE = """
def combine_{n}(buf, weight, consensus, normalize, divisor, lam, apply_lam, b, o, m):
    one = np.float32(1.0)
    zero = np.float32(0.0)
    {rows}
    if consensus:
        for j in range(m):
            {loads}
            v = {total}
            sg = v if v != v else (one if v >= zero else -one)
            acc = zero
            dv = zero
            {agree}
            v = acc * sg
            dv = one if dv == zero else dv
            if normalize:
                v = v / dv
            if apply_lam:
                v = v * lam
            o[j] = b[j] + v
    else:
        for j in range(m):
            {loads}
            v = {total}
            if normalize:
                v = v / divisor
            if apply_lam:
                v = v * lam
            o[j] = b[j] + v
"""
_AGREE = """a = w{i} * sg
            pos = a > zero
            nan = a != a
            acc = acc + (a if pos | nan else zero)
            dv = dv + (wt{i} if pos else (a if nan else zero))"""


def _combine_for(n: int):
    """:func:`_combine_any` with the sources unrolled (one loop over the block, sums in registers: ~3x faster).
    Generated from the fixed template above, never from input."""
    code = _COMBINE_TEMPLATE.format(
        n=n, rows="\n    ".join(f"r{i} = buf[{i}]; wt{i} = weight[{i}]" for i in range(n)),
        loads="\n            ".join(f"w{i} = r{i}[j]" for i in range(n)),
        total=" + ".join(f"w{i}" for i in range(n)),  # left to right: the order of the generic sum
        agree="\n            ".join(_AGREE.format(i=i) for i in range(n)))
    scope = {"np": np}
    exec(compile(code, f"<evomerge combine_{n}>", "exec"), scope)  # noqa: S102 - a fixed template
    return njit(inline="always")(scope[f"combine_{n}"])


_COMBINERS = {n: _combine_for(n) for n in range(1, MAX_UNROLLED + 1)}


def combine(srcs, buf, weight, consensus, normalize, divisor, lam, apply_lam, b, o, m):  # pragma: no cover
    raise NotImplementedError


@overload(combine, inline="always")
def _combine_impl(srcs, buf, weight, consensus, normalize, divisor, lam, apply_lam, b, o, m):
    """The merged block from the weighted, kept task vectors: the sum, the elected sign (+1 where the sum is
    >= 0, NaN stays NaN), the agreeing entries and their weights, the (disjoint) mean, lambda, plus the base."""
    unrolled = _COMBINERS[min(len(srcs), MAX_UNROLLED)]

    def impl(srcs, buf, weight, consensus, normalize, divisor, lam, apply_lam, b, o, m):
        unrolled(buf, weight, consensus, normalize, divisor, lam, apply_lam, b, o, m)
    return impl


@njit(inline="always")
def _abs_sum(a, m):
    """``sum |a[:m]|`` in float64, over 8 interleaved partial sums (a fixed order: independent chains)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    j = 0
    while j + 8 <= m:
        s0 += abs(a[j])
        s1 += abs(a[j + 1])
        s2 += abs(a[j + 2])
        s3 += abs(a[j + 3])
        s4 += abs(a[j + 4])
        s5 += abs(a[j + 5])
        s6 += abs(a[j + 6])
        s7 += abs(a[j + 7])
        j += 8
    while j < m:
        s0 += abs(a[j])
        j += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(nogil=True, cache=True, error_model="numpy")
def ta_l1(base, srcs, lut, index0, kind, cut, seen, keys, thr, sums, buf):
    """Adds ``(sum |d_i|, sum |kept d_i|)`` on one chunk to ``sums[i]`` (float64) for every source whose rule
    drops entries; the base is read once."""
    total = base.shape[0]
    ld = buf[0]
    bb = buf[1]
    d = buf[2]
    w = buf[3]
    dbits = d.view(np.int32)
    for s in range(0, total, BLOCK):
        e = min(total, s + BLOCK)
        m = e - s
        b = load(base, s, e, bb, lut)
        for i in range(len(srcs)):
            if kind[i] == 0:
                continue
            x = load(srcs[i], s, e, ld, lut)
            for j in range(m):
                d[j] = x[j] - b[j]
            _keep_block(kind[i], cut, seen, i, keys[i], thr[i], index0 + s, d, dbits, w, m)
            sums[i, 0] += _abs_sum(d, m)
            sums[i, 1] += _abs_sum(w, m)


@njit(nogil=True, cache=True, error_model="numpy")
def abs_bits_hists(base, srcs, lut, which, buckets, hists, buf):
    """Histograms of the magnitudes' float32 bits of ``srcs[which[p]] - base``, one row of ``hists`` per ``p``:
    ``buckets[p] < 0``: of the high 15 bits (32768 bins); else of the low 16 bits of the entries whose high
    bits equal ``buckets[p]`` (65536 bins). The base is read once for all of them."""
    total = base.shape[0]
    ld = buf[0]
    bb = buf[1]
    d = buf[2]
    dbits = d.view(np.int32)
    for s in range(0, total, BLOCK):
        e = min(total, s + BLOCK)
        m = e - s
        b = load(base, s, e, bb, lut)
        for p in range(which.shape[0]):
            x = load(srcs[which[p]], s, e, ld, lut)
            for j in range(m):
                d[j] = x[j] - b[j]
            hist = hists[p]
            bucket = buckets[p]
            if bucket < 0:
                for j in range(m):
                    hist[(dbits[j] & np.int32(0x7FFFFFFF)) >> 16] += 1
            else:
                for j in range(m):
                    bits = dbits[j] & np.int32(0x7FFFFFFF)
                    if (bits >> 16) == bucket:
                        hist[bits & 0xFFFF] += 1


@njit(cache=True)
def from_top(hist, k):
    """The bin holding the k-th largest entry, the count in higher bins, and the bin's count."""
    above = 0
    for b in range(hist.shape[0] - 1, -1, -1):
        if above + hist[b] >= k:
            return b, above, hist[b]
        above += hist[b]
    return 0, above - hist[0], hist[0]


@njit(nogil=True, cache=True, error_model="numpy")
def linear_combination(base, srcs, lut, base_coef, coefs, out, buf):
    """``out = base * base_coef + sum_i coefs[i] * srcs[i]`` (added in source order; float32 arithmetic, ``out``
    as in :func:`ta_merge`). ``buf``: float32 ``[3, BLOCK]``."""
    n = len(srcs)
    total = out.shape[0]
    ld = buf[0]
    bb = buf[1]
    for s in range(0, total, BLOCK):
        e = min(total, s + BLOCK)
        m = e - s
        b = load(base, s, e, bb, lut)
        o = out_block(out, s, e, buf[2])
        for j in range(m):
            o[j] = b[j] * base_coef
        for i in range(n):
            x = load(srcs[i], s, e, ld, lut)
            c = coefs[i]
            for j in range(m):
                o[j] = o[j] + x[j] * c
        flush(out, s, e, buf[2])
