"""The parameter-space family: per model, per layer group and module group, a weight (and density).

For N models and L decoder layers split into groups of ``granularity`` layers, and optional module groups
(e.g. ``[[self_attn], [mlp]]``), the space holds, for every model:

- ``<model>.weight`` (and ``<model>.density`` where the method takes one): used for tensors outside the
  decoder layers (embeddings, final norm, lm_head), and for every tensor when there is a single group;
- ``<model>.L<a>-<b>[.<modules>].weight`` / ``.density`` per group otherwise, decoded into recipe overrides.

The merge method is either fixed or a categorical parameter ``method``; densities are then conditional on a
method that takes a density. ``extra`` lists further free global method parameters (e.g. ``lambda``), and
``fixed`` global parameters that are not searched. Example (``search_spaces/ties_layerwise.yaml``)::

    kind: parameter
    method: ties
    granularity: 2
    weight: {low: 0.0, high: 1.0}
    density: {low: 0.1, high: 1.0}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from evomerge.errors import ConfigError
from evomerge.recipe import MergeRecipe, ModelSource, Override, _one_line
from evomerge.models.roles import check_module_entries, expand_modules
from evomerge.spaces.base import Point, SearchSpace
from evomerge.spaces.params import CategoricalParam, FloatParam, Param, ParamValue
from evomerge.spaces.registry import SEARCH_SPACES

# Per-model method parameters this space can search, in the order they appear per model.
SEARCHABLE = ("weight", "density")


class Bounds(BaseModel):
    """The interval a searched parameter takes."""

    model_config = ConfigDict(extra="forbid")
    low: float = Field(description="lowest value")
    high: float = Field(description="highest value")
    default: Optional[float] = Field(None, description="the space's default point (None: the middle)")


class ParameterSpaceConfig(BaseModel):
    """The YAML definition of a parameter space (models/base usually come from the experiment config)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("parameter", description="parameter: merge-method parameters per model, layer group and module")
    description: str = Field("", description="free text")
    method: Union[str, list[str]] = Field(description="merge method, or a list of them (the method becomes a searched "
                                                      "choice)")
    base: Optional[str] = Field(None, description="base model (usually from the job's base)")
    models: list[str] = Field(default_factory=list, description="models (usually from the job's models)")
    num_layers: Optional[int] = Field(default=None, ge=1,
                                      description="decoder layers of the models (None: read from config.json)")
    granularity: Optional[int] = Field(default=None, ge=1, description="layers per group; null: one group")
    modules: Optional[list[list[str]]] = Field(None,
                                               description="module groups searched separately: lists of roles "
                                                           "(attention, mlp, norm, embedding, head) or tensor-name "
                                                           "filters")
    weight: Bounds = Field(Bounds(low=0.0, high=1.0), description="bounds of each model's weight")
    density: Bounds = Field(Bounds(low=0.1, high=1.0),
                            description="bounds of each model's density (TIES, DARE, breadcrumbs, DELLA)")
    fixed: dict[str, ParamValue] = Field(default_factory=dict,
                                         description="method parameters held at a value instead of searched")
    extra: list[dict[str, Any]] = Field(default_factory=list,
                                        description="further searched parameters (name, bounds, scope)")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32",
                                                             description="the recipes' dtype (the export's, and the "
                                                                         "live model's by default)")
    seed: int = Field(0, description="the recipes' seed (stochastic methods)")
    vocab: Literal["base", "union"] = Field("base",
                                            description="vocabularies that differ: the base's rows, or the union of "
                                                        "all")

    @field_validator("method")
    @classmethod
    def _methods(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("method list is empty")
        return v

    @field_validator("modules")
    @classmethod
    def _modules(cls, v):
        if v is not None and (not v or any(not g for g in v)):
            raise ValueError("modules must be a non-empty list of non-empty name-filter lists")
        return v


def method_searchable_params(method: str) -> list[str]:
    """The per-model parameters of ``method`` this space searches (subset of SEARCHABLE), via the merge engine."""
    from evomerge.merge.registry import MERGE_METHODS

    cls = MERGE_METHODS.get(method)
    return [p.name for p in cls.params if p.scope == "model" and p.name in SEARCHABLE]


def _check_against_method(method: str, name: str, bounds: "Bounds", n_models: int) -> None:
    """Refuse a space whose bounds leave the method's declared domain (a bounded space, never clamp later)."""
    from evomerge.merge.registry import MERGE_METHODS

    cls = MERGE_METHODS.get(method)
    if n_models < cls.min_models or (cls.max_models is not None and n_models > cls.max_models):
        raise ConfigError(f"merge method {method!r} takes {cls.min_models}..{cls.max_models or 'any'} models, "
                          f"the space has {n_models}")
    spec = cls.param(name)
    if spec is None or spec.bounds is None:
        return
    lo, hi = spec.bounds
    if bounds.low < lo or bounds.high > hi or (spec.open_low and bounds.low <= lo) or (spec.open_high and bounds.high >= hi):
        raise ConfigError(f"{name} bounds [{bounds.low}, {bounds.high}] leave the domain of {method!r} "
                          f"({'(' if spec.open_low else '['}{lo}, {hi}{')' if spec.open_high else ']'})")


def _short_names(models: list[str]) -> list[str]:
    from evomerge.models.hub import display_name

    shorts = [Path(display_name(m).rstrip("/")).name or m for m in models]
    if len(set(shorts)) == len(shorts):
        return shorts
    return [f"m{i}" for i in range(len(models))]


def read_num_layers(ref: str) -> int:
    from evomerge.models import resolve_model

    if ref.startswith("zoo://"):  # a zoo not built yet: its planned depth (validation must not build it)
        from evomerge.zoo.settings import VARIANTS, unbuilt_zoo

        if (variant := unbuilt_zoo(ref)) is not None:
            return VARIANTS[variant].model.num_layers
    from evomerge.models.hub import headers_only

    with headers_only():  # a hub model's config.json, not its weights
        path = Path(resolve_model(ref)) / "config.json"
    if not path.exists():
        raise ConfigError(f"cannot read the layer count of {ref!r} (no config.json in {path.parent}); "
                          "set num_layers")
    cfg = json.loads(path.read_text())
    from evomerge.models.arch import config_layers

    n = config_layers(cfg) if isinstance(cfg, dict) else None
    if n is not None:
        return n
    raise ConfigError(f"{ref}: config.json names no layer count; set num_layers in the space")


@SEARCH_SPACES.register("parameter")
class ParameterSpace(SearchSpace):
    """Weights (and densities) per model x layer group x module group for a parameter-space merge."""

    def __init__(self, cfg: ParameterSpaceConfig):
        self.cfg = cfg
        methods = [cfg.method] if isinstance(cfg.method, str) else list(cfg.method)
        self.methods = methods
        self._takes = {m: method_searchable_params(m) for m in methods}
        for m, takes in self._takes.items():
            if "weight" not in takes:
                raise ConfigError(f"merge method {m!r} has no per-model weight; the parameter space cannot search it")
        if not cfg.models:
            raise ConfigError("the search space has no models to merge (set models in the experiment)")
        from evomerge.merge.registry import MERGE_METHODS

        for m in methods:
            if MERGE_METHODS.get(m).needs_base and not cfg.base:
                raise ConfigError(f"merge method {m!r} needs a base model; set base in the experiment or space")
        if len(set(cfg.models)) != len(cfg.models):
            raise ConfigError(f"models listed twice: {cfg.models}")
        for name, b in (("weight", cfg.weight), ("density", cfg.density)):
            if b.low >= b.high:
                raise ConfigError(f"{name} bounds inverted or empty (low={b.low} >= high={b.high})")
            if b.default is not None and not (b.low <= b.default <= b.high):
                raise ConfigError(f"{name} default {b.default} outside [{b.low}, {b.high}]")
            for m in methods:
                if name in self._takes[m]:
                    _check_against_method(m, name, b, len(cfg.models))
        self.shorts = _short_names(cfg.models)
        self.groups = self._layer_groups()
        self._params = self._build_params()
        self.check_params()

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "ParameterSpace":
        try:
            parsed = ParameterSpaceConfig.model_validate(cfg)
        except ValidationError as exc:
            raise ConfigError(f"invalid parameter space: {_one_line(exc)}") from None
        return cls(parsed)

    # ---- structure ------------------------------------------------------------------------------------------

    def _layer_groups(self) -> list[tuple[Optional[tuple[int, int]], Optional[list[str]]]]:
        """(layer range, module filter) per group; [(None, None)] when the space has a single group."""
        cfg = self.cfg
        if cfg.granularity is None and cfg.modules is None:
            return [(None, None)]
        ranges: list[Optional[tuple[int, int]]] = [None]
        if cfg.granularity is not None:
            n = cfg.num_layers or read_num_layers(cfg.base or cfg.models[0])
            if cfg.granularity < n:
                ranges = [(a, min(a + cfg.granularity, n)) for a in range(0, n, cfg.granularity)]
        mods: list[Optional[list[str]]] = list(cfg.modules) if cfg.modules else [None]
        return [(r, m) for r in ranges for m in mods]

    def check_modules(self, names: list[str], model: str) -> None:
        """Every role or filter of the module groups matches a tensor of ``model`` (``names``: its tensors)."""
        for entries in self.cfg.modules or []:
            check_module_entries(entries, names, model)

    @staticmethod
    def _group_tag(layers, modules) -> str:
        parts = []
        if layers is not None:
            parts.append(f"L{layers[0]}-{layers[1] - 1}")
        if modules is not None:
            parts.append("+".join(modules))
        return ".".join(parts)

    def _build_params(self) -> list[Param]:
        cfg = self.cfg
        params: list[Param] = []
        density_cond = None
        if len(self.methods) > 1:
            params.append(CategoricalParam(name="method", choices=self.methods))
            with_density = [m for m in self.methods if "density" in self._takes[m]]
            density_cond = {"method": with_density} if with_density else None
            any_density = bool(with_density)
        else:
            any_density = "density" in self._takes[self.methods[0]]

        def add(prefix: str) -> None:
            params.append(FloatParam(name=f"{prefix}.weight", low=cfg.weight.low, high=cfg.weight.high,
                                     default=cfg.weight.default))
            if any_density:
                params.append(FloatParam(name=f"{prefix}.density", low=cfg.density.low, high=cfg.density.high,
                                         default=cfg.density.default, condition=density_cond))

        for short in self.shorts:
            add(short)
            if self.groups != [(None, None)]:
                for layers, modules in self.groups:
                    add(f"{short}.{self._group_tag(layers, modules)}")
        adapter = TypeAdapter(Param)
        for spec in cfg.extra:
            try:
                params.append(adapter.validate_python(spec))
            except ValidationError as exc:
                raise ConfigError(f"invalid extra parameter: {_one_line(exc)}") from None
        return params

    # ---- SearchSpace ------------------------------------------------------------------------------------------

    @property
    def params(self) -> list[Param]:
        return self._params

    def sources(self) -> list[str]:
        return ([self.cfg.base] if self.cfg.base else []) + [m for m in self.cfg.models if m != self.cfg.base]

    def encode(self, recipe) -> Optional[Point]:
        from evomerge.spaces.encode import encode_parameter

        return encode_parameter(self, recipe)

    def decode(self, point: Point) -> MergeRecipe:
        point = self.validate_point(point)
        method = point.get("method", self.methods[0])
        takes = self._takes[method]

        def pick(prefix: str) -> dict[str, ParamValue]:
            return {k: point[f"{prefix}.{k}"] for k in takes if f"{prefix}.{k}" in point}

        models = [ModelSource(model=ref, params=pick(short)) for ref, short in zip(self.cfg.models, self.shorts)]
        overrides: list[Override] = []
        if self.groups != [(None, None)]:
            for layers, modules in self.groups:
                tag = self._group_tag(layers, modules)
                for ref, short in zip(self.cfg.models, self.shorts):
                    overrides.append(Override(layers=layers, modules=expand_modules(modules) if modules else None,
                                              model=ref, params=pick(f"{short}.{tag}")))
        glob = dict(self.cfg.fixed)
        for p in self.params[len(self.params) - len(self.cfg.extra):]:
            if p.name in point:
                glob[p.name] = point[p.name]
        return MergeRecipe(method=method, base=self.cfg.base, models=models, params=glob, overrides=overrides,
                           dtype=self.cfg.dtype, seed=self.cfg.seed, vocab=self.cfg.vocab)
