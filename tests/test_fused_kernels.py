"""The fused CPU kernels equal the torch kernels bit for bit (every method of the family they serve, float32,
bfloat16 and float16 sources, one chunk or many, ties at the top-k cut-off), and the counter-based random
stream is a pure function of (seed, model, tensor, element index) on both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evomerge.merge import MERGE_METHODS, counter_stream, engine
from evomerge.merge.methods import _ta_fused
from evomerge.merge.registry import TensorParams

METHODS = {
    "task_arithmetic": {},
    "ties": {"density": [0.3, 0.55, 1.0]},
    "dare_ties": {"density": [0.3, 0.55, 0.9]},
    "dare_linear": {"density": [0.3, 0.55, 0.9]},
    "breadcrumbs_ties": {"density": [0.3, 0.55, 0.7], "gamma": [0.01, 0.05, 0.1]},
}
NAME = "model.layers.0.mlp.up_proj.weight"


def params(method: str, rescale: bool, lam: float) -> TensorParams:
    m = MERGE_METHODS.get(method)()
    shared = {s.name: s.default for s in m.params if s.scope == "global"}
    shared.update({"lambda": lam, "rescale": rescale} if "rescale" in shared else {"lambda": lam})
    per_model = {"weight": [0.6, -0.3, 0.5], **METHODS[method]}
    return m, TensorParams(shared, per_model)


def sources(dtype: torch.dtype, quantized: bool, shape=(48, 40)):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(shape, generator=g)
    if quantized:  # few distinct magnitudes (``quantized`` of them, 5 for True): ties straddle every cut-off
        levels = 5 if quantized is True else quantized
        deltas = [torch.randint(-levels, levels + 1, shape, generator=g) * 0.0625 for _ in range(3)]
    else:
        deltas = [torch.randn(shape, generator=g) * 0.02 for _ in range(3)]
    return base.to(dtype), [(base + d).to(dtype) for d in deltas]


def run(method: str, base, srcs, fused: bool, chunk: int, monkeypatch, rescale=False, lam=1.0, seed=7):
    calls = []
    def spy(kernel):  # so a test notices if the fused path stops being taken
        return lambda *a: calls.append(1) or kernel(*a)
    monkeypatch.setattr(_ta_fused.K, "TA_MERGE", tuple(spy(k) for k in _ta_fused.K.TA_MERGE))
    monkeypatch.setattr(_ta_fused.K, "linear_combination", spy(_ta_fused.K.linear_combination))
    monkeypatch.setattr(_ta_fused, "ENABLED", fused)
    monkeypatch.setattr(engine, "CHUNK_ELEMS", chunk)
    m, p = params(method, rescale, lam)
    out = torch.empty(base.shape)
    engine.merge_tensor(m, p, NAME, ["a", "b", "c"], base, srcs,
                        engine.row_writer(out.view(engine.geometry(out.shape))), engine.Workspace(),
                        engine.TensorCache(0), seed=seed)
    assert bool(calls) == fused
    return out


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("quantized", [False, True])
def test_fused_kernels_equal_the_torch_kernels(method, dtype, quantized, monkeypatch):
    base, srcs = sources(dtype, quantized)
    for chunk in (1 << 19, 200):  # one chunk; 5-row chunks (the histogram selection, carried ties)
        for rescale, lam in ((False, 1.0), (True, 0.8)):
            if method == "task_arithmetic" and rescale:
                continue
            torch_out = run(method, base, srcs, False, chunk, monkeypatch, rescale, lam)
            fused_out = run(method, base, srcs, True, chunk, monkeypatch, rescale, lam)
            if method == "task_arithmetic":  # torch's add(alpha=) may fuse the multiply-add: one rounding less
                torch.testing.assert_close(fused_out, torch_out, rtol=1e-6, atol=1e-6)
            else:
                assert torch.equal(fused_out, torch_out), (chunk, rescale, lam)
            if method != "task_arithmetic":
                assert not torch.equal(fused_out, base.float())


@pytest.mark.parametrize("method", ["ties", "breadcrumbs_ties"])
@pytest.mark.parametrize("dtype, levels", [(torch.float32, 5), (torch.bfloat16, 5), (torch.bfloat16, 1)])
def test_ties_over_many_spans_are_kept_in_index_order(method, dtype, levels, monkeypatch):
    """Quantized task vectors over 10 spans of the unrolled loop, so that ties of every cut-off fall in most
    spans: kept in index order (the unrolled loop where a span's ties are all kept or all dropped, the generic
    path in the span where a cut-off falls), one chunk or many; with one level, the cut-off's bucket holds
    too many entries to be read out and is histogrammed instead."""
    from evomerge.merge.methods import _cpu_kernels

    base, srcs = sources(dtype, quantized=levels, shape=(10 * _cpu_kernels.SPAN // 1024, 1024))
    torch_out = run(method, base, srcs, False, 1 << 19, monkeypatch)
    for chunk in (1 << 19, 37 * 1024):
        assert torch.equal(run(method, base, srcs, True, chunk, monkeypatch), torch_out), chunk


@pytest.mark.parametrize("method", ["ties", "dare_ties", "breadcrumbs_ties"])
def test_fused_chunking_never_changes_a_bit(method, monkeypatch):
    base, srcs = sources(torch.bfloat16, quantized=True)
    whole = run(method, base, srcs, True, 1 << 19, monkeypatch, rescale=False)
    for chunk in (40, 200, 1000):
        assert torch.equal(run(method, base, srcs, True, chunk, monkeypatch, rescale=False), whole)


def test_dare_masks_are_a_function_of_seed_model_tensor_and_index(monkeypatch):
    base, srcs = sources(torch.float32, quantized=False)
    a = run("dare_linear", base, srcs, True, 200, monkeypatch, seed=7)
    assert torch.equal(a, run("dare_linear", base, srcs, True, 1 << 19, monkeypatch, seed=7))
    assert not torch.equal(a, run("dare_linear", base, srcs, True, 200, monkeypatch, seed=8))
    key = counter_stream.stream_key(7, "a", "w")
    bits = counter_stream.uniform_bits(key, 0, 200_000)
    assert torch.equal(bits[1000:1500], counter_stream.uniform_bits(key, 1000, 500))  # any window, same draws
    kept = (bits < counter_stream.threshold(0.3)).double().mean().item()
    assert abs(kept - 0.3) < 0.005
    assert int(bits.min()) >= 0 and int(bits.max()) < counter_stream.ONE
    assert not torch.equal(bits, counter_stream.uniform_bits(counter_stream.stream_key(7, "b", "w"), 0, 200_000))


def test_numba_and_torch_draw_the_same_stream():
    from numba import njit

    from evomerge.merge.methods._cpu_kernels import counter_u24

    @njit
    def draws(key, index0, n):
        out = np.empty(n, np.int64)
        for j in range(n):
            out[j] = counter_u24(key, index0 + j)
        return out

    for seed in (0, 1, 2**31):
        key = counter_stream.stream_key(seed, "model", "lm_head.weight")
        assert np.array_equal(draws(key, 123_456_789, 10_000),
                              counter_stream.uniform_bits(key, 123_456_789, 10_000).numpy())


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties"])
def test_fused_kernels_write_bfloat16_as_torch_casts(method, monkeypatch):
    base, srcs = sources(torch.bfloat16, quantized=False)
    m, p = params(method, rescale=False, lam=1.3)
    out = torch.empty(base.shape, dtype=torch.bfloat16)
    rows = out.view(engine.geometry(out.shape))
    seen = []
    engine.merge_tensor(m, p, NAME, ["a", "b", "c"], base, srcs,
                        lambda r0, r1, chunk, _w=engine.row_writer(rows): seen.append(chunk.dtype) or _w(r0, r1, chunk),
                        engine.Workspace(), engine.TensorCache(0), seed=7, dest=rows)
    assert seen and set(seen) == {torch.bfloat16}  # the destination's own rows: no float32 chunk, no cast pass
    in_float32 = run(method, base, srcs, True, 1 << 19, monkeypatch, lam=1.3)
    assert torch.equal(out.view(torch.int16), in_float32.to(torch.bfloat16).view(torch.int16))


def test_fused_kernels_take_any_number_of_sources(monkeypatch):
    from evomerge.merge.methods import _cpu_kernels

    g = torch.Generator().manual_seed(3)
    n = _cpu_kernels.MAX_UNROLLED + 2
    base = torch.randn(30, 50, generator=g)
    srcs = [base + torch.randn(30, 50, generator=g) * 0.01 for _ in range(n)]
    m = MERGE_METHODS.get("ties")()
    p = TensorParams({"normalize": True, "lambda": 1.0, "rescale": False},
                     {"weight": [0.1 * (i + 1) for i in range(n)], "density": [0.5] * n})
    outs = []
    for fused in (True, False):
        monkeypatch.setattr(_ta_fused, "ENABLED", fused)
        out = torch.empty(base.shape)
        engine.merge_tensor(m, p, "w", [f"m{i}" for i in range(n)], base, srcs, engine.row_writer(out),
                            engine.Workspace(), engine.TensorCache(0))
        outs.append(out)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fused_linear_merge(dtype, monkeypatch):
    _, srcs = sources(dtype, quantized=False)
    m = MERGE_METHODS.get("linear")()
    p = TensorParams({"normalize": True}, {"weight": [0.6, -0.3, 0.5]})
    outs = []
    for fused in (True, False):
        monkeypatch.setattr(_ta_fused, "ENABLED", fused)
        out = torch.empty(srcs[0].shape)
        engine.merge_tensor(m, p, NAME, ["a", "b", "c"], None, srcs, engine.row_writer(out), engine.Workspace(),
                            engine.TensorCache(0))
        outs.append(out)
    want = sum(w * s.float() for w, s in zip([0.6, -0.3, 0.5], srcs)) / 0.8
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)  # the same sum, maybe one rounding apart
    torch.testing.assert_close(outs[0], want, rtol=1e-5, atol=1e-5)
