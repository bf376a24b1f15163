"""Merge-method plugins: a typed parameter spec, the per-tensor interface, and the ``@merge_method`` decorator.

A method is a class with a ``params`` tuple of :class:`ParamSpec` and a ``merge_tensor`` that writes one merged
chunk of a tensor into a caller-provided buffer (see :mod:`evomerge.merge.engine`). Both execution paths
(in-memory and streaming export) run the same engine with the same chunks, so they produce identical tensors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Optional

from evomerge.errors import ConfigError
from evomerge.registry import Registry

if TYPE_CHECKING:
    import torch

    from evomerge.merge.engine import TensorInputs

MERGE_METHODS: Registry[type["MergeMethod"]] = Registry(
    "merge method",
    entry_point_group="evomerge.merge_methods",
    modules=("evomerge.merge.methods",),
)


@dataclass(frozen=True)
class ParamSpec:
    """One method parameter: ``scope="model"`` values may differ per source, ``"global"`` ones may not."""

    name: str
    type: type = float
    default: Any = None  # None = required
    bounds: Optional[tuple[float, float]] = None
    open_low: bool = False  # bounds[0] excluded, e.g. density in (0, 1]
    open_high: bool = False
    scope: Literal["model", "global"] = "model"
    doc: str = ""

    def check(self, value: Any, where: str) -> Any:
        """The value coerced to ``type``; raises ConfigError with one line if it does not fit."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: parameter {self.name!r} must be true/false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: parameter {self.name!r} must be a number, got {value!r}")
        v = self.type(value)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{where}: parameter {self.name!r} must be finite, got {value!r}")
        if self.bounds is not None:
            lo, hi = self.bounds
            bad_lo = v <= lo if self.open_low else v < lo
            bad_hi = v >= hi if self.open_high else v > hi
            if bad_lo or bad_hi:
                interval = f"{'(' if self.open_low else '['}{lo}, {hi}{')' if self.open_high else ']'}"
                raise ConfigError(f"{where}: {self.name}={value} is outside {interval}")
        return v


@dataclass
class TensorParams:
    """Resolved parameters for one tensor: ``shared[name]`` and ``per_model[name][i]`` (recipe model order)."""

    shared: dict[str, Any]
    per_model: dict[str, list[Any]]


class MergeMethod(ABC):
    """Interface of a merge method; subclasses are registered with :func:`merge_method`."""

    name: ClassVar[str] = ""
    params: ClassVar[tuple[ParamSpec, ...]] = ()
    needs_base: ClassVar[bool] = True  # the base model is an input (task vectors are relative to it)
    min_models: ClassVar[int] = 1
    max_models: ClassVar[Optional[int]] = None
    uses_deltas: ClassVar[bool] = True  # reads ``deltas`` (else ``sources``)
    mergekit_name: ClassVar[Optional[str]] = None  # the same method in mergekit, if any
    paper: ClassVar[str] = ""

    @classmethod
    def param(cls, name: str) -> Optional[ParamSpec]:
        return next((p for p in cls.params if p.name == name), None)

    @abstractmethod
    def merge_tensor(self, x: TensorInputs, p: TensorParams, out: torch.Tensor) -> Optional[float]:
        """Write the merged chunk into ``out`` (``[rows, cols]``, like ``x.base``); see ``TensorInputs``. May
        return the largest ``|value|`` written (NaN if any), which spares the caller a pass to check it."""

    def random_draws(self) -> bool:
        """True if this method draws random masks (DARE, DELLA): with ``random_stream: mergekit`` it then
        merges whole tensors, drawing from :class:`evomerge.merge.mergekit_stream.MergekitStream`."""
        return False

    def writes(self, dtype, device) -> bool:
        """True if ``merge_tensor`` may be handed an ``out`` of this dtype on this device (the destination's own
        rows, so no float32 chunk and no cast pass); every method writes float32."""
        import torch

        return dtype == torch.float32

    def streams(self, device, base_dtype, source_dtypes: list) -> bool:
        """True if ``merge_tensor`` merges any number of rows of a base and sources stored in these dtypes
        (``base_dtype`` None: no base) with block-sized scratch only, writing the destination's rows (the fused
        CPU kernels): a direct write then gets the whole tensor in one call."""
        return False

    def whole_tensor(self, shape) -> bool:
        """True if this method must see the tensor of this shape in one chunk (statistics inside rows of a
        >2-D tensor, say). Chunks depend on the shape alone, so both merge paths agree."""
        return False


def merge_method(name: str) -> Callable[[type[MergeMethod]], type[MergeMethod]]:
    """Class decorator: register a :class:`MergeMethod` subclass under ``name``."""

    def deco(cls: type[MergeMethod]) -> type[MergeMethod]:
        if not (isinstance(cls, type) and issubclass(cls, MergeMethod)):
            raise TypeError(f"@merge_method({name!r}) needs a MergeMethod subclass")
        cls.name = name
        names = [p.name for p in cls.params]
        if len(set(names)) != len(names):
            raise TypeError(f"merge method {name!r} declares a parameter twice: {names}")
        return MERGE_METHODS.register(name)(cls)

    return deco


def get_method(name: str) -> type[MergeMethod]:
    return MERGE_METHODS.get(name)


def __getattr__(name: str):
    """``TensorInputs`` (the engine's, which imports torch) for plugins that import it from here."""
    if name == "TensorInputs":
        from evomerge.merge.engine import TensorInputs

        return TensorInputs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
