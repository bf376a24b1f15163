"""CMA-ES (pycma) on the space's unit cube, with pycma's own bound handling (BoundTransform on [0, 1]).

pycma draws its samples from ``opts['randn']`` (by default the *global* numpy RNG, whose bound method would be
pickled as a detached copy): here it gets its own ``RandomState``, pickled together with the strategy. Any
other draw pycma makes from the global RNG runs with this optimizer's saved global state swapped in (and the
caller's restored after), so the stream survives a checkpoint and neither disturbs nor is disturbed by
anything else in the process.

Start-up: importing pycma costs 1-2 s (it imports scipy.stats and matplotlib), so a config check avoids it.
Option names are checked against a list cached per pycma version (``$EVOMERGE_HOME/cache``), and the strategy
is built on first use, or at once when the config passes pycma options of its own (pycma checks their values
only when it builds the strategy, and a bad one must fail the preflight).

The recommendation (``recommend``) is the distribution's mean, pycma's ``xfavorite``.

Warm-start points go in through ``es.inject(..., force=True)`` (as genotypes: the inverse of pycma's bound
transform), at most one generation's worth per ask, since pycma hands out every injected solution in the next
``ask`` whatever its ``number``; they are then ordinary members of that generation for the update.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from evomerge.errors import ConfigError
from evomerge.optim.base import Optimizer
from evomerge.optim.registry import OPTIMIZERS

log = logging.getLogger(__name__)


def cma_option_names() -> list[str]:
    """pycma's option names, from a list cached per pycma version (made on first use by importing pycma)."""
    from importlib.metadata import PackageNotFoundError, version

    from evomerge.fsutil import atomic_write
    from evomerge.resources import home

    try:
        path = home() / "cache" / f"cma-options-{version('cma')}.json"
        names = json.loads(path.read_text())
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return names
    except (OSError, ValueError, PackageNotFoundError):
        pass
    import cma

    names = sorted(cma.CMAOptions())
    try:
        path = home() / "cache" / f"cma-options-{cma.__version__}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(names))
    except OSError as exc:  # a read-only home: no cache, the next check imports pycma again
        log.debug("cannot cache pycma's option names: %s", exc)
    return names


class CMAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sigma0: float = Field(0.25, gt=0, le=1, description="initial step size in unit-cube coordinates")
    cma_options: dict[str, Any] = Field(default_factory=dict, description="passed to cma.CMAEvolutionStrategy")

    @field_validator("cma_options")
    @classmethod
    def _known(cls, v: dict[str, Any]) -> dict[str, Any]:
        """Names checked against pycma's own option list; values must be data: pycma evaluates string
        values as Python expressions, and ignores keys it does not know."""
        import difflib

        known = cma_option_names() if v else []
        for key, value in v.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                raise ValueError(f"unknown pycma option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            if key in _OURS:
                raise ValueError(f"pycma option {key!r} is set by evomerge ({_OURS[key]})")
            if isinstance(value, str) or _has_str(value):
                raise ValueError(f"pycma option {key!r}: give a number, bool or list, not a string "
                                 f"({value!r}); pycma would evaluate it as code")
        return v


#: pycma options evomerge sets itself, and where they come from instead
_OURS = {"bounds": "the search space's unit cube", "popsize": "optimizer.population", "randn": "the seeded RNG",
         "seed": "the run's seed", "verbose": "logging"}


def _has_str(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(isinstance(x, str) or _has_str(x) for x in value)
    if isinstance(value, dict):
        return any(isinstance(x, str) or _has_str(x) for x in value.values())
    return False


@OPTIMIZERS.register("cma")
class CMAES(Optimizer):
    Options = CMAOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rs = np.random.RandomState(self.seed)
        self._es_built = None  # pycma's strategy, built on first use (importing pycma takes 1-2 s)
        self._np_state = None
        self._injected: list = []  # warm-start points for the next ask (unit cube)
        if self.options.cma_options:  # pycma checks these values only when building: fail now, in preflight
            self._build()

    @property
    def _es(self):
        if self._es_built is None:
            self._build()
        return self._es_built

    def _build(self) -> None:
        import cma

        opts = {"bounds": [0.0, 1.0], "popsize": self.population, "randn": self._rs.randn, "verbose": -9}
        opts.update(self.options.cma_options)
        x0 = self.space.to_unit(self.space.default_point())
        outer = np.random.get_state()
        try:
            np.random.seed(self.seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    self._es_built = cma.CMAEvolutionStrategy(x0, self.options.sigma0, opts)
                except Exception as exc:  # pycma checks values late, with its own exceptions
                    raise ConfigError(f"pycma refused the options: {type(exc).__name__}: "
                                      f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
            self._np_state = np.random.get_state()
        finally:
            np.random.set_state(outer)

    @contextlib.contextmanager
    def _own_rng(self):
        self._es  # built first: building sets the saved global state
        outer = np.random.get_state()
        np.random.set_state(self._np_state)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            self._np_state = np.random.get_state()
            np.random.set_state(outer)

    def _inject(self, points):
        self._injected = [self.space.to_unit(p) for p in points]

    def _injectable(self, n: int) -> int:
        # pycma places its own injections (TPA's step-size probe) before ours and returns more points than asked
        # when both together exceed n: leave room for them
        return n if n == 1 else max(0, n - len(self._es.pop_injection_directions))

    def _ask(self, n):
        injected, self._injected = self._injected, []
        if injected and n == 1:  # pycma injects only into asks of several points: tell it as an outside point
            return [(self.space.from_unit(injected[0]), np.asarray(injected[0]))]
        with self._own_rng():
            if injected:
                inverse = getattr(self._es.boundary_handler, "inverse", None)
                self._es.inject([inverse(x) if inverse else x for x in injected], force=True)
            # pycma can neither sample nor update from fewer points than its parent number mu (a budget's
            # last, partial generation): draw a whole population and use its first n
            xs = self._es.ask(number=n) if n >= self._mu() else self._es.ask()[:n]
        return [(self.space.from_unit(x), np.asarray(x)) for x in xs]

    def _recommend(self):
        """The distribution's mean (pycma's ``xfavorite``, through the bound transform): the recombination of
        every generation's best points, less exposed to one lucky value than any of them."""
        with self._own_rng():
            x = np.clip(np.asarray(self._es.result.xfavorite, dtype=float), 0.0, 1.0)
        return self.space.from_unit(x)

    def _mu(self) -> int:
        return int(self._es.sp.weights.mu)

    def _tell(self, handles, losses):
        if len(handles) < self._mu():  # too few to update the strategy: their values stay in the ledger only
            log.info("CMA-ES: %d results are fewer than mu=%d; the strategy is not updated", len(handles), self._mu())
            return
        with self._own_rng():
            self._es.tell(list(handles), [loss[0] for loss in losses])

    def _get_state(self):
        return {"es": self._es, "np_state": self._np_state}  # es holds self._rs through opts["randn"]

    def _set_state(self, state):
        self._es_built = state["es"]
        self._np_state = state["np_state"]
