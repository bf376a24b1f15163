"""Fused CPU kernels of the task-arithmetic family (numba, compiled on first use and cached on disk).

One kernel call handles one chunk: it reads the stored sources in their own dtype, upcasting each element at its
first use, and does a method's whole per-element work (task vector, magnitude or random keep rule, rescale,
weights, sign election, disjoint mean) in one pass, block by block, with no chunk-sized temporaries; results
are written in the destination's dtype as they are made. ``nogil``: the merge threads
(:class:`evomerge.merge.engine.TensorPool`) run them side by side. The arithmetic is the float32 arithmetic of the torch kernels in
:mod:`evomerge.merge.methods._ta_kernels`, operation by operation (tests compare the two bit for bit).

Keep rules per source (``kind``): 0 keeps every entry; 1 keeps the entries inside a band of magnitudes, among
the ``hi`` largest and not among the ``lo`` largest (TIES: no ``lo``; Breadcrumbs: both), each cut-off given as
``(value bits, need, n_equal)`` with ties kept in index order (``seen`` carries the count across chunks);
2 keeps entry ``j`` where the counter stream of :mod:`evomerge.merge.counter_stream` is below a threshold.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from evomerge.merge.counter_stream import FINAL_SHIFT, M1, M2, M3, S1, S2, S3

BLOCK = 1024  # elements per inner block: a block of every task vector and the outputs stay in L1

# Element access. Stored arrays as the kernels see them: float32; bfloat16 bits as int16 (the high half of a
# float32); float16 bits as uint16 (widened by the CPU's half-precision instruction: exact). A destination is
# float32 or bfloat16 bits as int16, rounded to nearest even with NaN as 0x7FC0, as torch casts. Read and
# written inside the loops, so the upcast is fused with its first use and the loops still vectorise. (One
# module for every cached kernel and what it inlines: numba's disk cache only notices changes to this file.)


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose bits are the int32 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def bits_from_f32(typingctx, value):
    """The bits of a float32 as uint32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@intrinsic
def f32_from_half(typingctx, bits):
    """The float16 whose bits are the uint16 ``bits``, widened to float32 (exact)."""
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


def at(src, j):  # pragma: no cover - replaced by the overload below inside numba
    raise NotImplementedError


@overload(at, inline="always")
def _at_impl(src, j):
    """``src[j]`` as float32, whatever the stored dtype."""
    if src.dtype == types.int16:
        return lambda src, j: f32_from_bits(np.int32(np.int32(src[j]) << np.int32(16)))
    if src.dtype == types.uint16:
        return lambda src, j: f32_from_half(src[j])
    return lambda src, j: src[j]


def put(out, j, value):  # pragma: no cover - replaced by the overload below inside numba
    raise NotImplementedError


@overload(put, inline="always")
def _put_impl(out, j, value):
    """``out[j] = value`` in the destination's dtype (float32, or bfloat16 bits as int16)."""
    if out.dtype == types.int16:
        def bf16(out, j, value):
            x = bits_from_f32(value)
            r = (x + np.uint32(0x7FFF) + ((x >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            nan = np.uint32((x & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000))
            out[j] = np.int16(r + nan * (np.uint32(0x7FC0) - r))  # branch-free: 0x7FC0 for NaN (low 16 bits)
        return bf16

    def f32(out, j, value):
        out[j] = value
    return f32


@njit(inline="always")
def magnitude_bits(value):
    """The bits of ``|value|`` as a non-negative int32 (their order is the order of the magnitudes)."""
    return np.int32(bits_from_f32(value) & np.uint32(0x7FFFFFFF))


@njit(inline="always")
def counter_u24(key, index):
    """24 uniform bits, a pure function of (key, element index) (splitmix64's finaliser)."""
    z = np.uint64(key) + np.uint64(index) * np.uint64(M1)
    z = (z ^ (z >> np.uint64(S1))) * np.uint64(M2)
    z = (z ^ (z >> np.uint64(S2))) * np.uint64(M3)
    z = z ^ (z >> np.uint64(S3))
    return z >> np.uint64(FINAL_SHIFT)




@njit(inline="always")
def _base_block(base, s, bb, m):
    x = base[s:s + m]
    for j in range(m):
        bb[j] = at(x, j)


@njit(inline="always")
def _keep_block(kind, cut, seen, i, key, thr, src, s, index, bb, d, w, m, f, wt):
    """``d[:m]`` = source ``i``'s task vector on the block at ``s`` (``bb``: the base's); ``w[:m]`` = ``(d * f) * wt``
    where its rule keeps an entry, ``((d * 0) * f) * wt`` elsewhere."""
    zero = np.float32(0.0)
    x = src[s:s + m]  # slices, loops from 0, and few arrays per loop: what keeps the loops vectorised
    for j in range(m):
        d[j] = at(x, j) - bb[j]
    if kind == 0:
        for j in range(m):
            w[j] = (d[j] * f) * wt
    elif kind == 1:  # among the cut[i, 0] largest and not among the cut[i, 1] largest; ties in index order
        v0, need0, eq0 = np.int32(cut[i, 0, 0]), cut[i, 0, 1], cut[i, 0, 2]
        v1, need1, eq1 = np.int32(cut[i, 1, 0]), cut[i, 1, 1], cut[i, 1, 2]
        hits = 0
        for j in range(m):  # branch-free while no magnitude equals a cut-off value (the common case)
            v = d[j]
            bits = magnitude_bits(v)
            hits += (bits == v0) | (bits == v1)
            w[j] = ((v if (bits > v0) & (bits < v1) else v * zero) * f) * wt
        if hits:  # the entries equal to a cut-off value again, in index order, counting the ties kept
            s0, s1 = seen[i, 0], seen[i, 1]
            for j in range(m):
                bits = magnitude_bits(d[j])
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
                w[j] = ((d[j] if keep else d[j] * zero) * f) * wt
            seen[i, 0], seen[i, 1] = s0, s1
    else:
        for j in range(m):
            v = d[j]
            w[j] = ((v if counter_u24(key, index + j) < thr else v * zero) * f) * wt


@njit(nogil=True, cache=True, error_model="numpy")
def ta_merge(base, srcs, index0, kind, cut, seen, keys, thr, factor, weight, consensus, normalize, divisor, lam,
             apply_lam, out, buf):
    """One chunk of the task-arithmetic family into ``out`` (float32, or bfloat16 bits as int16); returns the
    largest magnitude's bits (:func:`magnitude_bits`) of the float32 results. ``buf``: float32 ``[n + 6, BLOCK]``."""
    n = len(srcs)
    total = out.shape[0]
    bb, d = buf[n], buf[n + 1]
    peak = np.int32(0)
    for s in range(0, total, BLOCK):
        e = min(total, s + BLOCK)
        m = e - s
        _base_block(base, s, bb, m)
        for i in range(n):
            _keep_block(kind[i], cut, seen, i, keys[i], thr[i], srcs[i], s, index0 + s, bb, d, buf[i], m,
                        factor[i], weight[i])
        if n <= MAX_UNROLLED:
            got = combine(srcs, buf, weight, consensus, normalize, divisor, lam, apply_lam, bb, out, s, m)
        else:
            got = _combine_any(buf, n, weight, consensus, normalize, divisor, lam, apply_lam, bb, out, s, m)
        peak = max(peak, got)
    return peak


@njit(inline="always")
def _combine_any(buf, n, weight, consensus, normalize, divisor, lam, apply_lam, b, out, s, m):
    """The merged block from the weighted, kept task vectors ``buf[:n]`` (any n; see :func:`combine`)."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    mixed, sign, acc, div = buf[n + 2], buf[n + 3], buf[n + 4], buf[n + 5]
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
    o = out[s:s + m]
    peak = np.int32(0)
    for j in range(m):
        v = mixed[j]
        if normalize:
            v = v / div[j]
        if apply_lam:
            v = v * lam
        v = b[j] + v
        peak = max(peak, magnitude_bits(v))
        put(o, j, v)
    return peak


MAX_UNROLLED = 8
_COMBINE_TEMPLATE = """
def combine_{n}(buf, weight, consensus, normalize, divisor, lam, apply_lam, b, out, s, m):
    one = np.float32(1.0)
    zero = np.float32(0.0)
    o = out[s:s + m]
    peak = np.int32(0)
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
            v = b[j] + v
            peak = max(peak, magnitude_bits(v))
            put(o, j, v)
    else:
        for j in range(m):
            {loads}
            v = {total}
            if normalize:
                v = v / divisor
            if apply_lam:
                v = v * lam
            v = b[j] + v
            peak = max(peak, magnitude_bits(v))
            put(o, j, v)
    return peak
"""
_AGREE = """a = w{i} * sg
            pos = a > zero
            nan = a != a
            acc = acc + (a if pos | nan else zero)
            dv = dv + (wt{i} if pos else (a if nan else zero))"""
_LINEAR_TEMPLATE = """
def linear_{n}(base, srcs, base_coef, coefs, out):
    {rows}
    peak = np.int32(0)
    for j in range(out.shape[0]):
        v = at(base, j) * base_coef
        {adds}
        peak = max(peak, magnitude_bits(v))
        put(out, j, v)
    return peak
"""


def _unrolled(template: str, name: str, n: int, **parts):
    """A kernel piece with its ``n`` sources unrolled (one loop, values in registers: ~3x faster than a loop
    over sources). Generated from the fixed templates above, never from input."""
    code = template.format(n=n, **parts)
    scope = {"np": np, "at": at, "put": put, "magnitude_bits": magnitude_bits}
    exec(compile(code, f"<evomerge {name}_{n}>", "exec"), scope)  # noqa: S102 - a fixed template
    return njit(inline="always")(scope[f"{name}_{n}"])


def _combine_for(n: int):
    return _unrolled(_COMBINE_TEMPLATE, "combine", n,
                     rows="\n    ".join(f"r{i} = buf[{i}]; wt{i} = weight[{i}]" for i in range(n)),
                     loads="\n            ".join(f"w{i} = r{i}[j]" for i in range(n)),
                     total=" + ".join(f"w{i}" for i in range(n)),  # left to right: the order of the generic sum
                     agree="\n            ".join(_AGREE.format(i=i) for i in range(n)))


def _linear_for(n: int):
    return _unrolled(_LINEAR_TEMPLATE, "linear", n,
                     rows="\n    ".join(f"s{i} = srcs[{i}]; c{i} = coefs[{i}]" for i in range(n)),
                     adds="\n        ".join(f"v = v + at(s{i}, j) * c{i}" for i in range(n)))


_COMBINERS = {n: _combine_for(n) for n in range(1, MAX_UNROLLED + 1)}
_LINEARS = {n: _linear_for(n) for n in range(1, MAX_UNROLLED + 1)}


def combine(srcs, buf, weight, consensus, normalize, divisor, lam, apply_lam, b, out, s, m):  # pragma: no cover
    raise NotImplementedError


@overload(combine, inline="always")
def _combine_impl(srcs, buf, weight, consensus, normalize, divisor, lam, apply_lam, b, out, s, m):
    """The merged block from the weighted, kept task vectors: the sum, the elected sign (+1 where the sum is
    >= 0, NaN stays NaN), the agreeing entries and their weights, the (disjoint) mean, lambda, plus the base."""
    unrolled = _COMBINERS[min(len(srcs), MAX_UNROLLED)]

    def impl(srcs, buf, weight, consensus, normalize, divisor, lam, apply_lam, b, out, s, m):
        return unrolled(buf, weight, consensus, normalize, divisor, lam, apply_lam, b, out, s, m)
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
def ta_l1(base, srcs, index0, kind, cut, seen, keys, thr, sums, buf):
    """Adds ``(sum |d_i|, sum |kept d_i|)`` on one chunk to ``sums[i]`` (float64) for every source whose rule
    drops entries; the base is read once. ``buf``: float32 ``[3, BLOCK]``."""
    total = base.shape[0]
    bb, d, w = buf[0], buf[1], buf[2]
    one = np.float32(1.0)
    for s in range(0, total, BLOCK):
        e = min(total, s + BLOCK)
        m = e - s
        _base_block(base, s, bb, m)
        for i in range(len(srcs)):
            if kind[i] == 0:
                continue
            _keep_block(kind[i], cut, seen, i, keys[i], thr[i], srcs[i], s, index0 + s, bb, d, w, m, one, one)
            sums[i, 0] += _abs_sum(d, m)
            sums[i, 1] += _abs_sum(w, m)


@njit(nogil=True, cache=True, error_model="numpy")
def abs_bits_hists(base, srcs, which, buckets, hists, buf):
    """Histograms of the magnitudes' float32 bits of ``srcs[which[p]] - base``, one row of ``hists`` per ``p``:
    ``buckets[p] < 0``: of the high 15 bits (32768 bins); else of the low 16 bits of the entries whose high
    bits equal ``buckets[p]`` (65536 bins). The base is read once for all of them. ``buf``: float32
    ``[1, BLOCK]``."""
    total = base.shape[0]
    bb = buf[0]
    for s in range(0, total, BLOCK):
        e = min(total, s + BLOCK)
        m = e - s
        _base_block(base, s, bb, m)
        for p in range(which.shape[0]):
            x = srcs[which[p]][s:e]
            hist = hists[p]
            bucket = buckets[p]
            if bucket < 0:
                for j in range(m):
                    hist[magnitude_bits(at(x, j) - bb[j]) >> 16] += 1
            else:
                for j in range(m):
                    bits = magnitude_bits(at(x, j) - bb[j])
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


def _linear_unrolled(base, srcs, base_coef, coefs, out):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_linear_unrolled, inline="always")
def _linear_unrolled_impl(base, srcs, base_coef, coefs, out):
    unrolled = _LINEARS[min(max(len(srcs), 1), MAX_UNROLLED)]

    def impl(base, srcs, base_coef, coefs, out):
        return unrolled(base, srcs, base_coef, coefs, out)
    return impl


@njit(nogil=True, cache=True, error_model="numpy")
def linear_combination(base, srcs, base_coef, coefs, out, buf):
    """``out = base * base_coef + sum_i coefs[i] * srcs[i]`` (added in source order; float32 arithmetic, ``out``
    as in :func:`ta_merge`, and so is what it returns): one loop over the elements for up to MAX_UNROLLED
    sources, else block by block. ``buf``: float32 ``[1, BLOCK]``."""
    n = len(srcs)
    if 1 <= n <= MAX_UNROLLED:
        return _linear_unrolled(base, srcs, base_coef, coefs, out)
    total = out.shape[0]
    o = buf[0]
    peak = np.int32(0)
    for s in range(0, total, BLOCK):
        e = min(total, s + BLOCK)
        m = e - s
        x = base[s:e]
        for j in range(m):
            o[j] = at(x, j) * base_coef
        for i in range(n):
            x = srcs[i][s:e]
            c = coefs[i]
            for j in range(m):
                o[j] = o[j] + at(x, j) * c
        dest = out[s:e]
        for j in range(m):
            peak = max(peak, magnitude_bits(o[j]))
            put(dest, j, o[j])
    return peak
