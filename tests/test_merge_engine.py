"""Merge engine: in-memory == export, live-model merging in place, DARE statistics, bad input, YAML interop."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from evomerge.errors import ConfigError, EvomergeError
from evomerge.merge import MERGE_METHODS, InMemoryMerger, export_recipe, from_mergekit_yaml, to_mergekit_yaml
from evomerge.recipe import recipe_from_dict
from tiny_llama import make_tiny_llama

ALL_METHODS = ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp", "breadcrumbs",
               "breadcrumbs_ties", "della", "della_linear"]


def recipe_for(method: str, m: dict, **extra):
    if method == "slerp":
        return recipe_from_dict({"method": "slerp", "base": m["base"], "models": [{"model": m["a"]}],
                                 "params": {"t": 0.4}, "overrides": [{"layers": [1, 3], "params": {"t": 0.8}}],
                                 **extra})
    sparse = method not in ("linear", "task_arithmetic")
    dens = {"density": 0.6} if sparse else {}
    return recipe_from_dict({
        "method": method, "base": m["base"],
        "models": [{"model": m["a"], "params": {"weight": 0.7, **dens}},
                   {"model": m["b"], "params": {"weight": 0.5}},
                   {"model": m["c"], "params": {"weight": 0.3}}],
        "params": {"density": 0.5} if sparse else {},
        "overrides": [{"layers": [2, 4], "modules": ["mlp"], "params": {"weight": 1.1}},
                      {"modules": ["lm_head"], "model": m["b"], "params": {"weight": 0.05}}],
        **extra})


def load_folder(path) -> dict[str, torch.Tensor]:
    idx = json.loads((path / "model.safetensors.index.json").read_text())
    out = {}
    for shard in sorted(set(idx["weight_map"].values())):
        out.update(load_file(str(path / shard)))
    assert set(out) == set(idx["weight_map"])
    return out


@pytest.fixture(scope="module")
def merger(tiny_models):
    return InMemoryMerger([tiny_models[k] for k in ("base", "a", "b", "c")])


def test_registry_lists_every_method():
    assert set(ALL_METHODS) <= set(MERGE_METHODS.names())
    for name in ALL_METHODS:
        cls = MERGE_METHODS.get(name)
        assert cls.paper.startswith("https://") and cls.__module__.startswith("evomerge.merge.methods.")


@pytest.mark.parametrize("method", ALL_METHODS)
def test_in_memory_equals_export(method, merger, tiny_models, tmp_path):
    recipe = recipe_for(method, tiny_models, seed=3)
    mem = merger.merge_state_dict(recipe)
    out = export_recipe(recipe, tmp_path / "out", shard_size="40KB")
    disk = load_folder(out)
    assert set(mem) == set(disk)
    for k in mem:
        assert torch.equal(mem[k], disk[k]), f"{method}: {k} differs"
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and shards[-1].endswith(f"-of-{len(shards):05d}.safetensors")
    assert (out / "config.json").exists() and (out / "merge_recipe.yaml").exists()
    assert method in (out / "README.md").read_text()
    # the merge changed something and used the per-layer override
    base = load_folder_base(tiny_models)
    assert not torch.equal(mem["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])


def load_folder_base(m):
    from evomerge.models import LazyCheckpoint

    ck = LazyCheckpoint(m["base"])
    return dict(ck.iter_tensors())


def test_merge_into_live_model_in_place(merger, tiny_models):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models["base"])
    ptrs = {n: p.data_ptr() for n, p in model.named_parameters()}
    r1 = recipe_for("ties", tiny_models)
    merger.merge_into(r1, model)
    expect = merger.merge_state_dict(r1)
    sd = model.state_dict()
    for k, v in expect.items():
        assert torch.equal(sd[k], v)
    assert ptrs == {n: p.data_ptr() for n, p in model.named_parameters()}  # written in place
    r2 = recipe_for("task_arithmetic", tiny_models)
    merger.merge_into(r2, model)
    assert not torch.equal(model.state_dict()["model.layers.1.mlp.up_proj.weight"],
                           expect["model.layers.1.mlp.up_proj.weight"])
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("method, dtype, weight, finite", [
    ("task_arithmetic", torch.float32, 0.5, True), ("linear", torch.float32, 3e38, False),
    ("task_arithmetic", torch.float16, 0.5, True), ("task_arithmetic", torch.float16, 1e7, False),
    ("linear", torch.bfloat16, 3e38, False)])
def test_the_merger_says_when_merged_values_do_not_fit_the_live_dtype(tiny_models, method, dtype, weight, finite):
    """NaN / inf (three weights of 3e38 overflow float32) and finite float32 values a float16 model cannot hold
    (1e7 * a task vector) are caught on the merge's float32 chunks, for a live model and a weight stream alike."""
    from transformers import AutoModelForCausalLM

    merger = InMemoryMerger([tiny_models[k] for k in ("base", "a", "b", "c")], dtype=dtype)
    r = recipe_from_dict({"method": method, "base": tiny_models["base"],
                          "params": {"normalize": False} if method == "linear" else {},
                          "models": [{"model": tiny_models[k], "params": {"weight": weight}} for k in "abc"]})
    model = AutoModelForCausalLM.from_pretrained(tiny_models["base"], dtype=dtype)
    merger.merge_into(r, model)
    assert merger.finite is finite
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters()) is finite
    merged = dict(merger.iter_merged(r, dtype=dtype))
    assert merger.finite is finite and all(bool(torch.isfinite(t).all()) for t in merged.values()) is finite


def test_subset_and_order_of_sources(merger, tiny_models):
    """A recipe may use any subset of the merger's sources, in any order."""
    m = tiny_models
    r = recipe_from_dict({"method": "task_arithmetic", "base": m["base"],
                          "models": [{"model": m["c"], "params": {"weight": 0.5}},
                                     {"model": m["a"], "params": {"weight": 0.25}}]})
    got = merger.merge_state_dict(r)
    base = load_folder_base(m)
    from evomerge.models import LazyCheckpoint

    a, c = dict(LazyCheckpoint(m["a"]).iter_tensors()), dict(LazyCheckpoint(m["c"]).iter_tensors())
    for k in got:
        want = base[k] + 0.5 * (c[k] - base[k]) + 0.25 * (a[k] - base[k])
        assert torch.allclose(got[k], want, atol=1e-6)


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_density_rescale_and_seed(method, merger, tiny_models):
    m = tiny_models
    base = load_folder_base(m)

    def run(seed, density=0.3):
        r = recipe_from_dict({"method": method, "base": m["base"], "seed": seed,
                              "models": [{"model": m["a"], "params": {"weight": 1.0, "density": density}}]})
        return merger.merge_state_dict(r)

    from evomerge.models import LazyCheckpoint

    a = dict(LazyCheckpoint(m["a"]).iter_tensors())
    out = run(7)
    kept = total = 0
    for k, v in out.items():
        d = v - base[k]
        kept += int((d != 0).sum())
        total += d.numel()
        full = (a[k] - base[k]).abs().sum()
        assert torch.allclose(d.abs().sum(), full, rtol=1e-4), f"{k}: L1 norm not preserved by rescale"
    assert abs(kept / total - 0.3) < 0.01, kept / total
    again = run(7)
    other = run(8)
    assert all(torch.equal(out[k], again[k]) for k in out)
    assert any(not torch.equal(out[k], other[k]) for k in out)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("data, message", [
    ({"method": "nope"}, "unknown merge method 'nope'"),
    ({"params": {"density": 0.0}}, "density=0.0 is outside (0.0, 1.0]"),
    ({"params": {"density": 1.5}}, "density=1.5 is outside"),
    ({"params": {"densty": 0.5}}, "unknown parameter 'densty'"),
    ({"overrides": [{"layers": [2, 9], "params": {"weight": 1.0}}]}, "outside the model (4 layers"),
    ({"models_params": {"normalize": False}}, "is global; it cannot be set per model"),
    ({"params": {"weight": "heavy"}}, "must be a number"),
])
def test_bad_recipes_fail_before_work(data, message, merger, tiny_models, tmp_path):
    m = tiny_models
    d = {"method": "ties", "base": m["base"], "models": [{"model": m["a"]}, {"model": m["b"]}]}
    if "models_params" in data:
        d["models"][0]["params"] = data.pop("models_params")
    d.update(data)
    r = recipe_from_dict(d)
    with pytest.raises(EvomergeError, match=message.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
        merger.merge_state_dict(r)
    with pytest.raises(EvomergeError) as exc:
        export_recipe(r, tmp_path / "out")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_della_epsilon_band_checked(merger, tiny_models):
    m = tiny_models
    r = recipe_from_dict({"method": "della", "base": m["base"],
                          "models": [{"model": m["a"], "params": {"density": 0.9, "epsilon": 0.2}}]})
    with pytest.raises(ConfigError, match="epsilon"):
        merger.merge_state_dict(r)


def test_slerp_needs_exactly_one_model_besides_base(merger, tiny_models):
    m = tiny_models
    r = recipe_from_dict({"method": "slerp", "base": m["base"], "models": [{"model": m["a"]}, {"model": m["b"]}]})
    with pytest.raises(ConfigError, match="exactly 1 model"):
        merger.merge_state_dict(r)


def test_missing_model_folder(tiny_models, tmp_path):
    with pytest.raises(EvomergeError, match="model folder not found"):
        InMemoryMerger([tiny_models["base"], str(tmp_path / "nowhere")])
    r = recipe_from_dict({"method": "linear", "models": [{"model": str(tmp_path / "nowhere")}]})
    with pytest.raises(EvomergeError, match="model folder not found"):
        export_recipe(r, tmp_path / "out")


def test_recipe_model_not_held(merger, tmp_path, tiny_models):
    r = recipe_from_dict({"method": "linear", "models": [{"model": "/elsewhere/model"}]})
    with pytest.raises(EvomergeError, match="does not hold"):
        merger.merge_state_dict(r)


def test_shape_and_architecture_mismatch(tiny_models, tmp_path):
    make_tiny_llama(tmp_path / "wide", 5, hidden=48, shard="1MB")
    with pytest.raises(EvomergeError, match="shape mismatch for .*: .* has \\[64, 32\\], .* has \\[64, 48\\]"):
        InMemoryMerger([tiny_models["base"], str(tmp_path / "wide")])
    make_tiny_llama(tmp_path / "deep", 5, layers=5, shard="1MB")
    with pytest.raises(EvomergeError, match="lacks|extra tensor"):
        export_recipe(recipe_from_dict({"method": "linear", "models": [{"model": tiny_models["a"]},
                                                                       {"model": str(tmp_path / "deep")}]}),
                      tmp_path / "out")
    cfg_path = tmp_path / "other_arch"
    make_tiny_llama(cfg_path, 6, shard="1MB")
    cfg = json.loads((cfg_path / "config.json").read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    (cfg_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EvomergeError, match="architectures differ"):
        InMemoryMerger([tiny_models["base"], str(cfg_path)])


def test_export_refuses_non_empty_folder(tiny_models, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep me")
    with pytest.raises(EvomergeError, match="not empty"):
        export_recipe(recipe_for("linear", tiny_models), tmp_path / "out")


# ------------------------------------------------------------------ mergekit YAML


def test_mergekit_yaml_round_trip_merges_the_same(merger, tiny_models):
    import yaml

    for method in ("ties", "slerp", "breadcrumbs", "dare_ties"):
        r = recipe_for(method, tiny_models)
        text = to_mergekit_yaml(r)
        cfg = yaml.safe_load(text)
        assert cfg["merge_method"] == method and "slices" in cfg
        back = from_mergekit_yaml(text)
        a, b = merger.merge_state_dict(r), merger.merge_state_dict(back)
        assert all(torch.equal(a[k], b[k]) for k in a) or method != "ties", method
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-7), f"{method}: {k}"


def test_mergekit_yaml_models_form_and_rejections(tiny_models):
    import yaml

    m = tiny_models
    r = recipe_from_dict({"method": "ties", "base": m["base"],
                          "models": [{"model": m["a"], "params": {"weight": 0.5, "density": 0.4}}]})
    cfg = yaml.safe_load(to_mergekit_yaml(r))
    assert cfg["models"] == [{"model": m["a"], "parameters": {"weight": 0.5, "density": 0.4}}]
    assert cfg["parameters"] == {"normalize": True, "lambda": 1.0, "rescale": False}
    back = from_mergekit_yaml(to_mergekit_yaml(r))
    assert back.models[0].params == {"weight": 0.5, "density": 0.4} and back.base == m["base"]
    with pytest.raises(EvomergeError, match="no evomerge equivalent"):
        from_mergekit_yaml("merge_method: model_stock\nbase_model: x/y\nmodels:\n  - model: a/b\n")
    with pytest.raises(EvomergeError, match="layer stacking"):
        from_mergekit_yaml("merge_method: linear\nslices:\n  - sources:\n    - model: a/b\n      layer_range: [0, 2]\n"
                           "    - model: c/d\n      layer_range: [2, 4]\n")
