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
        def _inject(self, points): ...         # optional: the next _ask must start with these points
        def _recommend(self): ...              # optional: its own estimate of the best point (or None)

Checkpoints are data (:mod:`evomerge.run.checkpoint`): a plugin that sets ``plain_state = True`` returns JSON
types and numpy arrays from ``_get_state`` and its ask handles are plain data too, so its checkpoint holds no
pickle. Otherwise the state (with the pending handles, in one piece so they keep their identity with the
optimizer's internals) is pickled, and read back through the allow-list of :mod:`evomerge.safe_pickle`.

Warm start. ``enqueue(points, origins)`` queues points to be asked first, in order (the space's default point,
simple merges, an earlier stage's winner). The base keeps the queue (checkpointed with the state) and, right
before each ``_ask(n)``, hands the plugin the first ``min(n, queued)`` of them through ``_inject``, in the
plugin's own way (pycma ``inject``, optuna ``enqueue_trial``, nevergrad ``suggest``), so the plugin knows
them as its own proposals and learns from their values. The base checks that ``_ask`` really returned them
(within float round-off of the unit-cube codec; anywhere in the batch) and hands the caller the exact
queued points, first and in order.
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


#: how far (unit-cube coordinates) a plugin may return an injected point from the queued one: codec round-off
INJECT_TOLERANCE = 1e-6


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
        self._queue: list[tuple[Point, str]] = []  # enqueued, not asked yet: (point, origin)
        self._origins: dict[str, str] = {}  # asked from the queue, not told yet: point key -> origin
        self.n_told = 0

    # ---- public API ----------------------------------------------------------------------------------------

    @property
    def supports_enqueue(self) -> bool:
        """Whether this plugin takes warm-start points (implements ``_inject``)."""
        return type(self)._inject is not Optimizer._inject

    def enqueue(self, points: Sequence[Point], origins: Optional[Sequence[str]] = None) -> None:
        """Points to ask before any proposal of the optimizer's own, in this order (warm start); each is
        checked against the space. ``origins`` labels them (``origin(point)`` says it back until it is told)."""
        if not self.supports_enqueue:
            raise ConfigError(f"optimizer {type(self).__name__} cannot take warm-start points")
        origins = list(origins) if origins is not None else ["enqueued"] * len(points)
        if len(origins) != len(points):
            raise EvomergeError(f"enqueue got {len(points)} points but {len(origins)} origins")
        self._queue.extend((self.space.validate_point(dict(p)), str(o)) for p, o in zip(points, origins))

    @property
    def n_queued(self) -> int:
        return len(self._queue)

    def origin(self, point: Point) -> Optional[str]:
        """The origin label of an asked, not yet told point that came from ``enqueue`` (else None)."""
        return self._origins.get(_key(point))

    def ask(self, n: int) -> list[Point]:
        """``n`` new points to evaluate (each must come back through ``tell``); enqueued points first."""
        n = int(n)
        served = self._queue[:self._injectable(n)]
        if served:
            self._inject([p for p, _ in served])
        rest = self._ask(n)
        pairs = []
        for exact, origin in served:  # the plugin may place them anywhere in its batch: they go first, in order
            j = next((j for j, (got, _) in enumerate(rest) if self.space.near(got, exact, INJECT_TOLERANCE)), None)
            if j is None:
                raise EvomergeError(f"optimizer {type(self).__name__} did not ask the enqueued point {_key(exact)}")
            pairs.append((exact, rest.pop(j)[1]))
            self._origins[_key(exact)] = origin
        pairs += rest
        del self._queue[:len(served)]
        self._pending.extend((_key(p), h) for p, h in pairs)
        return [p for p, _ in pairs]

    def _injectable(self, n: int) -> int:
        """How many enqueued points an ask of ``n`` may carry (the rest wait for the next ask)."""
        return n

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
            self._origins.pop(k, None)
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
                    "n_told": self.n_told, "queue": [[p, o] for p, o in self._queue], "origins": self._origins}
        try:
            blob = pickle.dumps((self._get_state(), self._pending, {"queue": self._queue, "origins": self._origins}))
        except Exception as exc:
            raise EvomergeError(f"optimizer {type(self).__name__} state cannot be pickled: {exc}") from None
        return {"blob": blob, "n_told": self.n_told}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        extra: dict[str, Any] = state  # the warm-start queue (plain state: beside the state)
        if "blob" not in state:
            if not self.plain_state:
                raise EvomergeError(f"{type(self).__name__} optimizer state has no pickled blob")
            self._set_state(state["state"])
            self._pending = [(str(k), h) for k, h in state["pending"]]
        else:  # a pickle: this plugin's format, or a plain-state plugin's checkpoint of an earlier version
            from evomerge.safe_pickle import safe_loads

            loaded = safe_loads(state["blob"], f"{type(self).__name__} optimizer state")
            impl, self._pending = loaded[0], loaded[1]
            extra = loaded[2] if len(loaded) > 2 else {}  # checkpoints written before warm start have no queue
            self._set_state(impl)
        self._queue = [(p, o) for p, o in extra.get("queue", [])]
        self._origins = dict(extra.get("origins", {}))
        self.n_told = int(state["n_told"])

    def recommend(self) -> Optional[Point]:
        """The optimizer's own estimate of the best point after what it was told (CMA-ES: the mean of its search
        distribution), or None. Under a noisy fitness it can beat the best told value, which is partly luck on
        its items; the run evaluates it once after the budget and lets it compete in the finalists
        (``run/recommend.py``). Leaves the optimizer's state and random stream as they were."""
        if self.n_told == 0 or len(self.directions) != 1:
            return None
        point = self._recommend()
        return None if point is None else self.space.validate_point(dict(point))

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

    def _recommend(self) -> Optional[Point]:
        """A point the optimizer recommends over the best told value (default: none)."""
        return None

    def _inject(self, points: list[Point]) -> None:
        """Make the next ``_ask`` return these points first, in order, as the optimizer's own proposals
        (called right before that ``_ask``; ``len(points)`` is at most its ``n``). Plugins that cannot take
        outside points leave this out: warm start then skips them."""
        raise NotImplementedError
