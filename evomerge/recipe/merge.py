"""Parameter-space recipe (``kind: merge``): merge methods and their parameters over source models.

::

    kind: merge
    method: ties
    base: zoo://full/base              # HF folder, hub name, or zoo://VARIANT/MODEL
    models:
      - model: zoo://full/add
        params: {weight: 0.6, density: 0.7}
      - model: zoo://full/reverse
        params: {weight: 0.4, density: 0.5}
    params: {normalize: true}          # global method parameters
    overrides:                         # applied in order, a later match wins
      - layers: [0, 2]                 # half-open range of decoder layer indices (optional)
        modules: [self_attn]           # substring filters on tensor names (optional)
        model: zoo://full/add          # only this source (optional; else every source)
        params: {weight: 0.9}
    dtype: float32
    seed: 0                            # for stochastic methods (DARE, DELLA)
    vocab: base                        # vocabularies that differ: the base's rows, or the union of all
    random_stream: evomerge            # or mergekit: DARE / DELLA masks drawn exactly as mergekit draws them

Parameter resolution for a (source model, tensor) pair: ``params`` (global) < the model's ``params`` <
each matching override in order. Tensors outside decoder layers (embeddings, final norm, lm_head) match an
override only when it has no ``layers`` range, or when its ``modules`` filter names them explicitly.

``random_stream`` (DARE / DELLA): ``evomerge`` draws from a counter-based stream, a pure function of (seed, model,
tensor, element index) (:mod:`evomerge.merge.counter_stream`), so a mask does not depend on which other tensors
are merged, in what order, in what chunks, on how many threads or on which device. ``mergekit``
draws the masks as ``mergekit-yaml --random-seed SEED`` does (one torch generator seeded with ``seed``, one
whole-tensor draw per tensor and source, tensors in name order, sources in recipe order; see
:mod:`evomerge.merge.mergekit_stream`): the merged weights equal mergekit's bit for bit on float32 sources.
"""

from __future__ import annotations

import re
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


ParamValue = Union[float, int, bool, str]
_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_index(tensor_name: str) -> Optional[int]:
    """Decoder layer index of a tensor name (``model.layers.3.mlp.up_proj.weight`` -> 3), else None."""
    m = _LAYER_RE.search(tensor_name)
    return int(m.group(1)) if m else None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class ModelSource(_Strict):
    model: str = Field(description="a model reference (HF folder, hub name org/name[@revision], zoo://VARIANT/NAME)")
    params: dict[str, ParamValue] = Field(default_factory=dict,
                                          description="this model's method parameters (weight, density, ...)")


class Override(_Strict):
    layers: Optional[tuple[int, int]] = Field(None,
                                              description="half-open range of decoder layer indices it applies to "
                                                          "(None: all, and non-layer tensors)")
    modules: Optional[list[str]] = Field(None, description="substring filters on tensor names (None: every tensor)")
    model: Optional[str] = Field(None, description="only this source (None: every source)")
    params: dict[str, ParamValue] = Field(description="method parameters set where it matches")

    @field_validator("layers")
    @classmethod
    def _range(cls, v):
        if v is not None and not (0 <= v[0] < v[1]):
            raise ValueError(f"layer range {list(v)} must satisfy 0 <= start < end")
        return v

    def matches(self, model: str, tensor_name: str, layer: Optional[int] | str = "from_name") -> bool:
        """Whether this override applies to (model, tensor); ``layer`` is the tensor's block index from the
        architecture's block list (``evomerge.models.arch``), by default guessed from a ``layers.N`` name."""
        if self.model is not None and self.model != model:
            return False
        if self.modules is not None and not any(m in tensor_name for m in self.modules):
            return False
        if self.layers is not None:
            idx = layer_index(tensor_name) if layer == "from_name" else layer
            if idx is None:
                return self.modules is not None  # explicit module filter on a non-layer tensor
            return self.layers[0] <= idx < self.layers[1]
        return True


class MergeRecipe(_Strict):
    """A parameter-space merge of several sources onto a base (see module docstring)."""

    kind: Literal["merge"] = Field("merge", description="merge: a merge method over source models")
    method: str = Field(description="merge method: linear, task_arithmetic, ties, dare_ties, slerp, breadcrumbs, "
                                    "della, ...")
    base: Optional[str] = Field(None, description="the base model (methods that take task vectors)")
    models: list[ModelSource] = Field(description="the source models and their parameters")
    params: dict[str, ParamValue] = Field(default_factory=dict, description="global method parameters")
    overrides: list[Override] = Field(default_factory=list,
                                      description="per layer range / module / model parameters, applied in order (a "
                                                  "later match wins)")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32",
                                                             description="the merged model's dtype (the math is "
                                                                         "float32)")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of stochastic methods (DARE, DELLA)")
    vocab: Literal["base", "union"] = Field("base",
                                            description="vocabularies that differ: the base's rows, or the union of "
                                                        "all")
    random_stream: Literal["evomerge", "mergekit"] = Field("evomerge",
                                                           description="evomerge (a generator per seed, model "
                                                                       "and tensor: merges in chunks) or mergekit "
                                                                       "(masks exactly as mergekit draws them)")

    @model_validator(mode="after")
    def _check(self):
        if not self.models:
            raise ValueError("a merge recipe needs at least one model")
        names = [m.model for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models listed twice: {names}")
        for ov in self.overrides:
            if ov.model is not None and ov.model not in names and ov.model != self.base:
                raise ValueError(f"override names model {ov.model!r} that is not among the recipe's models")
        return self

    def sources(self) -> list[str]:
        """Every model path the recipe reads, base first."""
        return ([self.base] if self.base else []) + [m.model for m in self.models if m.model != self.base]

    def resolve_params(self, model: str, tensor_name: str,
                       layer: Optional[int] | str = "from_name") -> dict[str, ParamValue]:
        """The method parameters in force for one source model and one tensor (in block ``layer``)."""
        out = dict(self.params)
        for m in self.models:
            if m.model == model:
                out.update(m.params)
        for ov in self.overrides:
            if ov.matches(model, tensor_name, layer):
                out.update(ov.params)
        return out

    def global_params(self, tensor_name: str, layer: Optional[int] | str = "from_name") -> dict[str, ParamValue]:
        """Method parameters that do not depend on the source model (overrides without ``model``)."""
        out = dict(self.params)
        for ov in self.overrides:
            if ov.model is None and ov.matches("", tensor_name, layer):
                out.update(ov.params)
        return out


def recipe_to_yaml(recipe: BaseModel) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


def _one_line(exc: ValidationError, skip: int = 0) -> str:
    """A validation error as one line (``skip``: leading location parts to leave out)."""
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"][skip:])
        msg = e["msg"].removeprefix("Value error, ")  # our own validators' messages stand alone
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
