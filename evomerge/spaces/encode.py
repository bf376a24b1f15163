"""Recipe -> point: the inverse of the spaces' ``decode``, where a space can express a recipe.

``encode_parameter(space, recipe)`` gives the point of a parameter space whose decoded recipe merges exactly
what ``recipe`` merges (the same method parameters for every source and tensor), or None. A recipe need not
have the space's shape: a simple merge (one weight per model, no overrides) encodes into a layer-wise space as
the same value in every group; task arithmetic's ``lambda`` folds into the weights when the space has no
``lambda`` and the method does not normalise (``lambda * sum w_i d_i = sum (lambda w_i) d_i``); a linear merge
whose effective weights sum to 1 (the uniform average) encodes into a task-arithmetic space as task arithmetic
over the space's base. Equality is
checked on probe tensors: one per decoder layer and module group, one outside the layers (embeddings, head)
and, with module groups, one in a layer outside every group; the point is returned only when its decoded
recipe resolves the same parameters as ``recipe`` on every probe.

``encode_dataflow(space, recipe)`` gives the point of a data-flow space for a data-flow recipe whose path the
space can select (and scale), or for a source of the space (a model name, reference or nested recipe that is
one of its models): the path straight through that model's layers, when it also gives embedding and head.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from evomerge.models.roles import expand_modules
from evomerge.spaces.base import Point, SearchSpace

_REL = 1e-12  # relative tolerance of the probe comparison (the lambda fold rounds)


def _method(name: str):
    from evomerge.merge.registry import MERGE_METHODS

    return MERGE_METHODS.get(name)


def _deterministic(cls) -> bool:
    """The merge does not draw random numbers (so the recipe's seed does not matter)."""
    return getattr(cls, "sparsifier", None) in (None, "magnitude", "outliers")


def _probes(space: SearchSpace, recipe) -> list[tuple[str, Optional[int], Optional[str]]]:
    """(tensor name, layer, slot) probes; slot: the space's group tag, or None for the model-level params."""
    n = max([0] + [g[0][1] for g in space.groups if g[0] is not None]
            + [ov.layers[1] for ov in recipe.overrides if ov.layers is not None]) or 1
    probes: list[tuple[str, Optional[int], Optional[str]]] = [("model.embed_tokens.weight", None, None)]
    module_groups = [g for g in (space.cfg.modules or [])]
    for i in range(n):
        for mods in module_groups or [None]:
            name = f"model.layers.{i}.{expand_modules(mods)[0].strip('.') if mods else 'probe'}.probe.weight"
            tag = None
            for layers, gmods in space.groups:
                if layers is None and gmods is None:
                    break  # a single group: the model-level params apply everywhere
                in_range = layers is None or layers[0] <= i < layers[1]
                if in_range and gmods == mods:
                    tag = space._group_tag(layers, gmods)
            probes.append((name, i, tag))
        if module_groups:
            probes.append((f"model.layers.{i}.evomerge_other.probe.weight", i, None))
    return probes


def _resolved(recipe, probes, models: list[str], keys: list[str], defaults: dict[str, Any]):
    """Per (model, probe): the values of ``keys`` the recipe resolves (method defaults where unset)."""
    return {(m, name): {k: recipe.resolve_params(m, name, layer).get(k, defaults[k]) for k in keys}
            for m in models for name, layer, _ in probes}


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=_REL, abs_tol=_REL)


def encode_parameter(space: SearchSpace, recipe) -> Optional[Point]:
    from evomerge.recipe import MergeRecipe

    cfg = space.cfg
    if isinstance(recipe, MergeRecipe) and recipe.method == "linear" and "linear" not in space.methods:
        recipe = _linear_as_task_arithmetic(recipe, cfg.base) if "task_arithmetic" in space.methods else None
    if not isinstance(recipe, MergeRecipe) or recipe.method not in space.methods:
        return None
    cls = _method(recipe.method)
    specs = {p.name: p for p in cls.params}
    if recipe.dtype != cfg.dtype or (recipe.seed != cfg.seed and not _deterministic(cls)):
        return None
    if cls.needs_base and recipe.base != cfg.base:
        return None
    if sorted(m.model for m in recipe.models) != sorted(cfg.models):
        return None
    module_groups = [sorted(g) for g in (cfg.modules or [])] + [sorted(expand_modules(g)) for g in (cfg.modules or [])]
    for ov in recipe.overrides:  # module filters the probes cannot stand for, or per-layer global params
        if ov.modules is not None and sorted(ov.modules) not in module_groups:
            return None
        if any(specs.get(k) is None or specs[k].scope == "global" for k in ov.params):
            return None
    takes = space._takes[recipe.method]
    for m in recipe.models:
        if any(k not in specs or (k not in takes and m.params[k] != specs[k].default) for k in m.params):
            return None
    # global parameters: the space's extra params take the recipe's value, every other must agree
    glob_specs = {k: s for k, s in specs.items() if s.scope == "global"}
    extra = {p.name for p in space.params[len(space.params) - len(cfg.extra):]}
    want = {k: recipe.params.get(k, s.default) for k, s in glob_specs.items()}
    if any(k not in glob_specs for k in recipe.params):
        return None
    space_glob = {k: cfg.fixed.get(k, s.default) for k, s in glob_specs.items()}
    factor = 1.0
    point: Point = {}
    if len(space.methods) > 1:
        point["method"] = recipe.method
    for k in glob_specs:
        if k in extra:
            point[k] = want[k]
        elif not _close(want[k], space_glob[k]):
            fold = (k == "lambda" and "lambda" not in extra and not want.get("normalize", False)
                    and "weight" in takes and float(space_glob[k]) > 0 and float(want[k]) > 0)
            if not fold:
                return None
            factor = float(want[k]) / float(space_glob[k])
    probes = _probes(space, recipe)
    defaults = {k: specs[k].default for k in takes}
    target = _resolved(recipe, probes, cfg.models, takes, defaults)
    if factor != 1.0:
        target = {key: {**v, "weight": v["weight"] * factor} for key, v in target.items()}
    for ref, short in zip(cfg.models, space.shorts):
        for name, _, tag in probes:
            prefix = short if tag is None else f"{short}.{tag}"
            for k, v in target[(ref, name)].items():
                pname = f"{prefix}.{k}"
                if pname in point and not _close(point[pname], v):
                    return None  # the recipe varies inside one of the space's groups
                point[pname] = v
    params = {p.name: p for p in space.params}
    point = {p.name: point[p.name] for p in space.params if p.name in point and p.is_active(point)}
    if any(not params[k].contains(v) for k, v in point.items()):
        return None
    try:
        decoded = space.decode(point)
    except Exception:
        return None
    got = _resolved(decoded, probes, cfg.models, takes, defaults)
    same = all(_close(got[key][k], target[key][k]) for key in target for k in takes)
    same = same and all(_close(decoded.params.get(k, s.default), space_glob[k] if k not in extra else want[k])
                        for k, s in glob_specs.items())
    return point if same else None


def _linear_as_task_arithmetic(recipe, base: Optional[str]):
    """A linear merge of fine-tunes of ``base`` as task arithmetic over it, or None: with effective weights
    e_i (w_i / sum w when normalised) summing to 1, ``sum e_i theta_i == base + sum e_i (theta_i - base)``.
    Only recipes without per-layer overrides that leave the base out of the models are rewritten."""
    from evomerge.recipe import MergeRecipe, ModelSource

    if base is None or recipe.overrides or any(m.model == base for m in recipe.models):
        return None
    weights = [float(m.params.get("weight", 1.0)) for m in recipe.models]
    total = sum(weights)
    if recipe.params.get("normalize", True):
        if abs(total) < 1e-8:
            return None
        weights = [w / total for w in weights]
    if not _close(sum(weights), 1.0):
        return None
    models = [ModelSource(model=m.model, params={"weight": w}) for m, w in zip(recipe.models, weights)]
    return MergeRecipe(method="task_arithmetic", base=base, params={"lambda": 1.0}, models=models,
                       dtype=recipe.dtype, seed=recipe.seed, vocab=recipe.vocab, random_stream=recipe.random_stream)


def _same_source(a: Any, b: Any) -> bool:
    dump = (lambda x: x if isinstance(x, str) else x.model_dump(mode="json"))
    return dump(a) == dump(b)


def encode_dataflow(space: SearchSpace, recipe) -> Optional[Point]:
    from evomerge.recipe import MergeRecipe
    from evomerge.recipe.dataflow import DataFlowRecipe, PathStep

    cfg = space.cfg
    if isinstance(recipe, (str, MergeRecipe)):  # a source of the space: the path straight through it
        name = next((n for n, src in cfg.models.items() if n == recipe or _same_source(src, recipe)), None)
        if name is None:
            return None
        recipe = DataFlowRecipe(models={name: cfg.models[name]}, embed=name, head=name, max_depth=space.max_depth,
                                dtype=cfg.dtype, path=[PathStep(model=name, layer=i)
                                                       for i in range(space.n_layers[name])])
    if not isinstance(recipe, DataFlowRecipe) or recipe.dtype != cfg.dtype:
        return None
    steps = recipe.steps()
    embed, head = recipe.embed_model(), recipe.head_model()
    for n in {s.model for s in steps} | {embed, head}:
        if n not in cfg.models or not _same_source(cfg.models[n], recipe.models[n]):
            return None
    if embed != space.embed or head != space.head:
        return None
    layers = [(s.model, s.layer) for s in steps]
    inner = layers[1 if space.first else 0: len(layers) - (1 if space.last else 0)]
    if (space.first and layers[:1] != [space.first]) or (space.last and layers[-1:] != [space.last]):
        return None
    point: Point = {}
    pos = 0
    for r, n, i in space.slots:  # the path must be a subsequence of the slot order
        take = pos < len(inner) and inner[pos] == (n, i)
        point[f"r{r}.{space.layer_id((n, i))}"] = take
        pos += take
    if pos < len(inner):
        return None
    prev = None
    for step, layer in zip(steps, layers):
        j = space.layer_id(layer)
        key = {"input": f"in.{j}", "full": f"w.{space.source_id(prev)}>{j}"}.get(
            cfg.scaling)
        if key is None:  # none / factored: only the unscaled path (every factor 1) is encoded
            if not _close(step.scale, 1.0):
                return None
        elif key in point and not _close(point[key], step.scale):
            return None
        else:
            point[key] = step.scale
        prev = layer
    full: Point = {}
    for p in space.params:
        if p.is_active(full):
            full[p.name] = point.get(p.name, p.default_value())
            if not p.contains(full[p.name]):
                return None
    try:
        decoded = space.decode(full)
    except Exception:
        return None
    same = ([(s.model, s.layer) for s in decoded.path] == layers
            and all(_close(a.scale, b.scale) for a, b in zip(decoded.path, steps)))
    return full if same else None
