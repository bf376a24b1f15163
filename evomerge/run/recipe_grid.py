"""A recipe as grids of numbers for heat maps: per layer and per (model, module group) the method parameters a
merge recipe puts in force (weight, density, ...), or per path step the layer and scale a data-flow recipe
takes from each model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from evomerge.models.roles import module_label
from evomerge.recipe import recipe_from_dict
from evomerge.recipe.dataflow import DataFlowRecipe
from evomerge.recipe.merge import MergeRecipe

NAN = float("nan")


@dataclass
class Grid:
    title: str
    rows: list[str]
    cols: list[str]
    values: list[list[float]]  # rows x cols, NaN where nothing applies
    xlabel: str = "layer"
    labels: Optional[list[list[str]]] = None  # cell text (default: the value)

    @property
    def vmid(self) -> Optional[float]:
        vals = [v for row in self.values for v in row if not math.isnan(v)]
        return (min(vals) + max(vals)) / 2 if vals else None


def short_name(ref: str) -> str:
    """``zoo://full/add`` -> ``add``, ``org/name@rev`` -> ``name``, a folder -> its last part."""
    return ref.rstrip("/").split("/")[-1].split("@")[0] or ref


def recipe_grids(recipe: dict[str, Any] | MergeRecipe | DataFlowRecipe, n_layers: Optional[int] = None,
                 prefix: str = "") -> list[Grid]:
    """The heat-map grids of one recipe (``n_layers``: decoder layers, default the highest layer a per-layer
    override names)."""
    r = recipe_from_dict(recipe) if isinstance(recipe, dict) else recipe
    if isinstance(r, DataFlowRecipe):
        return _dataflow_grids(r, n_layers, prefix)
    return _merge_grids(r, n_layers, prefix)


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _merge_grids(r: MergeRecipe, n_layers: Optional[int], prefix: str) -> list[Grid]:
    names: list[str] = []
    for params in [r.params, *(m.params for m in r.models), *(ov.params for ov in r.overrides)]:
        names += [k for k, v in params.items() if _numeric(v) and k not in names]
    if not names:
        return []
    ends = [ov.layers[1] for ov in r.overrides if ov.layers is not None]
    n = n_layers or (max(ends) if ends else 0)
    groups: list[Optional[tuple[str, ...]]] = []
    for ov in r.overrides:
        g = tuple(ov.modules) if ov.modules is not None else None
        if g is not None and g not in groups:
            groups.append(g)
    groups = groups or [None]
    layers: list[Optional[int]] = list(range(n)) if n else [None]
    cols = [str(i) for i in range(n)] if n else ["all layers"]
    out = []
    for name in names:
        rows, values = [], []
        for m in r.models:
            for g in groups:
                label = f" {module_label(g)}" if g is not None and len(groups) > 1 else ""
                rows.append(short_name(m.model) + label)
                module = f".{g[0].strip('.')}" if g else ""
                row = []
                for li in layers:
                    tensor = f"model.layers.{li if li is not None else 0}{module}.weight"
                    v = r.resolve_params(m.model, tensor, li if li is not None else "from_name").get(name)
                    row.append(float(v) if _numeric(v) else NAN)
                values.append(row)
        out.append(Grid(f"{prefix}{r.method}: {name}", rows, cols, values))
    return out


def _dataflow_grids(r: DataFlowRecipe, n_layers: Optional[int], prefix: str) -> list[Grid]:
    steps = r.steps()
    models = list(r.models)
    values = [[s.scale if s.model == m else NAN for s in steps] for m in models]
    labels = [[f"L{s.layer}" if s.model == m else "" for s in steps] for m in models]
    out = [Grid(f"{prefix}data-flow path: the layer each step takes (text) and its input scale (colour)",
                [m if isinstance(r.models[m], MergeRecipe) else f"{m} ({short_name(r.models[m])})" for m in models],
                [str(i) for i in range(len(steps))], values, xlabel="path step", labels=labels)]
    for m, src in r.models.items():
        if isinstance(src, MergeRecipe):
            out += _merge_grids(src, n_layers, prefix=f"{prefix}model {m} = ")
    return out
