"""The data-flow search space: parameter layout, decoding, constraints, depth limit, scaling modes."""

import math

import numpy as np
import pytest

from evomerge.errors import ConfigError, EvomergeError
from evomerge.recipe import recipe_from_yaml, recipe_to_yaml
from evomerge.spaces import SEARCH_SPACES
from evomerge.spaces.dataflow import DataFlowSpace

MODELS = {"a": "org/model-a", "b": "org/model-b"}
LAYERS = {"a": 3, "b": 2}  # M = 5 distinct layers


def space(**kw):
    cfg = {"kind": "dataflow", "models": MODELS, "num_layers": LAYERS, **kw}
    return DataFlowSpace.from_config(cfg)


def point_with(sp, on, **scales):
    p = sp.default_point()
    for k in p:
        if k.startswith("r"):
            p[k] = k in on
    p.update(scales)
    return p


def test_registered_under_dataflow():
    assert SEARCH_SPACES.get("dataflow") is DataFlowSpace


@pytest.mark.parametrize("scaling, n_scale", [("none", 0), ("input", 5), ("factored", 11), ("full", 30)])
def test_parameter_counts(scaling, n_scale):
    sp = space(repeats=3, scaling=scaling)
    assert sp.size() == 5 * 3 + n_scale
    assert sum(n.startswith("r") for n in sp.names()) == 15


def test_default_point_is_model_a_unchanged():
    r = space().decode(space().default_point())
    assert [(s.model, s.layer, s.scale) for s in r.steps()] == [("a", 0, 1.0), ("a", 1, 1.0), ("a", 2, 1.0)]
    assert r.embed_model() == "a" and r.head_model() == "a" and set(r.models) == {"a"}


def test_decode_orders_slots_and_applies_full_matrix_scales():
    sp = space(scaling="full")
    p = point_with(sp, {"r0.a.L0", "r0.b.L1", "r1.a.L0", "r1.b.L0"},
                   **{"w.embed>a.L0": 0.7, "w.a.L0>b.L1": 1.5, "w.b.L1>a.L0": 0.6, "w.a.L0>b.L0": 1.9})
    r = sp.decode(p)
    assert [(s.model, s.layer, s.scale) for s in r.steps()] == [
        ("a", 0, 0.7), ("b", 1, 1.5), ("a", 0, 0.6), ("b", 0, 1.9)]
    assert recipe_from_yaml(recipe_to_yaml(r)) == r


def test_factored_and_input_scales():
    sp = space(scaling="factored")
    p = point_with(sp, {"r0.a.L1", "r0.b.L0"}, **{"out.embed": 1.2, "in.a.L1": 0.9, "out.a.L1": 1.3, "in.b.L0": 1.1})
    assert [s.scale for s in sp.decode(p).steps()] == pytest.approx([1.08, 1.43])
    lo, hi = [(q.low, q.high) for q in sp.params if q.name == "in.a.L1"][0]
    assert (lo * lo, hi * hi) == pytest.approx((0.5, 2.0))
    sp = space(scaling="input")
    p = point_with(sp, {"r0.a.L1", "r1.a.L1"}, **{"in.a.L1": 1.7})
    assert [s.scale for s in sp.decode(p).steps()] == [1.7, 1.7]


def test_pinned_first_and_last_layers():
    sp = space(first={"model": "a", "layer": 0}, last={"model": "a", "layer": -1}, scaling="none")
    r = sp.decode(point_with(sp, {"r0.b.L1"}))
    assert [(s.model, s.layer) for s in r.steps()] == [("a", 0), ("b", 1), ("a", 2)]
    r = sp.decode(point_with(sp, set()))  # nothing selected: still a valid path
    assert [(s.model, s.layer) for s in r.steps()] == [("a", 0), ("a", 2)]


def test_depth_limit_keeps_the_earliest_slots():
    sp = space(max_depth=4, last={"model": "b", "layer": 1}, scaling="none")
    r = sp.decode(point_with(sp, {n for n in sp.names() if n.startswith("r")}))
    assert [(s.model, s.layer) for s in r.steps()] == [("a", 0), ("a", 1), ("a", 2), ("b", 1)]
    assert r.max_depth == 4


def test_empty_path_is_a_clear_error():
    sp = space()
    with pytest.raises(EvomergeError, match="the point selects no layer"):
        sp.decode(point_with(sp, set()))


def test_random_points_always_decode_within_constraints():
    sp = space(repeats=3, first={"model": "a", "layer": 0}, last={"model": "a", "layer": 2}, max_depth=7)
    rng = np.random.default_rng(0)
    for _ in range(200):
        r = sp.decode(sp.from_unit(rng.random(sp.size())))
        steps = r.steps()
        assert 2 <= len(steps) <= 7 and steps[0].layer == 0 and (steps[-1].model, steps[-1].layer) == ("a", 2)
        assert all(0.5 - 1e-9 <= s.scale <= 2.0 + 1e-9 for s in steps)


def test_nested_parameter_space_source():
    ps = {"kind": "merge", "method": "linear", "models": [{"model": "org/x"}, {"model": "org/y"}]}
    sp = DataFlowSpace.from_config({"models": {"ps": ps, "b": "org/model-b"}, "num_layers": {"ps": 2, "b": 2}})
    assert sp.sources() == ["org/x", "org/y", "org/model-b"]
    r = sp.decode(point_with(sp, {"r0.ps.L0", "r0.b.L1"}))
    assert r.models["ps"].method == "linear" and r.sources() == ["org/x", "org/y", "org/model-b"]


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"first": {"model": "z", "layer": 0}}, "first names model 'z'"),
        ({"last": {"model": "a", "layer": 3}}, "last: model 'a' has 3 layers, no layer 3"),
        ({"scale": {"low": 1.2, "high": 2.0}}, "must contain 1"),
        ({"scale": {"low": 2.0, "high": 0.5}}, "inverted"),
        ({"scaling": "diagonal"}, "scaling"),
        ({"max_depth": 2, "first": {"model": "a", "layer": 0}, "last": {"model": "a", "layer": -1}}, "no room"),
        ({"embed": "q"}, "embed names model 'q'"),
        ({"repeats": 0}, "repeats"),
    ],
)
def test_bad_space_configs(kw, msg):
    with pytest.raises(ConfigError) as e:
        space(**kw)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_layer_counts_read_from_model_configs(tmp_path):
    import json

    for name, n in (("p", 2), ("q", 3)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": n}))
    sp = DataFlowSpace.from_config({"models": {"p": str(tmp_path / "p"), "q": str(tmp_path / "q")}, "repeats": 1,
                                    "scaling": "none"})
    assert sp.n_layers == {"p": 2, "q": 3} and sp.size() == 5
    assert math.isclose(sp.decode(sp.default_point()).steps()[-1].layer, 1)
