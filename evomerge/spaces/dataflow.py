"""The data-flow space (Sakana DFS): which layers the token stream runs through, and how it is scaled.

The layers of the source models are laid out in order (model by model, layer by layer: M layers in all) and
repeated ``repeats`` (r) times; a boolean per slot (M*r of them, ``r<rep>.<model>.L<layer>``) says whether the
path runs through it. The hidden state passed from layer i to layer j (i may be the embedding) is scaled by
W[i, j], parametrised by ``scaling``:

- ``none``: every scale is 1 (the path is a mergekit passthrough);
- ``input``: W[i, j] = in_j, one scale per target layer (M parameters);
- ``factored``: W[i, j] = out_i * in_j, log-scale factors (2M + 1 parameters: grows linearly, not with M^2);
- ``full``: the whole (M + 1) x M matrix ``w.<i>><j>`` (Sakana's original).

Constraints: ``first`` / ``last`` pin a layer (e.g. model A's first and last, ``layer: -1`` = last) to the
ends of every path; ``max_depth`` caps the path (the earliest selected slots are kept, so every point decodes).
A source may be a nested parameter-space recipe (PS+DFS: model A is the result of a PS search). Embedding and
head come from the first listed model (model A) unless ``embed`` / ``head`` say otherwise; the default point
is model A unchanged. Example::

    kind: dataflow
    models: {a: zoo://full/add, b: zoo://full/sort}
    repeats: 2
    scaling: factored
    scale: {low: 0.5, high: 2.0}
    first: {model: a, layer: 0}
    last: {model: a, layer: -1}
    max_depth: 12
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evomerge.errors import ConfigError, EvomergeError
from evomerge.models.hub import display_name
from evomerge.recipe import MergeRecipe, _one_line
from evomerge.recipe.dataflow import DEFAULT_MAX_DEPTH, DataFlowRecipe, PathStep
from evomerge.spaces.base import Point, SearchSpace
from evomerge.spaces.params import BoolParam, FloatParam, Param
from evomerge.spaces.registry import SEARCH_SPACES

EMBED = "embed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScaleBounds(_Strict):
    low: float = Field(default=0.5, gt=0, description="smallest scale of the residual stream entering a layer")
    high: float = Field(default=2.0, gt=0, description="largest scale")

    @model_validator(mode="after")
    def _order(self):
        if not self.low < self.high:
            raise ValueError(f"scale bounds inverted or empty (low={self.low} >= high={self.high})")
        if not self.low <= 1.0 <= self.high:
            raise ValueError("scale bounds must contain 1 (the unscaled path)")
        return self


class PinnedLayer(_Strict):
    model: str = Field(description="the model the layer is taken from")
    layer: int = Field(description="its index (negative counts from the end)")


class DataFlowSpaceConfig(_Strict):
    kind: str = Field("dataflow", description="dataflow: which layers of which models the token stream runs through")
    description: str = Field("", description="free text")
    models: dict[str, Union[str, MergeRecipe]] = Field(description="name -> model reference, or a parameter-space "
                                                                   "recipe (PS+DFS)")
    num_layers: Optional[dict[str, int]] = Field(None, description="layers per model (None: read from config.json)")
    repeats: int = Field(default=2, ge=1, description="how many times each layer may appear in a path")
    scaling: Literal["none", "input", "factored", "full"] = Field("factored",
                                                                  description="scale parametrisation: none, input, "
                                                                              "factored, full")
    scale: ScaleBounds = Field(ScaleBounds(), description="bounds of the scales")
    first: Optional[PinnedLayer] = Field(None, description="a layer pinned at the start of every path")
    last: Optional[PinnedLayer] = Field(None, description="a layer pinned at the end of every path")
    max_depth: Optional[int] = Field(default=None, ge=1, description="most layers in a path (None: every slot)")
    embed: Optional[str] = Field(None, description="model whose embeddings the path uses (default: the first)")
    head: Optional[str] = Field(None,
                                description="model whose final norm and lm_head the path uses (default: the first)")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="the recipes' dtype")


@SEARCH_SPACES.register("dataflow")
class DataFlowSpace(SearchSpace):
    """Per-slot inclusion indicators over M*r layer slots plus a scaling parametrisation (see module doc)."""

    def __init__(self, cfg: DataFlowSpaceConfig):
        self.cfg = cfg
        if not cfg.models:
            raise ConfigError("the data-flow space has no models (set models in the experiment)")
        for what in ("embed", "head"):
            name = getattr(cfg, what)
            if name is not None and name not in cfg.models:
                raise ConfigError(f"{what} names model {name!r}, which is not among models ({', '.join(cfg.models)})")
        self.embed = cfg.embed or next(iter(cfg.models))
        self.head = cfg.head or next(iter(cfg.models))
        self.n_layers = {n: self._layer_count(n) for n in cfg.models}
        self.layers = [(n, i) for n in cfg.models for i in range(self.n_layers[n])]  # the M distinct layers
        self.slots = [(r, n, i) for r in range(cfg.repeats) for n, i in self.layers]
        self.first = self._pin(cfg.first, "first")
        self.last = self._pin(cfg.last, "last")
        pinned = (self.first is not None) + (self.last is not None)
        self.max_depth = cfg.max_depth or min(DEFAULT_MAX_DEPTH, len(self.slots) + pinned)
        if self.max_depth <= pinned:
            raise ConfigError(f"max_depth {self.max_depth} leaves no room between the pinned first/last layers")
        self._params = self._build_params()
        self.check_params()

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "DataFlowSpace":
        cfg = dict(cfg)
        cfg.pop("base", None)  # the run's base model has no role in a data-flow path
        if isinstance(cfg.get("models"), list):  # the run's model list: name each model by its folder
            cfg["models"] = _named(cfg["models"])
        if isinstance(cfg.get("num_layers"), int) and isinstance(cfg.get("models"), dict):  # same for every model
            cfg["num_layers"] = {name: cfg["num_layers"] for name in cfg["models"]}
        try:
            parsed = DataFlowSpaceConfig.model_validate(cfg)
        except ValidationError as exc:
            raise ConfigError(f"invalid data-flow space: {_one_line(exc)}") from None
        return cls(parsed)

    # ---- structure ------------------------------------------------------------------------------------------

    def _layer_count(self, name: str) -> int:
        if self.cfg.num_layers and name in self.cfg.num_layers:
            return self.cfg.num_layers[name]
        from evomerge.dataflow.sources import source_config

        try:
            return int(source_config(self.cfg.models[name]).num_hidden_layers)
        except EvomergeError as exc:
            raise ConfigError(f"cannot read the layer count of model {name!r} ({exc}); set num_layers") from None

    def _pin(self, pin: Optional[PinnedLayer], what: str) -> Optional[tuple[str, int]]:
        if pin is None:
            return None
        if pin.model not in self.cfg.models:
            raise ConfigError(f"{what} names model {pin.model!r}, which is not among models ({', '.join(self.cfg.models)})")
        n = self.n_layers[pin.model]
        layer = pin.layer + n if pin.layer < 0 else pin.layer
        if not 0 <= layer < n:
            raise ConfigError(f"{what}: model {pin.model!r} has {n} layers, no layer {pin.layer}")
        return pin.model, layer

    @staticmethod
    def layer_id(layer: tuple[str, int]) -> str:
        return f"{layer[0]}.L{layer[1]}"

    def source_id(self, layer: Optional[tuple[str, int]]) -> str:
        """The id of what feeds a layer: another layer, or (None) the embedding."""
        return EMBED if layer is None else self.layer_id(layer)

    def _build_params(self) -> list[Param]:
        default_model = next(iter(self.cfg.models))
        params: list[Param] = [
            BoolParam(name=f"r{r}.{self.layer_id((n, i))}", default=(r == 0 and n == default_model))
            for r, n, i in self.slots
        ]
        lo, hi = self.cfg.scale.low, self.cfg.scale.high

        def scale(name: str, low: float = lo, high: float = hi) -> FloatParam:
            return FloatParam(name=name, low=low, high=high, log=True, default=1.0)

        ids = [self.layer_id(x) for x in self.layers]
        if self.cfg.scaling == "input":
            params += [scale(f"in.{j}") for j in ids]
        elif self.cfg.scaling == "factored":  # W = out_i * in_j, each factor within sqrt of the bounds
            slo, shi = math.sqrt(lo), math.sqrt(hi)
            params += [scale(f"out.{i}", slo, shi) for i in [EMBED] + ids] + [scale(f"in.{j}", slo, shi) for j in ids]
        elif self.cfg.scaling == "full":
            params += [scale(f"w.{i}>{j}") for i in [EMBED] + ids for j in ids]
        return params

    # ---- SearchSpace ------------------------------------------------------------------------------------------

    @property
    def params(self) -> list[Param]:
        return self._params

    def sources(self) -> list[str]:
        out: dict[str, None] = {}
        for src in self.cfg.models.values():
            for ref in ([src] if isinstance(src, str) else src.sources()):
                out.setdefault(ref, None)
        return list(out)

    def scale_between(self, point: Point, src: Optional[tuple[str, int]], dst: tuple[str, int]) -> float:
        """W[src, dst] for a point (``src`` None: the embedding)."""
        i, j = self.source_id(src), self.layer_id(dst)
        mode = self.cfg.scaling
        if mode == "input":
            return float(point[f"in.{j}"])
        if mode == "factored":
            return float(point[f"out.{i}"] * point[f"in.{j}"])
        if mode == "full":
            return float(point[f"w.{i}>{j}"])
        return 1.0

    def encode(self, recipe) -> Optional[Point]:
        """The point of a data-flow recipe, or of a source passed straight through (see spaces.encode)."""
        from evomerge.spaces.encode import encode_dataflow

        return encode_dataflow(self, recipe)

    def decode(self, point: Point) -> DataFlowRecipe:
        point = self.validate_point(point)
        chosen = [(n, i) for r, n, i in self.slots if point[f"r{r}.{self.layer_id((n, i))}"]]
        room = self.max_depth - (self.first is not None) - (self.last is not None)
        layers = ([self.first] if self.first else []) + chosen[:room] + ([self.last] if self.last else [])
        if not layers:
            raise EvomergeError("the point selects no layer: the data-flow path is empty")
        steps, prev = [], None
        for layer in layers:
            steps.append(PathStep(model=layer[0], layer=layer[1], scale=self.scale_between(point, prev, layer)))
            prev = layer
        used = {s.model for s in steps} | {self.embed, self.head}
        return DataFlowRecipe(models={n: src for n, src in self.cfg.models.items() if n in used}, path=steps,
                              embed=self.embed, head=self.head, max_depth=self.max_depth,
                              dtype=self.cfg.dtype)


def _named(refs: list[Any]) -> dict[str, Any]:
    """``[zoo://full/add, zoo://full/sort]`` -> ``{add: ..., sort: ...}`` (suffixed where names repeat)."""
    out: dict[str, Any] = {}
    for ref in refs:
        stem = display_name(ref).rstrip("/").rsplit("/", 1)[-1] if isinstance(ref, str) else "merged"
        name, k = stem, 2
        while name in out:
            name, k = f"{stem}{k}", k + 1
        out[name] = ref
    return out
