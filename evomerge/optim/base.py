"""The ``Optimizer`` interface: batch ask/tell over a SearchSpace, seeded, with picklable state.

Values handed to ``tell`` are the objective values as the user states them; ``directions`` says which ones to
maximise. Optimizers minimise internally (``losses``). Every optimizer draws only from generators it owns and
saves in ``state_dict``, so a restored optimizer asks exactly the points the original would have asked next.

Writing a plugin::

    @OPTIMIZERS.register("mine")
    class Mine(Optimizer):
        class Options(BaseModel): ...          # typed options, extra keys refused
        def _ask(self, n): ...                 # -> list of (point, handle)
        def _tell(self, handles, losses): ...  # losses: list[list[float]], minimised
        def _get_state(self): ...              # plain data (plain_state = True) or picklable
        def _set_state(self, state): ...

Checkpoints are data (:mod:`evomerge.run.checkpoint`): a plugin that sets ``plain_state = True`` returns JSON
types and numpy arrays from ``_get_state`` and its ask handles are plain data too, so its checkpoint holds no
pickle. Otherwise the state (with the pending handles, in one piece so they keep their identity with the
optimizer's internals) is pickled, and read back through the allow-list of :mod:`evomerge.safe_pickle`.
"""

from __future__ import annotations

import json
import math
import pickle
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from evomerge.errors import ConfigError, EvomergeError
from evomerge.recipe import _one_line
from evomerge.spaces.base import Point, SearchSpace

Direction = Literal["maximize", "minimize"]


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _key(point: Point) -> str:
    return json.dumps(point, sort_keys=True)


class Optimizer(ABC):
    """Ask a batch of points, tell their objective values; checkpoint with ``state_dict``."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    multi_objective: ClassVar[bool] = False
    #: True when ``tell`` may come one point at a time, in any order, while other points are still out
    #: (steady-state scheduling); False when the optimizer must see whole generations.
    partial_tell: ClassVar[bool] = False
    #: True when ``_get_state`` gives plain data (JSON types, numpy arrays) and ask handles are plain data
    plain_state: ClassVar[bool] = False

    def __init__(self, space: SearchSpace, directions: Sequence[Direction], seed: int = 0, population: int = 8,
                 budget: Optional[int] = None, options: Optional[dict[str, Any]] = None):
        if not directions:
            raise ConfigError("an optimizer needs at least one objective")
        if len(directions) > 1 and not self.multi_objective:
            raise ConfigError(f"optimizer {type(self).__name__} is single-objective but the run has "
                              f"{len(directions)} objectives (use optuna nsga2/tpe, nevergrad or random)")
        if population < 1:
            raise ConfigError(f"population must be >= 1, got {population}")
        try:
            self.options = self.Options.model_validate(options or {})
        except ValidationError as exc:
            raise ConfigError(f"invalid options for optimizer {type(self).__name__}: {_one_line(exc)}") from None
        self.space = space
        self.directions = list(directions)
        self.seed = int(seed)
        self.population = int(population)
        self.budget = budget
        self._pending: list[tuple[str, Any]] = []
        self.n_told = 0

    # ---- public API ----------------------------------------------------------------------------------------

    def ask(self, n: int) -> list[Point]:
        """``n`` new points to evaluate (each must come back through ``tell``)."""
        pairs = self._ask(int(n))
        self._pending.extend((_key(p), h) for p, h in pairs)
        return [p for p, _ in pairs]

    def tell(self, points: Sequence[Point], values: Sequence[Sequence[float] | float]) -> None:
        """Objective values (natural orientation, one list per point) for points from ``ask``."""
        if len(points) != len(values):
            raise EvomergeError(f"tell got {len(points)} points but {len(values)} values")
        handles, losses = [], []
        for point, vals in zip(points, values):
            vals = [vals] if isinstance(vals, (int, float)) else list(vals)
            if len(vals) != len(self.directions):
                raise EvomergeError(f"tell got {len(vals)} objective values, expected {len(self.directions)}")
            k = _key(point)
            idx = next((i for i, (pk, _) in enumerate(self._pending) if pk == k), None)
            if idx is None:
                raise EvomergeError(f"tell of a point that was not asked: {k}")
            handles.append(self._pending.pop(idx)[1])
            loss = [(-float(v) if d == "maximize" else float(v)) for v, d in zip(vals, self.directions)]
            if not all(math.isfinite(x) for x in loss):
                raise EvomergeError(f"tell got a non-finite value {vals}; penalise failures before telling")
            losses.append(loss)
        self._tell(handles, losses)
        self.n_told += len(handles)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same random stream: plain data where the plugin allows
        (``plain_state``), else bytes (pickled in one piece so that pending handles keep their identity with the
        optimizer's internals)."""
        if self.plain_state:
            return {"state": self._get_state(), "pending": [[k, h] for k, h in self._pending],
                    "n_told": self.n_told}
        try:
            blob = pickle.dumps((self._get_state(), self._pending))
        except Exception as exc:
            raise EvomergeError(f"optimizer {type(self).__name__} state cannot be pickled: {exc}") from None
        return {"blob": blob, "n_told": self.n_told}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "blob" not in state:
            if not self.plain_state:
                raise EvomergeError(f"{type(self).__name__} optimizer state has no pickled blob")
            self._set_state(state["state"])
            self._pending = [(str(k), h) for k, h in state["pending"]]
        else:  # a pickle: this plugin's format, or a plain-state plugin's checkpoint of an earlier version
            from evomerge.safe_pickle import safe_loads

            impl, self._pending = safe_loads(state["blob"], f"{type(self).__name__} optimizer state")
            self._set_state(impl)
        self.n_told = int(state["n_told"])

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    # ---- plugin hooks --------------------------------------------------------------------------------------

    @abstractmethod
    def _ask(self, n: int) -> list[tuple[Point, Any]]: ...

    @abstractmethod
    def _tell(self, handles: list[Any], losses: list[list[float]]) -> None: ...

    @abstractmethod
    def _get_state(self) -> Any: ...

    @abstractmethod
    def _set_state(self, state: Any) -> None: ...
