"""Data-flow recipe (``kind: dataflow``): a path of decoder layers taken from several source models.

::

    kind: dataflow
    models:                        # name -> model reference, or a nested parameter-space recipe (PS+DFS)
      a: zoo://ci/add
      b: {kind: merge, method: linear, base: zoo://ci/base, models: [{model: zoo://ci/sort}]}
    embed: a                       # embedding source (default: model of the first step)
    head: a                        # final norm + lm_head source (default: model of the last step)
    path:                          # the layers the token stream runs through, in order
      - {model: a, layer: 0}
      - {model: b, layer: 0, scale: 0.8}
      - [a, 1, 1.2]                # short form: [model, layer] or [model, layer, scale]
    max_depth: 128

or, instead of ``path``, contiguous slices in mergekit ``passthrough`` style (all scales 1)::

    slices:
      - {model: a, layers: [0, 2]}     # half-open layer range
      - {model: b, layers: [1, 3]}

**Scaling semantics.** ``scale`` s_k of step k rescales the residual stream *entering* step k (Sakana's
DFS scaling of the hidden state passed between consecutive layers; must be > 0). Every reader of a
Llama-style residual stream is an RMSNorm, which is invariant to a positive rescaling up to its epsilon, so
the recipe's network is *defined* as the exactly-representable equivalent: the stream is never rescaled,
and the output projections (``o_proj``, ``down_proj``, weight and bias) of step k are multiplied by
``w_k = 1 / (s_0 * s_1 * ... * s_k)``. Both the in-memory wrapper and the exported checkpoint compute this
same network, so a scaled path exports exactly as an ordinary checkpoint.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge.recipe.merge import MergeRecipe

DEFAULT_MAX_DEPTH = 128


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PathStep(_Strict):
    """One step of the path: decoder layer ``layer`` of source ``model``, its input stream scaled by ``scale``."""

    model: str
    layer: int = Field(ge=0)
    scale: float = 1.0

    @field_validator("scale")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"scale must be a finite number > 0, got {v}")
        return v


class LayerSlice(_Strict):
    """A contiguous half-open range of decoder layers of one source model."""

    model: str
    layers: tuple[int, int]

    @field_validator("layers")
    @classmethod
    def _range(cls, v):
        if not (0 <= v[0] < v[1]):
            raise ValueError(f"layer range {list(v)} must satisfy 0 <= start < end")
        return v


class DataFlowRecipe(_Strict):
    """A model built by running the token stream through a path of layers of several sources."""

    kind: Literal["dataflow"] = "dataflow"
    models: dict[str, Union[str, MergeRecipe]]
    path: Optional[list[PathStep]] = None
    slices: Optional[list[LayerSlice]] = None
    embed: Optional[str] = None
    head: Optional[str] = None
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=1)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    @field_validator("path", mode="before")
    @classmethod
    def _short_steps(cls, v: Any) -> Any:
        if isinstance(v, list):
            out = []
            for s in v:
                if isinstance(s, (list, tuple)):
                    if len(s) not in (2, 3):
                        raise ValueError(f"a short path step is [model, layer] or [model, layer, scale], got {list(s)}")
                    s = dict(zip(("model", "layer", "scale"), s))
                out.append(s)
            return out
        return v

    @model_validator(mode="after")
    def _check(self):
        if not self.models:
            raise ValueError("a data-flow recipe needs at least one source model")
        if (self.path is None) == (self.slices is None):
            raise ValueError("give exactly one of 'path' or 'slices'")
        steps = self.steps()
        if not steps:
            raise ValueError("the data-flow path is empty")
        if len(steps) > self.max_depth:
            raise ValueError(f"the path has {len(steps)} layers, over the depth limit of {self.max_depth}")
        names = set(self.models)
        for s in steps:
            if s.model not in names:
                raise ValueError(f"path names model {s.model!r}, which is not among models ({', '.join(self.models)})")
        for what in ("embed", "head"):
            ref = getattr(self, what)
            if ref is not None and ref not in names:
                raise ValueError(f"{what} names model {ref!r}, which is not among models ({', '.join(self.models)})")
        return self

    # ---- derived views ---------------------------------------------------------------------------------

    def steps(self) -> list[PathStep]:
        """The path, with slices expanded into steps of scale 1."""
        if self.path is not None:
            return list(self.path)
        return [PathStep(model=s.model, layer=i) for s in self.slices or [] for i in range(*s.layers)]

    def embed_model(self) -> str:
        return self.embed if self.embed is not None else self.steps()[0].model

    def head_model(self) -> str:
        return self.head if self.head is not None else self.steps()[-1].model

    def output_scales(self) -> list[float]:
        """The factor ``w_k = 1 / prod_{j<=k} s_j`` applied to step k's o_proj/down_proj (see module doc)."""
        out, prod = [], 1.0
        for s in self.steps():
            prod *= s.scale
            out.append(1.0 / prod)
        return out

    def all_scales_one(self) -> bool:
        return all(s.scale == 1.0 for s in self.steps())

    def used_models(self) -> list[str]:
        """Names of the sources the recipe reads (path, embed, head), in first-use order."""
        seen: dict[str, None] = {}
        for n in [self.embed_model()] + [s.model for s in self.steps()] + [self.head_model()]:
            seen.setdefault(n, None)
        return list(seen)

    def sources(self) -> list[str]:
        """Every model reference the recipe reads, nested parameter-space recipes included."""
        out: dict[str, None] = {}
        for name in self.used_models():
            src = self.models[name]
            for ref in ([src] if isinstance(src, str) else src.sources()):
                out.setdefault(ref, None)
        return list(out)

    def to_path_form(self) -> "DataFlowRecipe":
        """The same recipe with ``slices`` expanded into an explicit ``path``."""
        data = self.model_dump(mode="python")
        data.update(path=[s.model_dump() for s in self.steps()], slices=None)
        return DataFlowRecipe.model_validate(data)
