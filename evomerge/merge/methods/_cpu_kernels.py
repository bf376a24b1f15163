"""Fused CPU kernels of the task-arithmetic family (numba, compiled on first use and cached on disk).

One kernel call handles one chunk: it reads the stored sources in their own dtype, upcasting each element at its
first use, and does a method's whole per-element work (task vector, magnitude or random keep rule, rescale,
weights, sign election, disjoint mean) in one pass, block by block, with no chunk-sized temporaries; results
are written in the destination's dtype as they are made. ``nogil``: the merge threads
(:class:`evomerge.merge.engine.TensorPool`) run them side by side. The arithmetic is the float32 arithmetic of
the torch kernels in :mod:`evomerge.merge.methods._ta_kernels`, operation by operation (tests compare the two
bit for bit).

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
SPAN = 16 * BLOCK  # elements per call of an unrolled loop (no scratch: only the call's cost to spread)

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




@njit(error_model="numpy")
def _base_block(base, s, bb, m):
    x = base[s:s + m]
    for j in range(m):
        bb[j] = at(x, j)


@njit(error_model="numpy")
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


@njit(error_model="numpy")
def _tie_rules(cut, seen, ties):
    """Per source, how the next span keeps entries equal to its cut-off values: the lower one's kept when all of
    them are, or (optimistically) while fewer than ``need`` were seen; the upper one's when ``need`` of them were
    seen already (its first ``need`` are among the largest, so out of the band)."""
    for i in range(cut.shape[0]):
        need0, eq0, need1, eq1 = cut[i, 0, 1], cut[i, 0, 2], cut[i, 1, 1], cut[i, 1, 2]
        ties[i, 0] = need0 == eq0 or seen[i, 0] < need0
        ties[i, 1] = need1 != eq1 and seen[i, 1] >= need1


@njit(error_model="numpy")
def _ties_fit(base, srcs, s, e, cut, seen):
    """Whether the span ``[s, e)`` kept its ties as index order keeps them (no cut-off falls inside it), counting
    them into ``seen`` if so: only the cut-offs whose ties are still partly kept are counted (the others' ties
    are decided whatever their count)."""
    counts = np.zeros(seen.shape, np.int64)
    xb = base[s:e]
    for i in range(cut.shape[0]):
        x = srcs[i][s:e]
        for c in range(2):
            v, need, eq = np.int32(cut[i, c, 0]), cut[i, c, 1], cut[i, c, 2]
            if need == eq or seen[i, c] >= need:
                continue
            count = 0
            for j in range(e - s):
                count += magnitude_bits(at(x, j) - at(xb, j)) == v
            if seen[i, c] + count > need:
                return False
            counts[i, c] = count
    for i in range(cut.shape[0]):
        seen[i, 0] += counts[i, 0]
        seen[i, 1] += counts[i, 1]
    return True


@njit(inline="always")
def _ta_merge(mode, base, srcs, index0, kind, cut, seen, keys, thr, factor, weight, consensus, normalize, divisor,
              lam, apply_lam, out, buf):
    n = len(srcs)
    total = out.shape[0]
    bb, d = buf[n], buf[n + 1]
    ties = np.zeros((n, 2), np.int64)
    peak = np.int32(0)
    for s0 in range(0, total, SPAN):
        e0 = min(total, s0 + SPAN)
        if n <= MAX_UNROLLED:
            if mode == 1:
                _tie_rules(cut, seen, ties)
            got, hits = merge_block(srcs, mode, base, s0, e0 - s0, index0 + s0, cut, ties, keys, thr, factor,
                                    weight, consensus, normalize, divisor, lam, apply_lam, out)
            if not hits or _ties_fit(base, srcs, s0, e0, cut, seen):
                peak = max(peak, got)
                continue
        for s in range(s0, e0, BLOCK):  # ties in index order (a cut-off inside this span), or many sources
            e = min(e0, s + BLOCK)
            m = e - s
            _base_block(base, s, bb, m)
            for i in range(n):
                _keep_block(kind[i], cut, seen, i, keys[i], thr[i], srcs[i], s, index0 + s, bb, d, buf[i], m,
                            factor[i], weight[i])
            got = _combine_any(buf, n, weight, consensus, normalize, divisor, lam, apply_lam, bb, out, s, m)
            peak = max(peak, got)
    return peak


# One compiled kernel per keep rule (``kind.max()``: a method's sources share one rule), so a method compiles
# only its own loop. Each: one chunk of the task-arithmetic family into ``out`` (float32, or bfloat16 bits as
# int16); returns the largest magnitude's bits (:func:`magnitude_bits`) of the float32 results. ``buf``: float32
# ``[n + 6, BLOCK]``. Up to MAX_UNROLLED sources, a span is merged in one loop over its elements (every
# source's rule inline); the one span per cut-off where index order decides which ties are kept is merged
# again by the generic path. A source whose rule keeps all has ``cut`` / ``thr`` that keep all too.
@njit(nogil=True, cache=True, error_model="numpy")
def ta_merge_all(base, srcs, index0, kind, cut, seen, keys, thr, factor, weight, consensus, normalize, divisor, lam,
                 apply_lam, out, buf):
    return _ta_merge(0, base, srcs, index0, kind, cut, seen, keys, thr, factor, weight, consensus, normalize,
                     divisor, lam, apply_lam, out, buf)


@njit(nogil=True, cache=True, error_model="numpy")
def ta_merge_band(base, srcs, index0, kind, cut, seen, keys, thr, factor, weight, consensus, normalize, divisor,
                  lam, apply_lam, out, buf):
    return _ta_merge(1, base, srcs, index0, kind, cut, seen, keys, thr, factor, weight, consensus, normalize,
                     divisor, lam, apply_lam, out, buf)


@njit(nogil=True, cache=True, error_model="numpy")
def ta_merge_random(base, srcs, index0, kind, cut, seen, keys, thr, factor, weight, consensus, normalize, divisor,
                    lam, apply_lam, out, buf):
    return _ta_merge(2, base, srcs, index0, kind, cut, seen, keys, thr, factor, weight, consensus, normalize,
                     divisor, lam, apply_lam, out, buf)


TA_MERGE = (ta_merge_all, ta_merge_band, ta_merge_random)  # by kind.max()


@njit(error_model="numpy")
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
_MERGE_TEMPLATE = """
def merge_{n}_{mode}(base, srcs, s, m, index, cut, ties, keys, thr, factor, weight, consensus, normalize,
                     divisor, lam, apply_lam, out):
    one = np.float32(1.0)
    zero = np.float32(0.0)
    xb = base[s:s + m]
    o = out[s:s + m]
    peak = np.int32(0)
    hits = False  # rule 1: a magnitude equal to a cut-off value (an OR: vectorises better than a count)
    {setup}
    if consensus:
        for j in range(m):
            b = at(xb, j)
            {rules}
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
            v = b + v
            peak = max(peak, magnitude_bits(v))
            put(o, j, v)
    else:
        for j in range(m):
            b = at(xb, j)
            {rules}
            v = {total}
            if normalize:
                v = v / divisor
            if apply_lam:
                v = v * lam
            v = b + v
            peak = max(peak, magnitude_bits(v))
            put(o, j, v)
    return peak, hits
"""
_SETUP = ("x{i} = srcs[{i}][s:s + m]; f{i} = factor[{i}]; wt{i} = weight[{i}]",
          "x{i} = srcs[{i}][s:s + m]; f{i} = factor[{i}]; wt{i} = weight[{i}]; "
          "lo{i} = np.int32(cut[{i}, 0, 0]); hi{i} = np.int32(cut[{i}, 1, 0]); "
          "kl{i} = ties[{i}, 0] != 0; kh{i} = ties[{i}, 1] != 0",
          "x{i} = srcs[{i}][s:s + m]; f{i} = factor[{i}]; wt{i} = weight[{i}]; k{i} = keys[{i}]; t{i} = thr[{i}]")
_RULE = ("d = at(x{i}, j) - b\n            w{i} = (d * f{i}) * wt{i}",
         "d = at(x{i}, j) - b\n            bits = magnitude_bits(d)\n"
         "            hits = hits | (bits == lo{i}) | (bits == hi{i})\n"
         "            keep = (((bits > lo{i}) | ((bits == lo{i}) & kl{i}))\n"
         "                    & ((bits < hi{i}) | ((bits == hi{i}) & kh{i})))\n"
         "            w{i} = ((d if keep else d * zero) * f{i}) * wt{i}",
         "d = at(x{i}, j) - b\n"
         "            w{i} = ((d if counter_u24(k{i}, index + j) < t{i} else d * zero) * f{i}) * wt{i}")
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


def _unrolled(template: str, name: str, **parts):
    """A kernel piece with its sources unrolled (one loop, values in registers: ~3x faster than a loop over
    sources). Generated from the fixed templates above, never from input."""
    code = template.format(**parts)
    scope = {"np": np, "at": at, "put": put, "magnitude_bits": magnitude_bits, "counter_u24": counter_u24}
    exec(compile(code, f"<evomerge {name}>", "exec"), scope)  # noqa: S102 - a fixed template
    return njit(error_model="numpy")(scope[name])


def _merge_for(n: int, mode: int):
    """The block merge of ``n`` sources under keep rule ``mode`` (``kind`` 0, 1 or 2)."""
    def each(text: str, sep: str) -> str:
        return sep.join(text.format(i=i) for i in range(n))
    return _unrolled(_MERGE_TEMPLATE, f"merge_{n}_{mode}", n=n, mode=mode, setup=each(_SETUP[mode], "\n    "),
                     rules=each(_RULE[mode], "\n            "),
                     total=" + ".join(f"w{i}" for i in range(n)),  # left to right: the order of the generic sum
                     agree=each(_AGREE, "\n            "))


def _linear_for(n: int):
    return _unrolled(_LINEAR_TEMPLATE, f"linear_{n}", n=n,
                     rows="\n    ".join(f"s{i} = srcs[{i}]; c{i} = coefs[{i}]" for i in range(n)),
                     adds="\n        ".join(f"v = v + at(s{i}, j) * c{i}" for i in range(n)))


_MERGERS = {n: tuple(_merge_for(n, mode) for mode in range(3)) for n in range(1, MAX_UNROLLED + 1)}
_LINEARS = {n: _linear_for(n) for n in range(1, MAX_UNROLLED + 1)}


def merge_block(srcs, mode, base, s, m, index, cut, ties, keys, thr, factor, weight, consensus, normalize,
                divisor, lam, apply_lam, out):  # pragma: no cover - replaced by the overload below inside numba
    raise NotImplementedError


@overload(merge_block, jit_options={"error_model": "numpy"})
def _merge_block_impl(srcs, mode, base, s, m, index, cut, ties, keys, thr, factor, weight, consensus,
                      normalize, divisor, lam, apply_lam, out):
    """A span merged element by element: every source's task vector, keep rule, rescale and weight, the sum, the
    elected sign (+1 where the sum is >= 0, NaN stays NaN), the agreeing entries and their weights, the
    (disjoint) mean, lambda, plus the base. Rule 1 keeps the entries equal to a cut-off value as ``ties`` says.
    Returns (peak bits, whether a magnitude equals a cut-off value)."""
    fs = _MERGERS[min(len(srcs), MAX_UNROLLED)]
    f = fs[mode.literal_value] if isinstance(mode, types.IntegerLiteral) else None

    def impl(srcs, mode, base, s, m, index, cut, ties, keys, thr, factor, weight, consensus, normalize,
             divisor, lam, apply_lam, out):
        return f(base, srcs, s, m, index, cut, ties, keys, thr, factor, weight, consensus, normalize,
                 divisor, lam, apply_lam, out)
    return impl if f is not None else None


@njit(error_model="numpy", fastmath={"reassoc"})
def _abs_sum(a, m):
    """``sum |a[:m]|`` in float64; reassociated into vectorised partial sums (a fixed order per compiled kernel,
    and the float64 sums of float32 entries round to the same float32 factor whatever the order)."""
    x = a[:m]
    total = 0.0
    for j in range(m):
        total += np.float64(abs(x[j]))
    return total


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
            if kind[i] == 2:
                all_, kept = _random_l1(srcs[i][s:e], bb, keys[i], thr[i], index0 + s, m)
                sums[i, 0] += all_
                sums[i, 1] += kept
                continue
            _keep_block(kind[i], cut, seen, i, keys[i], thr[i], srcs[i], s, index0 + s, bb, d, w, m, one, one)
            sums[i, 0] += _abs_sum(d, m)
            sums[i, 1] += _abs_sum(w, m)


@njit(error_model="numpy", fastmath={"reassoc"})
def _random_l1(x, bb, key, thr, index, m):
    """``(sum |d|, sum |kept d|)`` of one block under a random keep rule, in one loop (sums as in
    :func:`_abs_sum`)."""
    total = 0.0
    kept = 0.0
    for j in range(m):
        a = np.float64(abs(at(x, j) - bb[j]))
        total += a
        kept += a if counter_u24(key, index + j) < thr else 0.0
    return total, kept


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


@njit(nogil=True, cache=True, error_model="numpy")
def bucket_bits(base, srcs, which, buckets, filled, vals, buf):
    """Appends to ``vals[p]`` (from ``filled[p]`` on, which it advances) the magnitudes' float32 bits of the
    entries of ``srcs[which[p]] - base`` whose high 15 bits equal ``buckets[p]``; ``vals[p]`` has room for them
    and 8 more. A vectorised pass marks the few entries in the bucket; 8 marks are tested at once, and the
    marked entries are appended without a branch. ``buf``: float32 ``[3, BLOCK]``."""
    total = base.shape[0]
    bb = buf[0]
    kb = buf[1].view(np.int32)
    fl = buf[2].view(np.uint8)  # a mark per entry (its first BLOCK bytes), read 8 at a time through words
    words = buf[2].view(np.uint64)
    for s in range(0, total, BLOCK):
        e = min(total, s + BLOCK)
        m = e - s
        _base_block(base, s, bb, m)
        for p in range(which.shape[0]):
            x = srcs[which[p]][s:e]
            bucket = buckets[p]
            for j in range(m):
                bits = magnitude_bits(at(x, j) - bb[j])
                kb[j] = bits
                fl[j] = (bits >> 16) == bucket
            for j in range(m, BLOCK):
                fl[j] = 0
            row = vals[p]
            c = filled[p]
            for w in range((m + 7) // 8):
                if words[w]:
                    for j in range(8 * w, 8 * w + 8):
                        row[c] = kb[j]
                        c += fl[j]
            filled[p] = c


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


@overload(_linear_unrolled, jit_options={"error_model": "numpy"})
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
