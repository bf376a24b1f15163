"""Data-flow recipes <-> mergekit ``passthrough`` YAML (contiguous slices, all scales 1).

mergekit takes the embedding from the first slice's model and the final norm / ``lm_head`` from the last
slice's model, so only recipes whose ``embed`` / ``head`` follow that rule, with plain model references as
sources, can be written.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from evomerge.errors import ConfigError, EvomergeError
from evomerge.models.paths import portable_ref
from evomerge.recipe.dataflow import DataFlowRecipe, LayerSlice
from evomerge.yaml_io import read_yaml_text_or_file


def path_to_slices(recipe: DataFlowRecipe) -> list[LayerSlice]:
    """Group the path into maximal runs of consecutive layers of one model."""
    out: list[LayerSlice] = []
    for s in recipe.steps():
        last = out[-1] if out else None
        if last is not None and last.model == s.model and last.layers[1] == s.layer:
            out[-1] = LayerSlice(model=s.model, layers=(last.layers[0], s.layer + 1))
        else:
            out.append(LayerSlice(model=s.model, layers=(s.layer, s.layer + 1)))
    return out


def to_mergekit_passthrough(recipe: DataFlowRecipe, resolve: bool = True) -> str:
    """mergekit YAML for the recipe; raises EvomergeError if the recipe is not expressible that way."""
    if not recipe.all_scales_one():
        raise EvomergeError("mergekit passthrough cannot express scaled steps; export a checkpoint instead")
    slices = path_to_slices(recipe)
    if recipe.embed_model() != slices[0].model or recipe.head_model() != slices[-1].model:
        raise EvomergeError("mergekit passthrough takes the embedding from the first slice's model and the head "
                            "from the last slice's; this recipe's embed/head differ")
    refs = {}
    for name in recipe.used_models():
        src = recipe.models[name]
        if not isinstance(src, str):
            raise EvomergeError(f"model {name!r} is a nested merge recipe, which mergekit passthrough cannot name")
        refs[name] = portable_ref(src) if resolve else src
    doc = {
        "slices": [{"sources": [{"model": refs[s.model], "layer_range": list(s.layers)}]} for s in slices],
        "merge_method": "passthrough",
        "dtype": recipe.dtype,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def from_mergekit_passthrough(text_or_path: str | Path) -> DataFlowRecipe:
    """A ``slices`` data-flow recipe from mergekit passthrough YAML (text or file path)."""
    doc = read_yaml_text_or_file(text_or_path, "mergekit YAML", "mergekit config")
    if not isinstance(doc, dict) or doc.get("merge_method") != "passthrough" or not doc.get("slices"):
        raise ConfigError("not a mergekit passthrough config (needs merge_method: passthrough and slices)")
    names: dict[str, str] = {}
    slices = []
    for i, sl in enumerate(doc["slices"]):
        srcs = sl.get("sources") if isinstance(sl, dict) else None
        if not srcs or len(srcs) != 1 or "layer_range" not in srcs[0] or "model" not in srcs[0]:
            raise ConfigError(f"mergekit slice {i}: passthrough needs exactly one source with model and layer_range")
        if srcs[0].get("parameters"):
            raise ConfigError(f"mergekit slice {i}: per-source parameters are not supported in data-flow recipes")
        ref = str(srcs[0]["model"])
        if ref not in names:
            names[ref] = _alias(ref, set(names.values()))
        slices.append({"model": names[ref], "layers": list(srcs[0]["layer_range"])})
    data = {"kind": "dataflow", "models": {a: r for r, a in names.items()}, "slices": slices}
    if doc.get("dtype") in ("float32", "float16", "bfloat16"):
        data["dtype"] = doc["dtype"]
    from evomerge.recipe import recipe_from_dict

    return recipe_from_dict(data)


def _alias(ref: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]+", "_", Path(ref.rstrip("/")).name).strip("_") or "model"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name
