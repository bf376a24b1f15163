"""DataFlowRecipe: validation, short forms, slices, YAML round trip, scaling fold factors."""

import math

import pytest

from evomerge.errors import ConfigError
from evomerge.recipe import recipe_from_dict, recipe_from_yaml, recipe_to_yaml
from evomerge.recipe.dataflow import DataFlowRecipe

MODELS = {"a": "org/model-a", "b": "org/model-b"}


def make(**kw):
    return recipe_from_dict({"kind": "dataflow", "models": MODELS, **kw})


def test_path_short_and_long_forms_agree():
    r1 = make(path=[["a", 0], ["b", 1, 0.5], {"model": "a", "layer": 1, "scale": 2.0}])
    assert isinstance(r1, DataFlowRecipe)
    assert [(s.model, s.layer, s.scale) for s in r1.steps()] == [("a", 0, 1.0), ("b", 1, 0.5), ("a", 1, 2.0)]
    assert r1.embed_model() == "a" and r1.head_model() == "a"


def test_yaml_round_trip_with_nested_merge_recipe():
    text = """
kind: dataflow
models:
  a: org/model-a
  ps: {kind: merge, method: linear, base: org/base, models: [{model: org/model-b, params: {weight: 0.5}}]}
embed: a
head: ps
path: [[a, 0], [ps, 0, 0.75], [ps, 1]]
max_depth: 8
"""
    r = recipe_from_yaml(text)
    assert r.models["ps"].method == "linear"
    assert r.sources() == ["org/model-a", "org/base", "org/model-b"]
    again = recipe_from_yaml(recipe_to_yaml(r))
    assert again == r


def test_slices_expand_to_path():
    r = make(slices=[{"model": "a", "layers": [0, 3]}, {"model": "b", "layers": [2, 4]}])
    assert [(s.model, s.layer) for s in r.steps()] == [("a", 0), ("a", 1), ("a", 2), ("b", 2), ("b", 3)]
    assert r.embed_model() == "a" and r.head_model() == "b"
    p = r.to_path_form()
    assert p.slices is None and p.steps() == r.steps()


def test_output_scales_are_inverse_cumulative_products():
    r = make(path=[["a", 0, 2.0], ["a", 1], ["b", 0, 0.25], ["b", 1, 4.0]])
    assert r.output_scales() == pytest.approx([0.5, 0.5, 2.0, 0.5])
    assert not r.all_scales_one() and make(path=[["a", 0]]).all_scales_one()


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"path": []}, "the data-flow path is empty"),
        ({"slices": []}, "the data-flow path is empty"),
        ({"path": [["a", 0]] * 5, "max_depth": 4}, "5 layers, over the depth limit of 4"),
        ({"path": [["c", 0]]}, "path names model 'c'"),
        ({"path": [["a", 0]], "embed": "z"}, "embed names model 'z'"),
        ({"path": [["a", 0, -1.0]]}, "scale must be a finite number > 0"),
        ({"path": [["a", 0, 0.0]]}, "scale must be a finite number > 0"),
        ({"path": [["a", 0, math.inf]]}, "scale must be a finite number > 0"),
        ({"path": [["a", -1]]}, "greater than or equal to 0"),
        ({"path": [["a"]]}, "short path step"),
        ({}, "exactly one of 'path' or 'slices'"),
        ({"path": [["a", 0]], "slices": [{"model": "a", "layers": [0, 1]}]}, "exactly one of 'path' or 'slices'"),
        ({"slices": [{"model": "a", "layers": [2, 2]}]}, "0 <= start < end"),
        ({"path": [["a", 0]], "stray": 1}, "Extra inputs"),
    ],
)
def test_bad_recipes_fail_with_one_line(kw, msg):
    with pytest.raises(ConfigError) as e:
        make(**kw)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_default_depth_limit_applies():
    with pytest.raises(ConfigError, match="over the depth limit of 128"):
        make(path=[["a", 0]] * 129)


def test_no_models():
    with pytest.raises(ConfigError, match="at least one source model"):
        recipe_from_dict({"kind": "dataflow", "models": {}, "path": [["a", 0]]})
