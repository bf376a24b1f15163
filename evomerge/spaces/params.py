"""Typed, bounded search parameters: float, int, categorical, bool, each optionally conditional.

Every parameter maps to one coordinate of the unit cube ``[0, 1]`` (``from_unit`` / ``to_unit``) so that
continuous optimizers (CMA-ES, nevergrad) search a bounded box; optuna and random search sample the
native domain directly. A parameter with a ``condition`` is *active* only when every parameter the condition
names takes one of the listed values; inactive parameters are absent from a point.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

ParamValue = Union[bool, int, float, str]


def _clip01(u: float) -> float:
    """``u`` clipped to [0, 1] (pure Python: np.clip on a scalar costs ~50x more; NaN maps to 0.5)."""
    u = float(u)
    if u != u:
        return 0.5
    return 0.0 if u < 0.0 else 1.0 if u > 1.0 else u




class _ParamBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    condition: Optional[dict[str, list[ParamValue]]] = None

    def is_active(self, point: dict[str, Any]) -> bool:
        if not self.condition:
            return True
        return all(k in point and point[k] in vals for k, vals in self.condition.items())


class FloatParam(_ParamBase):
    """A real number in ``[low, high]`` (log-uniform when ``log``)."""

    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    default: Optional[float] = None

    @model_validator(mode="after")
    def _bounds(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"parameter {self.name!r}: bounds must be finite")
        if self.low >= self.high:
            raise ValueError(f"parameter {self.name!r}: bounds inverted or empty (low={self.low} >= high={self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"parameter {self.name!r}: log scale needs low > 0")
        if self.default is not None and not (self.low <= self.default <= self.high):
            raise ValueError(f"parameter {self.name!r}: default {self.default} outside [{self.low}, {self.high}]")
        return self

    def from_unit(self, u: float) -> float:
        u = _clip01(u)
        if self.log:
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        return float(self.low + u * (self.high - self.low))

    def to_unit(self, v: float) -> float:
        if self.log:
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (float(v) - self.low) / (self.high - self.low)

    def sample(self, rng: np.random.Generator) -> float:
        return self.from_unit(float(rng.random()))

    def default_value(self) -> float:
        return self.default if self.default is not None else self.from_unit(0.5)

    def contains(self, v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and self.low <= v <= self.high


class IntParam(_ParamBase):
    """An integer in ``[low, high]``, both ends included."""

    type: Literal["int"] = "int"
    low: int
    high: int
    default: Optional[int] = None

    @model_validator(mode="after")
    def _bounds(self):
        if self.low > self.high:
            raise ValueError(f"parameter {self.name!r}: bounds inverted (low={self.low} > high={self.high})")
        if self.default is not None and not (self.low <= self.default <= self.high):
            raise ValueError(f"parameter {self.name!r}: default {self.default} outside [{self.low}, {self.high}]")
        return self

    def from_unit(self, u: float) -> int:
        n = self.high - self.low + 1
        return int(self.low + min(int(_clip01(u) * n), n - 1))

    def to_unit(self, v: int) -> float:
        return (int(v) - self.low + 0.5) / (self.high - self.low + 1)

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def default_value(self) -> int:
        return self.default if self.default is not None else (self.low + self.high) // 2

    def contains(self, v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and self.low <= v <= self.high


class CategoricalParam(_ParamBase):
    """One of a fixed list of choices."""

    type: Literal["categorical"] = "categorical"
    choices: list[ParamValue]
    default: Optional[ParamValue] = None

    @model_validator(mode="after")
    def _choices(self):
        if not self.choices:
            raise ValueError(f"parameter {self.name!r}: a categorical needs at least one choice")
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"parameter {self.name!r}: choices listed twice: {self.choices}")
        if self.default is not None and self.default not in self.choices:
            raise ValueError(f"parameter {self.name!r}: default {self.default!r} is not a choice")
        return self

    def from_unit(self, u: float) -> ParamValue:
        k = len(self.choices)
        return self.choices[min(int(_clip01(u) * k), k - 1)]

    def to_unit(self, v: ParamValue) -> float:
        return (self.choices.index(v) + 0.5) / len(self.choices)

    def sample(self, rng: np.random.Generator) -> ParamValue:
        return self.choices[int(rng.integers(len(self.choices)))]

    def default_value(self) -> ParamValue:
        return self.default if self.default is not None else self.choices[0]

    def contains(self, v: Any) -> bool:
        return any(v == c and type(v) is type(c) for c in self.choices)


class BoolParam(_ParamBase):
    """True or False."""

    type: Literal["bool"] = "bool"
    default: Optional[bool] = None

    def from_unit(self, u: float) -> bool:
        return bool(u >= 0.5)

    def to_unit(self, v: bool) -> float:
        return 0.75 if v else 0.25

    def sample(self, rng: np.random.Generator) -> bool:
        return bool(rng.integers(2))

    def default_value(self) -> bool:
        return bool(self.default)

    def contains(self, v: Any) -> bool:
        return isinstance(v, bool)


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam, BoolParam], Field(discriminator="type")]
