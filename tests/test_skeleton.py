import pytest

from evomerge.errors import EvomergeError
from evomerge.recipe import MergeRecipe, recipe_from_yaml, recipe_to_yaml
from evomerge.registry import Registry


def test_registry_unknown_name_lists_known():
    reg: Registry[type] = Registry("widget")
    reg.register("a")(int)
    assert reg.get("a") is int
    with pytest.raises(EvomergeError, match="unknown widget 'b' .*known: a"):
        reg.get("b")


def test_recipe_yaml_round_trip_and_param_resolution():
    text = """
method: ties
base: /m/base
models:
  - {model: /m/a, params: {weight: 0.6, density: 0.7}}
  - {model: /m/b, params: {weight: 0.4}}
params: {density: 0.5, normalize: true}
overrides:
  - {layers: [0, 2], modules: [self_attn], model: /m/a, params: {weight: 0.9}}
  - {layers: [1, 3], params: {density: 0.2}}
"""
    r = recipe_from_yaml(text)
    assert isinstance(r, MergeRecipe)
    assert recipe_from_yaml(recipe_to_yaml(r)) == r
    p = r.resolve_params("/m/a", "model.layers.1.self_attn.q_proj.weight")
    assert p == {"density": 0.2, "normalize": True, "weight": 0.9}
    assert r.resolve_params("/m/a", "model.layers.1.mlp.up_proj.weight")["weight"] == 0.6
    assert r.resolve_params("/m/b", "model.layers.2.mlp.up_proj.weight") == {"density": 0.2, "normalize": True, "weight": 0.4}
    assert r.resolve_params("/m/b", "model.embed_tokens.weight")["density"] == 0.5
    assert r.sources() == ["/m/base", "/m/a", "/m/b"]


@pytest.mark.parametrize("bad, msg", [
    ("method: linear\nmodels: []\n", "at least one model"),
    ("method: linear\nmodels: [{model: a}]\nbogus: 1\n", "bogus"),
    ("method: linear\nmodels: [{model: a}]\noverrides: [{layers: [3, 1], params: {weight: 1}}]\n", "start < end"),
    ("method: [unclosed\n", "broken recipe YAML"),
])
def test_recipe_bad_input_is_one_clear_line(bad, msg):
    with pytest.raises(EvomergeError, match=msg) as ei:
        recipe_from_yaml(bad)
    assert "\n" not in str(ei.value)
