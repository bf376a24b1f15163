"""The ``SearchSpace`` interface: named, bounded, typed parameters and a decoder from a point to a Recipe.

A *point* is a plain ``dict[str, value]`` holding exactly the active parameters (JSON-serialisable, so it can
be written to the ledger). Parameters are ordered so that a condition only names earlier parameters, which lets
define-by-run samplers (optuna) and the unit-cube codec walk them in order.

Implementing a new space (e.g. the data-flow space)::

    @SEARCH_SPACES.register("dataflow")
    class DataFlowSpace(SearchSpace):
        @classmethod
        def from_config(cls, cfg: dict) -> "DataFlowSpace": ...   # validate, raise ConfigError
        @property
        def params(self) -> list[Param]: ...
        def decode(self, point) -> Recipe: ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional, Sequence

import numpy as np

from evomerge.errors import ConfigError
from evomerge.spaces.params import Param

Point = dict[str, Any]


class SearchSpace(ABC):
    """A bounded space of named typed parameters with a decoder to a recipe."""

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: dict[str, Any]) -> "SearchSpace":
        """Build from a validated-at-the-edge mapping (the YAML definition); raise ConfigError on bad input."""

    @property
    @abstractmethod
    def params(self) -> list[Param]:
        """All parameters, conditions only referring to earlier ones."""

    @abstractmethod
    def decode(self, point: Point):
        """The recipe a point stands for."""

    def sources(self) -> list[str]:
        """Every model reference any decoded recipe may read (so a worker can load them once)."""
        return []

    def vocab(self) -> str:
        """The vocabulary rule (``base`` / ``union``) of the decoded recipes (``evomerge.models.vocab``)."""
        return getattr(getattr(self, "cfg", None), "vocab", None) or "base"

    def encode(self, recipe) -> Optional[Point]:
        """A point whose decoded recipe merges what ``recipe`` merges, or None where the space cannot express
        it (warm start: simple merges, an earlier stage's winner). ``decode(encode(r)) == r`` for every
        recipe ``decode`` gives; a space that encodes nothing keeps this default."""
        return None

    def check_modules(self, names: list[str], model: str) -> None:
        """Refuse (one ConfigError line) module groups that match no tensor of ``model`` (``names``: its tensor
        names); preflight calls it with the lead model. A space without module groups keeps this default."""

    # ---- generic helpers built on ``params`` -------------------------------------------------------------

    def size(self) -> int:
        """Dimension of the space: the number of parameters (active or not)."""
        return len(self.params)

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def check_params(self) -> None:
        """Raise ConfigError if names repeat or a condition names an unknown or later parameter."""
        seen: set[str] = set()
        for p in self.params:
            if p.name in seen:
                raise ConfigError(f"search space parameter {p.name!r} defined twice")
            for k in (p.condition or {}):
                if k not in seen:
                    raise ConfigError(f"parameter {p.name!r}: condition names {k!r}, which is not an earlier parameter")
            seen.add(p.name)

    def from_unit(self, u: Sequence[float]) -> Point:
        """Map a unit-cube vector (one coordinate per parameter) to a point of active parameters."""
        if len(u) != self.size():
            raise ValueError(f"vector of length {len(u)} for a space of size {self.size()}")
        point: Point = {}
        for p, x in zip(self.params, u):
            if p.is_active(point):
                point[p.name] = p.from_unit(float(x))
        return point

    def to_unit(self, point: Point) -> np.ndarray:
        """Map a point to the unit cube; inactive parameters sit at the coordinate of their default."""
        return np.array([p.to_unit(point[p.name] if p.name in point else p.default_value()) for p in self.params])

    def near(self, a: Point, b: Point, atol: float) -> bool:
        """The same parameters, every one within ``atol`` of the other in unit-cube coordinates."""
        return set(a) == set(b) and bool(np.all(np.abs(self.to_unit(a) - self.to_unit(b)) <= atol))

    def default_point(self) -> Point:
        point: Point = {}
        for p in self.params:
            if p.is_active(point):
                point[p.name] = p.default_value()
        return point

    def sample(self, rng: np.random.Generator) -> Point:
        """A uniform random point (one draw per parameter, active or not, so the stream length is fixed)."""
        point: Point = {}
        for p in self.params:
            v = p.sample(rng)
            if p.is_active(point):
                point[p.name] = v
        return point

    def validate_point(self, point: Point) -> Point:
        """Check a point holds exactly the active parameters, each inside its domain."""
        out: Point = {}
        for p in self.params:
            if p.is_active(out):
                if p.name not in point:
                    raise ConfigError(f"point lacks active parameter {p.name!r}")
                if not p.contains(point[p.name]):
                    raise ConfigError(f"point value {point[p.name]!r} for {p.name!r} is outside its domain")
                out[p.name] = point[p.name]
        extra = set(point) - set(out)
        if extra:
            raise ConfigError(f"point has unknown or inactive parameters: {sorted(extra)}")
        return out
