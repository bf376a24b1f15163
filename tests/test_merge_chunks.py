"""The chunked merge engine: chunking never changes a result, the radix top-k equals a stable sort even with
heavy ties, caches change speed and never bits, sources stay memory-mapped."""

from __future__ import annotations

import pytest
import torch

from evomerge.merge import InMemoryMerger, MERGE_METHODS
from evomerge.merge import engine
from evomerge.merge.registry import TensorParams
from evomerge.recipe import recipe_from_dict

METHODS = ["linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs_ties", "della", "slerp"]


def recipe(method: str, m: dict):
    if method == "slerp":
        return recipe_from_dict({"method": "slerp", "base": m["base"], "models": [{"model": m["a"]}],
                                 "params": {"t": 0.3}})
    sparse = {} if method in ("linear", "task_arithmetic") else {"density": 0.4}
    return recipe_from_dict({"method": method, "base": None if method == "linear" else m["base"],
                             "models": [{"model": m[k], "params": {"weight": w, **sparse}}
                                        for k, w in (("a", 0.6), ("b", 0.3), ("c", 0.5))],
                             "overrides": [{"layers": [1, 3], "params": {"weight": 0.9}}]})


@pytest.mark.parametrize("method", METHODS)
def test_chunk_size_never_changes_the_merge(method, tiny_models, monkeypatch):
    r = recipe(method, tiny_models)
    whole = InMemoryMerger(list(tiny_models.values()), cache_budget=0).merge_state_dict(r)
    monkeypatch.setattr(engine, "CHUNK_ELEMS", 40)  # rows of 32-64 entries: one or two rows per chunk
    assert engine.row_chunks((64, 32)) == [(r0, r0 + 1) for r0 in range(64)]
    chunked = InMemoryMerger(list(tiny_models.values()), cache_budget=0).merge_state_dict(r)
    for name, t in whole.items():
        if method in ("dare_ties", "della", "slerp"):  # whole-tensor sums accumulate per chunk
            torch.testing.assert_close(chunked[name], t, rtol=1e-6, atol=1e-7)
            assert torch.equal(chunked[name] == 0, t == 0)  # the same random masks
        else:
            assert torch.equal(chunked[name], t), name


def test_top_k_with_ties_keeps_what_a_stable_sort_keeps(monkeypatch):
    monkeypatch.setattr(engine, "CHUNK_ELEMS", 100)
    g = torch.Generator().manual_seed(0)
    delta = (torch.randint(-6, 7, (50, 37), generator=g) * 0.125).float()  # 13 values: ties everywhere
    base = torch.zeros_like(delta)
    ties = MERGE_METHODS.get("ties")()
    for density in (0.05, 0.3, 0.61, 0.99):
        out = torch.empty_like(delta)
        params = TensorParams({"normalize": False, "lambda": 1.0, "rescale": False},
                              {"weight": [1.0], "density": [density]})

        def write(r0, r1, chunk):
            out[r0:r1] = chunk

        engine.merge_tensor(ties, params, "w", ["a"], base, [delta], write, engine.Workspace(),
                            engine.TensorCache(0))
        k = max(1, int(density * delta.numel()))
        order = sorted(range(delta.numel()), key=lambda j: (-abs(float(delta.view(-1)[j])), j))
        want = torch.zeros(delta.numel(), dtype=torch.bool)
        want[order[:k]] = True
        assert int(want.sum()) == k
        assert torch.equal(out.view(-1)[want], delta.view(-1)[want])
        assert bool((out.view(-1)[~want] == 0).all())


@pytest.mark.parametrize("budget", [0, 20_000, None])
def test_cache_budget_changes_speed_not_bits(budget, tiny_models):
    r = recipe("ties", tiny_models)
    ref = InMemoryMerger(list(tiny_models.values()), cache_budget=0).merge_state_dict(r)
    merger = InMemoryMerger(list(tiny_models.values()), cache_budget=budget)
    for _ in range(2):
        got = merger.merge_state_dict(r)
        assert all(torch.equal(got[k], ref[k]) for k in ref)
    if budget is not None:
        assert merger.cache.used <= budget
    assert (merger.cache.hits > 0) == (budget != 0)


def test_sources_are_memory_mapped_views(tiny_models):
    merger = InMemoryMerger(list(tiny_models.values()))
    ck = merger.ckpts[tiny_models["a"]]
    name = ck.names()[0]
    v1, v2 = ck.view(name), ck.view(name)
    assert v1.data_ptr() == v2.data_ptr()  # both read the one mapping: no per-call copy
    assert torch.equal(v1, ck.get(name, torch.float32))


@pytest.mark.parametrize("method", METHODS + ["dare_linear"])
def test_merge_threads_never_change_a_bit(method, tiny_models):
    from transformers import AutoModelForCausalLM

    r = recipe(method, tiny_models)
    if method == "dare_linear":
        r = recipe_from_dict({**r.model_dump(), "random_stream": "mergekit"})  # drawn in name order: serial
    models, before = [], torch.get_num_threads()
    for threads in (1, 3):
        merger = InMemoryMerger(list(tiny_models.values()), cache_budget=20_000, threads=threads)
        assert (merger.pool is not None) == (threads > 1)
        model = AutoModelForCausalLM.from_pretrained(tiny_models["base"])
        for _ in range(2):  # the second merge reads what the first one cached
            merger.merge_into(r, model)
        models.append(model.state_dict())
    assert torch.get_num_threads() == before  # the caller's torch threads are left as they were
    for name, t in models[0].items():
        assert torch.equal(models[1][name], t), name
    streamed = [dict(InMemoryMerger(list(tiny_models.values()), threads=n).iter_merged(r)) for n in (1, 3)]
    assert list(streamed[0]) == list(streamed[1])  # in checkpoint order
    assert all(torch.equal(streamed[1][k], v) for k, v in streamed[0].items())


@pytest.mark.parametrize("method", ["ties", "dare_ties", "della"])
def test_export_threads_never_change_a_byte(method, tiny_models, tmp_path):
    from evomerge.merge import export_recipe

    r = recipe(method, tiny_models)
    files = []
    for n in (1, 3):
        out = export_recipe(r, tmp_path / f"t{n}", threads=n, shard_size="20KB")
        files.append({p.name: p.read_bytes() for p in sorted(out.glob("*.safetensors"))})
    assert len(files[0]) > 1 and files[0] == files[1]
