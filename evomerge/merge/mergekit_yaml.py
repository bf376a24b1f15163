"""mergekit YAML interop: ``to_mergekit_yaml(recipe)`` for every method mergekit has, and
``from_mergekit_yaml(text)`` for configs whose semantics our recipe expresses.

Export is exact: without overrides a ``models:`` config; with per-layer / per-module overrides a ``slices:``
config with one slice per run of layers that share the same parameters, where parameters that differ between
tensors become mergekit filter lists (``[{filter: ".mlp.up_proj.weight", value: ...}, ...]``, first match
wins). Embeddings / final norm / lm_head are resolved by mergekit with the first or last slice, so those
slices also carry filters naming them in full. Every parameter is written explicitly (defaults resolved).
A recipe's ``vocab`` rule is mergekit's ``tokenizer_source`` (``base`` / ``union``), written when it matters
(union, or models whose vocabularies differ) and read back.
"""

from __future__ import annotations

from typing import Any, Optional

import yaml

from evomerge.errors import ConfigError, EvomergeError
from evomerge.merge.plan import input_models, resolve_tensor_params, validate_recipe
from evomerge.models.paths import portable_ref
from evomerge.recipe import MergeRecipe, recipe_from_dict
from evomerge.yaml_io import read_yaml_text_or_file

_MK_TO_OURS = {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp", "breadcrumbs",
               "breadcrumbs_ties", "della", "della_linear"}


def to_mergekit_yaml(recipe: MergeRecipe, resolve_refs: bool = True) -> str:
    """A mergekit config reproducing ``recipe`` with ``mergekit-yaml``. Model references are resolved to
    folders (mergekit does not know ``zoo://``; hub names stay names) unless ``resolve_refs`` is false."""
    method = validate_recipe(recipe)
    if not method.mergekit_name:
        raise EvomergeError(f"merge method {recipe.method!r} has no mergekit equivalent")
    ref = portable_ref if resolve_refs else (lambda r: r)
    models = input_models(recipe, method)
    base = recipe.base if method.needs_base else None
    cfg: dict[str, Any] = {"merge_method": method.mergekit_name}
    if base:
        cfg["base_model"] = ref(base)
    shared_names = [p.name for p in method.params if p.scope == "global"]
    model_names = [p.name for p in method.params if p.scope == "model"]
    if not recipe.overrides:
        p = resolve_tensor_params(recipe, method, models, "", None)
        cfg["models"] = [{"model": ref(m), "parameters": {k: p.per_model[k][i] for k in model_names}}
                         for i, m in enumerate(models)]
        if shared_names:
            cfg["parameters"] = {k: p.shared[k] for k in shared_names}
    else:
        cfg["slices"] = _slices(recipe, method, models, base, ref, shared_names, model_names)
    if recipe.vocab == "union" or _vocab_differs([base] + models if base else models):
        cfg["tokenizer_source"] = recipe.vocab  # mergekit aligns vocabularies only when told to
    cfg["dtype"] = "float32"
    if recipe.dtype != "float32":
        cfg["out_dtype"] = recipe.dtype
    return yaml.dump(cfg, Dumper=_NoAliasDumper, sort_keys=False)


def _vocab_differs(refs: list[str]) -> bool:
    """Whether the models' token-indexed tensors differ in rows (False when a folder cannot be read here)."""
    from evomerge.models.safetensors_io import open_checkpoint
    from evomerge.models.vocab import vocab_tensors

    try:
        return bool(vocab_tensors([open_checkpoint(r) for r in refs])[0])
    except EvomergeError:
        return False


def _vocab_rule(cfg: dict) -> str:
    """``vocab`` of a mergekit config: its ``tokenizer_source`` (or ``tokenizer: {source: ...}``), base or union."""
    tok = cfg.get("tokenizer")
    if tok is not None and (not isinstance(tok, dict) or set(tok) - {"source"}):
        raise EvomergeError("cannot import mergekit configs whose 'tokenizer' sets more than its source "
                            "(tokens, pad_to_multiple_of)")
    source = cfg.get("tokenizer_source") or (tok or {}).get("source") or "base"
    if source not in ("base", "union"):
        raise EvomergeError(f"mergekit tokenizer source {source!r} cannot be imported "
                            "(evomerge takes base or union)")
    return source


def _lead_names(recipe: MergeRecipe, models: list[str], base: Optional[str]):
    return _names_of(base or models[0])


def _setting(entries: list[tuple[str, Any]]) -> Any:
    """A scalar when every tensor has the same value, else a filter list: the tensors that differ from the
    most common value (longest filter first), then that value as the catch-all."""
    values = [v for _, v in entries]
    common = max(dict.fromkeys(values), key=values.count)
    if all(v == common for v in values):
        return common
    rest = sorted((e for e in entries if e[1] != common), key=lambda e: -len(e[0]))
    return [{"filter": f, "value": v} for f, v in rest] + [{"value": common}]


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def _slices(recipe, method, models, base, ref, shared_names, model_names) -> list[dict]:
    names, layout = _lead_names(recipe, models, base)
    n_layers = layout.num_layers
    by_layer: dict[int, list[str]] = {}
    outside: list[str] = []
    for n in names:
        i = layout.layer_of(n)
        (outside if i is None else by_layer.setdefault(i, [])).append(n)

    def spec(tensors: list[str], full: bool, layer: int = -1) -> dict:
        """(param -> [(filter, value)]) for shared and for each model over ``tensors``."""
        shared: dict[str, list] = {k: [] for k in shared_names}
        per: dict[str, dict[str, list]] = {m: {k: [] for k in model_names} for m in models}
        for t in sorted(tensors):
            filt = t if full else "." + t.split(f"{layout.prefix}.{layer}.", 1)[1]
            p = resolve_tensor_params(recipe, method, models, t, layout.layer_of(t))
            for k in shared_names:
                shared[k].append((filt, p.shared[k]))
            for i, m in enumerate(models):
                for k in model_names:
                    per[m][k].append((filt, p.per_model[k][i]))
        return {"shared": shared, "per": per}

    layer_specs = [spec(by_layer.get(i, []), False, i) for i in range(n_layers)]
    groups: list[list[int]] = []
    for i in range(n_layers):
        if groups and layer_specs[i] == layer_specs[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    extra = spec(outside, True)
    slices = []
    for gi, g in enumerate(groups):
        s = layer_specs[g[0]]
        add_extra = gi == 0 or gi == len(groups) - 1
        rng = [g[0], g[-1] + 1]

        def merged(own: list, ext: list) -> Any:
            return _setting(own + (ext if add_extra else []))

        sources = []
        for m in models:
            params = {k: merged(s["per"][m][k], extra["per"][m][k]) for k in model_names}
            sources.append({"model": ref(m), "layer_range": rng, "parameters": params})
        if base and base not in models:
            sources.append({"model": ref(base), "layer_range": rng})
        out: dict[str, Any] = {"sources": sources}
        if shared_names:
            out["parameters"] = {k: merged(s["shared"][k], extra["shared"][k]) for k in shared_names}
        slices.append(out)
    return slices


# ---------------------------------------------------------------- import


def from_mergekit_yaml(text: str) -> MergeRecipe:
    """A recipe from a mergekit config (YAML text or path). Supported: ``models:`` configs, and ``slices:``
    configs whose slices tile the layers with the same models (no layer stacking); scalar parameters, filter
    lists and gradients. Tensor names are read from the base (or first) model's safetensors headers, because
    mergekit resolves embeddings / final norm / lm_head with the first / last slice at t = 0."""
    cfg = read_yaml_text_or_file(text, "mergekit YAML", "mergekit config")
    if not isinstance(cfg, dict) or "merge_method" not in cfg:
        raise ConfigError("not a mergekit config: no merge_method")
    method = cfg["merge_method"]
    if method not in _MK_TO_OURS:
        raise EvomergeError(f"mergekit method {method!r} has no evomerge equivalent")
    for key in ("modules", "chat_template"):
        if cfg.get(key):
            raise EvomergeError(f"cannot import mergekit configs that use {key!r}")
    vocab = _vocab_rule(cfg)
    base = _model_ref(cfg["base_model"]) if cfg.get("base_model") else None
    if cfg.get("slices"):
        slices = cfg["slices"]
        _check_slices(slices)
        lead = base or _model_ref(slices[0]["sources"][0]["model"])
    elif cfg.get("models"):
        bad = next((m for m in (cfg["models"] if isinstance(cfg["models"], list) else [cfg["models"]])
                    if not isinstance(m, dict) or "model" not in m), None)
        if bad is not None or not isinstance(cfg["models"], list):
            raise ConfigError(f"mergekit config: each entry of models: is a mapping with a model: key "
                              f"(got {bad if bad is not None else cfg['models']!r})")
        lead = base or _model_ref(cfg["models"][0]["model"])
        slices = None
    else:
        raise ConfigError("mergekit config has neither models nor slices")
    names, layout = _names_of(lead)
    n_layers = layout.num_layers
    if slices is None:
        slices = [{"sources": [{"model": m["model"], "layer_range": [0, n_layers], "parameters": m.get("parameters")}
                               for m in cfg["models"]]}]
    non_layer = [n for n in names if layout.layer_of(n) is None]
    pre = [n for n in non_layer if "embed" in n]
    post = [n for n in non_layer if n not in pre]
    if slices[-1]["sources"][0]["layer_range"][1] != n_layers:
        raise EvomergeError(f"slices end at layer {slices[-1]['sources'][0]['layer_range'][1]}, the model has {n_layers}")

    params: dict[str, Any] = {}
    overrides: list[dict] = []
    glob = cfg.get("parameters") or {}
    model_params = _hoist_model_scalars(slices, glob)
    for key, setting in glob.items():  # scalars: the lowest level of our recipe
        if _is_scalar(setting):
            params[key] = setting
    for si, sl in enumerate(slices):
        lo, hi = sl["sources"][0]["layer_range"]
        nl = (pre if si == 0 else []) + (post if si == len(slices) - 1 else [])
        levels = [(None, {k: v for k, v in glob.items() if not _is_scalar(v)}), (None, sl.get("parameters") or {})]
        levels += [(_model_ref(src["model"]), src.get("parameters") or {}) for src in sl["sources"]]
        for model, block in levels:
            for key, setting in block.items():
                _layer_overrides(key, setting, (lo, hi), model, overrides)
                _non_layer_overrides(key, setting, nl, model, overrides)
    models = list(dict.fromkeys(_model_ref(src["model"]) for src in slices[0]["sources"]))
    if base is not None and method != "linear":
        models = [m for m in models if m != base]
    data = {"method": method, "base": base if method != "linear" else None,
            "models": [{"model": m, "params": model_params.get(m, {})} for m in models], "params": params,
            "overrides": overrides, "vocab": vocab}
    dtype = cfg.get("out_dtype") or cfg.get("dtype")
    if dtype in ("float32", "float16", "bfloat16"):
        data["dtype"] = dtype
    return recipe_from_dict(data)


def _hoist_model_scalars(slices: list[dict], glob: dict) -> dict[str, dict]:
    """Per-model scalars that are the same in every slice and not contested by a global filter/gradient or a
    slice-level setting move to ``models[].params`` (and out of the slices), to keep the recipe small."""
    contested = {k for k, v in glob.items() if not _is_scalar(v)}
    for sl in slices:
        contested |= set(sl.get("parameters") or {})
    out: dict[str, dict] = {}
    per_model: dict[str, list[dict]] = {}
    for sl in slices:
        for src in sl["sources"]:
            per_model.setdefault(_model_ref(src["model"]), []).append(src.get("parameters") or {})
    for model, blocks in per_model.items():
        for key, value in blocks[0].items():
            if key in contested or not _is_scalar(value) or any(b.get(key) != value for b in blocks):
                continue
            out.setdefault(model, {})[key] = value
    for sl in slices:
        for src in sl["sources"]:
            hoisted = out.get(_model_ref(src["model"]), {})
            if hoisted and src.get("parameters"):
                src["parameters"] = {k: v for k, v in src["parameters"].items() if k not in hoisted}
    return out


def _is_scalar(v) -> bool:
    return isinstance(v, (bool, int, float, str))


def _names_of(ref: str):
    """Tensor names and block layout of a model folder (headers only)."""
    from evomerge.models.compat import layout_of
    from evomerge.models.safetensors_io import open_checkpoint

    ck = open_checkpoint(ref)
    return ck.names(), layout_of(ck)


def _check_slices(slices: list[dict]) -> None:
    end = 0
    first = None
    for si, s in enumerate(slices):
        if s.get("base_model") or s.get("residual_weight") is not None:
            raise EvomergeError(f"slices[{si}]: per-slice base_model / residual_weight cannot be imported")
        ranges = {tuple(src["layer_range"]) for src in s["sources"]}
        if len(ranges) != 1:
            raise EvomergeError(f"slices[{si}]: sources take different layer ranges (layer stacking) - not a "
                                "parameter merge evomerge can express")
        lo, hi = next(iter(ranges))
        if lo != end:
            raise EvomergeError(f"slices[{si}]: layer range [{lo}, {hi}] does not continue at layer {end}")
        end = hi
        names = sorted(_model_ref(src["model"]) for src in s["sources"])
        if first is None:
            first = names
        elif names != first:
            raise EvomergeError(f"slices[{si}] merges different models than slices[0]")


def _model_ref(m: Any) -> str:
    if isinstance(m, dict):
        if m.get("lora"):
            raise EvomergeError("cannot import mergekit models with LoRA adapters")
        m = m.get("model", {}).get("path") if isinstance(m.get("model"), dict) else m.get("path")
    s = str(m)
    if "+" in s:
        raise EvomergeError(f"cannot import mergekit model with LoRA adapter: {s}")
    return s


def _gradient_at(values: list, t: float):
    vals = [float(v) for v in values]
    scaled = t * (len(vals) - 1)
    i0 = int(scaled)
    i1 = min(len(vals) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * vals[i0] + frac * vals[i1]


def _conditions(setting) -> list[tuple[Optional[str], Any]]:
    """(filter, value) pairs in mergekit's first-match order; a scalar or gradient is one unfiltered pair."""
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, list) and setting and all(isinstance(e, dict) for e in setting):
        return [(None if c.get("filter") in (None, "*") else c["filter"], c["value"]) for c in setting]
    return [(None, setting)]


def _layer_overrides(key, setting, layers, model, overrides: list) -> None:
    lo, hi = layers
    n = hi - lo
    for filt, value in reversed(_conditions(setting)):  # later wins in our overrides
        extra = {"modules": [filt]} if filt else {}
        if model:
            extra["model"] = model
        if isinstance(value, list):
            for idx in range(n):
                t = idx / (n - 1) if n > 1 else 1.0
                overrides.append({"layers": (lo + idx, lo + idx + 1), "params": {key: _gradient_at(value, t)},
                                  **extra})
        else:
            overrides.append({"layers": (lo, hi), "params": {key: value}, **extra})
    # filters of a layer override also reach non-layer tensors they name; _non_layer_overrides comes after


def _non_layer_overrides(key, setting, names: list[str], model, overrides: list) -> None:
    """Exact values for embeddings / norm / lm_head (evaluated at t = 0), or clear the layer filters' effect."""
    all_non_layer = names
    by_value: dict[Any, list[str]] = {}
    for name in all_non_layer:
        for filt, value in _conditions(setting):
            if filt is None or filt in name:
                v = value[0] if isinstance(value, list) else value
                by_value.setdefault(v, []).append(name)
                break
    for v, group in by_value.items():
        ov = {"modules": group, "params": {key: v}}
        if model:
            ov["model"] = model
        overrides.append(ov)
