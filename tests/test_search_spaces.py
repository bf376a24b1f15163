"""Search spaces: parameter types, the parameter-space family, decode of every shipped space."""

import numpy as np
import pytest

from evomerge.errors import ConfigError, EvomergeError
from evomerge.merge.plan import validate_recipe
from evomerge.recipe import MergeRecipe, recipe_from_yaml, recipe_to_yaml
from evomerge.resources import shipped_dir
from evomerge.spaces import SEARCH_SPACES, build_space
from evomerge.spaces.params import CategoricalParam, FloatParam, IntParam

MODELS = ["/m/add", "/m/reverse", "/m/sort"]


def space(**kw):
    cfg = {"kind": "parameter", "method": "ties", "base": "/m/base", "models": MODELS, "num_layers": 4}
    cfg.update(kw)
    return build_space(cfg)


def test_param_unit_codec_round_trips_and_stays_in_bounds():
    f = FloatParam(name="w", low=-1.0, high=2.0)
    lg = FloatParam(name="l", low=1e-3, high=1.0, log=True)
    i = IntParam(name="k", low=2, high=5)
    c = CategoricalParam(name="c", choices=["a", "b", "c"])
    for u in np.linspace(0, 1, 11):
        for p in (f, lg, i, c):
            v = p.from_unit(u)
            assert p.contains(v)
            assert p.from_unit(p.to_unit(v)) == pytest.approx(v)
    assert {i.from_unit(u) for u in np.linspace(0, 1, 101)} == {2, 3, 4, 5}
    assert f.from_unit(7.0) == 2.0  # outside the cube maps to the bound


@pytest.mark.parametrize("bad, msg", [
    (dict(type="float", low=1.0, high=0.5), "inverted"),
    (dict(type="int", low=3, high=1), "inverted"),
    (dict(type="float", low=0.0, high=1.0, log=True), "log scale"),
    (dict(type="categorical", choices=[]), "at least one"),
])
def test_bad_extra_params_are_refused(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        space(extra=[dict(name="lambda", **bad)])


def test_single_group_space_is_one_weight_and_density_per_model():
    s = space()
    assert s.names() == ["add.weight", "add.density", "reverse.weight", "reverse.density", "sort.weight",
                         "sort.density"]
    r = s.decode(s.default_point())
    assert r.method == "ties" and r.base == "/m/base" and r.overrides == []
    assert [m.params for m in r.models] == [{"weight": 0.5, "density": 0.55}] * 3
    validate_recipe(r)


def test_layer_groups_and_module_groups_decode_to_overrides():
    s = space(granularity=2, modules=[["self_attn"], ["mlp"]], weight={"low": 0, "high": 2})
    # per model: global (2 params) + 2 layer groups x 2 module groups x 2 params
    assert s.size() == 3 * (2 + 2 * 2 * 2)
    rng = np.random.default_rng(0)
    point = s.sample(rng)
    r = s.decode(point)
    validate_recipe(r)
    assert len(r.overrides) == 2 * 2 * 3
    # the recipe resolves to exactly the point's values for each (model, tensor)
    assert r.resolve_params("/m/add", "model.layers.3.mlp.up_proj.weight") == {
        "weight": point["add.L2-3.mlp.weight"], "density": point["add.L2-3.mlp.density"]}
    assert r.resolve_params("/m/sort", "model.layers.0.self_attn.q_proj.weight")["weight"] == point["sort.L0-1.self_attn.weight"]
    assert r.resolve_params("/m/reverse", "model.embed_tokens.weight")["weight"] == point["reverse.weight"]
    assert recipe_from_yaml(recipe_to_yaml(r)) == r


def test_uneven_last_group():
    s = space(granularity=3, num_layers=7)
    tags = sorted({n.split(".")[1] for n in s.names() if n.count(".") == 2})
    assert tags == ["L0-2", "L3-5", "L6-6"]


def test_method_as_categorical_conditions_density():
    s = space(method=["linear", "task_arithmetic", "ties"], granularity=2)
    assert s.params[0].name == "method"
    for seed in range(20):
        p = s.sample(np.random.default_rng(seed))
        has_density = any(k.endswith("density") for k in p)
        assert has_density == (p["method"] == "ties")
        r = s.decode(p)
        assert r.method == p["method"]
        validate_recipe(r)
    # unit-cube decoding respects conditions too
    p = s.from_unit(np.full(s.size(), 0.1))
    assert p["method"] == "linear" and not any(k.endswith("density") for k in p)


def test_extra_and_fixed_global_params():
    s = space(method="task_arithmetic", fixed={"normalize": False},
              extra=[{"name": "lambda", "type": "float", "low": 0.5, "high": 1.5}])
    p = s.default_point()
    assert p["lambda"] == 1.0
    r = s.decode(p)
    assert r.params == {"normalize": False, "lambda": 1.0}
    validate_recipe(r)


@pytest.mark.parametrize("kw, msg", [
    (dict(method="nosuch"), "unknown merge method 'nosuch'"),
    (dict(weight={"low": 1.0, "high": 0.0}), "weight bounds inverted"),
    (dict(density={"low": 0.0, "high": 1.0}), r"density bounds .* leave the domain"),
    (dict(density={"low": 0.2, "high": 1.5}), "leave the domain"),
    (dict(models=[]), "no models"),
    (dict(models=["/m/a", "/m/a"]), "listed twice"),
    (dict(method="slerp"), "no per-model weight"),
    (dict(base=None), "needs a base model"),
    (dict(granularity=0), "granularity"),
    (dict(bogus=1), "bogus"),
    (dict(kind="nosuch"), "unknown search space 'nosuch'"),
])
def test_bad_space_is_one_clear_line(kw, msg):
    with pytest.raises(EvomergeError, match=msg) as ei:
        space(**kw)
    assert "\n" not in str(ei.value)


def test_decode_rejects_points_outside_the_space():
    s = space()
    p = s.default_point()
    with pytest.raises(ConfigError, match="outside its domain"):
        s.decode({**p, "add.weight": 5.0})
    with pytest.raises(ConfigError, match="lacks"):
        s.decode({k: v for k, v in p.items() if k != "add.weight"})
    with pytest.raises(ConfigError, match="unknown or inactive"):
        s.decode({**p, "zzz": 1.0})


SHIPPED = sorted(p.stem for p in shipped_dir("search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_decodes_to_valid_recipes(name):
    s = build_space(name, base="/m/base", models=MODELS, num_layers=4)
    assert s.size() == len(s.params) > 0
    rng = np.random.default_rng(1)
    for point in [s.default_point(), s.from_unit(np.zeros(s.size())), s.from_unit(np.ones(s.size()))] + [
            s.sample(rng) for _ in range(5)]:
        if s.cfg.kind == "dataflow" and not any(point[p.name] for p in s.params if p.name.startswith("r")):
            with pytest.raises(EvomergeError, match="path is empty"):  # every slot off: recorded as failed
                s.decode(point)
            continue
        recipe = s.decode(point)
        if isinstance(recipe, MergeRecipe):
            validate_recipe(recipe)
        else:  # data-flow: a non-empty path within the depth limit, over the named models
            assert 0 < len(recipe.steps()) <= s.max_depth and set(recipe.used_models()) <= set(s.cfg.models)


def test_registry_has_parameter_space():
    assert "parameter" in SEARCH_SPACES.names()
