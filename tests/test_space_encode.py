"""``SearchSpace.encode``: recipe -> point, the inverse of ``decode`` where the space can express a recipe."""

import numpy as np
import pytest

from evomerge.recipe import MergeRecipe, ModelSource, Override
from evomerge.recipe.dataflow import DataFlowRecipe, PathStep
from evomerge.spaces import build_space

MODELS = ["/m/add", "/m/reverse", "/m/sort"]
BASE = "/m/base"


def pspace(**kw):
    cfg = {"kind": "parameter", "method": "ties", "base": BASE, "models": MODELS, "num_layers": 4}
    cfg.update(kw)
    return build_space(cfg)


SPACES = {
    "ties_layerwise": dict(granularity=2, weight={"low": 0.0, "high": 1.5, "default": 0.5}),
    "ties_attn_mlp": dict(granularity=1, modules=[["self_attn"], ["mlp"]]),
    "one_group_ta": dict(method="task_arithmetic", weight={"low": 0.0, "high": 1.5}),
    "method_choice": dict(method=["linear", "task_arithmetic", "ties", "dare_ties"], granularity=2,
                          weight={"low": 0.0, "high": 1.5}),
    "with_lambda": dict(granularity=2, extra=[{"type": "float", "name": "lambda", "low": 0.1, "high": 1.5}]),
    "fixed": dict(fixed={"normalize": False}, granularity=3),
}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_decode_of_encode_is_the_recipe_for_every_decoded_recipe(name):
    sp = pspace(**SPACES[name])
    rng = np.random.default_rng(0)
    for point in [sp.default_point()] + [sp.sample(rng) for _ in range(25)]:
        recipe = sp.decode(point)
        enc = sp.encode(recipe)
        assert enc is not None, (name, point)
        assert sp.decode(enc) == recipe
        assert enc == point or sp.decode(enc) == sp.decode(point)


def _simple(method, weights=1.0, **glob):
    dens = {"density": glob.pop("density")} if "density" in glob else {}
    return MergeRecipe(method=method, base=BASE, params=glob,
                       models=[ModelSource(model=m, params={"weight": weights, **dens}) for m in MODELS])


def test_simple_merges_encode_as_the_same_value_in_every_group():
    sp = pspace(granularity=2, weight={"low": 0.0, "high": 1.5})
    pt = sp.encode(_simple("ties", density=0.5))
    assert pt is not None and {v for k, v in pt.items() if k.endswith(".weight")} == {1.0}
    assert {v for k, v in pt.items() if k.endswith(".density")} == {0.5}
    # lambda != 1 with a normalising method cannot be expressed without a lambda parameter
    assert sp.encode(_simple("ties", density=0.5, **{"lambda": 0.5})) is None
    lam = pspace(granularity=2, extra=[{"type": "float", "name": "lambda", "low": 0.1, "high": 1.5}])
    pt = lam.encode(_simple("ties", density=0.5, **{"lambda": 0.5}))
    assert pt is not None and pt["lambda"] == 0.5
    # another method, other models, a weight outside the bounds: not expressible
    assert sp.encode(_simple("task_arithmetic")) is None
    assert sp.encode(_simple("ties", weights=2.0, density=0.5)) is None
    assert sp.encode(MergeRecipe(method="ties", base=BASE, models=[ModelSource(model=MODELS[0])])) is None


def test_task_arithmetic_lambda_folds_into_the_weights():
    sp = pspace(method="task_arithmetic", weight={"low": 0.0, "high": 1.5})
    pt = sp.encode(_simple("task_arithmetic", **{"lambda": 0.75}))
    assert pt is not None and set(pt.values()) == {0.75}
    mc = pspace(method=["linear", "task_arithmetic", "ties"], weight={"low": 0.0, "high": 1.5})
    avg = MergeRecipe(method="linear", models=[ModelSource(model=m) for m in MODELS])
    pt = mc.encode(avg)
    assert pt is not None and pt["method"] == "linear" and "add.density" not in pt


def test_overrides_finer_than_the_groups_are_not_expressible():
    sp = pspace(granularity=2)
    r = _simple("ties", density=0.5)
    ok = r.model_copy(update={"overrides": [Override(layers=(0, 2), model=MODELS[0], params={"weight": 0.3})]})
    pt = sp.encode(ok)
    assert pt is not None and pt["add.L0-1.weight"] == 0.3 and pt["add.L2-3.weight"] == 1.0
    split = r.model_copy(update={"overrides": [Override(layers=(0, 1), params={"weight": 0.3})]})
    assert sp.encode(split) is None
    mods = r.model_copy(update={"overrides": [Override(modules=["q_proj"], params={"weight": 0.3})]})
    assert sp.encode(mods) is None


DF_MODELS = {"a": "/m/add", "b": "/m/sort"}


def dspace(**kw):
    return build_space({"kind": "dataflow", "models": DF_MODELS, "num_layers": 2, **kw})


@pytest.mark.parametrize("kw", [dict(scaling="input"), dict(scaling="full", repeats=1), dict(scaling="factored"),
                                dict(scaling="none"), dict(scaling="input", first={"model": "a", "layer": 0},
                                                           last={"model": "a", "layer": -1})])
def test_dataflow_decode_of_encode_is_the_recipe(kw):
    sp = dspace(**kw)
    rng = np.random.default_rng(1)
    n = 0
    for point in [sp.default_point()] + [sp.sample(rng) for _ in range(40)]:
        try:
            recipe = sp.decode(point)
        except Exception:
            continue
        enc = sp.encode(recipe)
        if kw["scaling"] == "factored" and not recipe.all_scales_one():
            assert enc is None  # factored scales are not solved for
            continue
        assert enc is not None and sp.decode(enc) == recipe
        n += 1
    assert n > 0


def test_dataflow_encodes_a_source_as_the_path_through_it():
    ps = {"kind": "merge", "method": "linear", "models": [{"model": "/m/add"}, {"model": "/m/sort"}]}
    sp = build_space({"kind": "dataflow", "models": {"ps": ps, "b": "/m/sort"}, "num_layers": {"ps": 2, "b": 2}})
    assert sp.encode(MergeRecipe.model_validate(ps)) == sp.default_point()
    assert sp.encode("ps") == sp.default_point()
    assert sp.encode("/m/sort") is None  # embedding and head come from ps: not the sort model alone
    other = DataFlowRecipe(models={"b": "/m/sort"}, path=[PathStep(model="b", layer=0)], embed="b", head="b")
    assert sp.encode(other) is None


def test_a_linear_merge_summing_to_one_encodes_as_task_arithmetic():
    """sum e_i theta_i == base + sum e_i (theta_i - base) when the effective weights e_i sum to 1."""
    sp = pspace(method="task_arithmetic", granularity=2, weight={"low": 0.0, "high": 1.0})
    average = MergeRecipe(method="linear", models=[ModelSource(model=m) for m in MODELS])
    point = sp.encode(average)
    assert point is not None and list(point.values()) == pytest.approx([1 / 3] * len(point))
    uneven = MergeRecipe(method="linear", models=[ModelSource(model=m, params={"weight": w})
                                                  for m, w in zip(MODELS, (2.0, 1.0, 1.0))])
    assert sorted(set(np.round(list(sp.encode(uneven).values()), 9))) == [0.25, 0.5]
    raw = MergeRecipe(method="linear", params={"normalize": False}, models=[ModelSource(model=m) for m in MODELS])
    assert sp.encode(raw) is None  # weights sum to 3: not task arithmetic over the base
    with_base = MergeRecipe(method="linear", models=[ModelSource(model=m) for m in [BASE] + MODELS[:2]])
    assert sp.encode(with_base) is None
    assert pspace(**SPACES["ties_layerwise"]).encode(average) is None  # TIES cannot hold it
