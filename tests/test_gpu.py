"""CUDA paths, on a machine that has CUDA (``pytest -m gpu``; skipped elsewhere): the merge on the device gives
the bits the CPU merge gives, the exported checkpoint is the scored model, and one candidate over two GPUs
equals one GPU. ``benchmarks/gpu_check.py`` times the same paths at ~1B parameters."""

import pytest
import torch

from evomerge.merge import InMemoryMerger, export_recipe
from evomerge.recipe import recipe_from_dict

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _ties(m, dtype="float32"):
    return recipe_from_dict({"method": "ties", "base": m["base"], "dtype": dtype, "models": [
        {"model": m["a"], "params": {"weight": 0.6, "density": 0.5}},
        {"model": m["b"], "params": {"weight": 0.4, "density": 0.7}}],
        "overrides": [{"layers": [0, 2], "modules": ["mlp"], "params": {"weight": 0.9}}]})


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_merge_on_the_gpu_gives_the_cpu_bits(tiny_models, dtype):
    r = _ties(tiny_models, dtype)
    cpu = InMemoryMerger(r.sources()).merge_state_dict(r)
    gpu = InMemoryMerger(r.sources(), device="cuda").merge_state_dict(r)
    assert all(torch.equal(cpu[k], gpu[k].cpu()) for k in cpu)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_scored_equals_exported_on_the_gpu(tiny_models, tmp_path, dtype):
    from transformers import AutoModelForCausalLM

    r = _ties(tiny_models, dtype)
    live = AutoModelForCausalLM.from_pretrained(tiny_models["base"], dtype=getattr(torch, dtype)).to("cuda")
    InMemoryMerger(r.sources(), device="cuda", dtype=getattr(torch, dtype)).merge_into(r, live)
    export_recipe(r, tmp_path / "m", device="cuda")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=getattr(torch, dtype)).to("cuda")
    a, b = live.state_dict(), back.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_one_candidate_over_two_gpus_equals_one_gpu(tiny_models):
    from transformers import AutoModelForCausalLM

    r = _ties(tiny_models)
    one = AutoModelForCausalLM.from_pretrained(tiny_models["base"]).to("cuda:0")
    InMemoryMerger(r.sources(), device="cuda:0").merge_into(r, one)
    two = AutoModelForCausalLM.from_pretrained(tiny_models["base"], device_map="auto",
                                               max_memory={0: "1MB", 1: "1GB"})
    InMemoryMerger(r.sources(), device="cuda:0").merge_into(r, two)
    assert {str(p.device) for p in two.parameters()} == {"cuda:0", "cuda:1"}
    ref = {k: v.cpu() for k, v in one.state_dict().items()}
    assert all(torch.equal(ref[k], v.cpu()) for k, v in two.state_dict().items())
