"""Any nevergrad optimizer by name, on the space's unit cube (``ng.p.Array`` bounded to [0, 1]).

Checkpoints pickle the whole nevergrad optimizer, so optimizers that run scipy in a background thread
(Cobyla, SQP, Powell... and meta-optimizers such as NGOpt when they pick one of those) are refused up front.
Warm-start points go in through ``optimizer.suggest`` right before the ask that serves them.
"""

from __future__ import annotations

import pickle
import warnings
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evomerge.errors import ConfigError
from evomerge.optim.base import Optimizer
from evomerge.optim.registry import OPTIMIZERS


class NevergradOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("TwoPointsDE", description="a key of nevergrad.optimizers.registry")
    budget: int | None = Field(None, ge=1, description="default: the run's evaluation budget")


def _chain(opt: Any, depth: int = 0):
    """The optimizer and the sub-optimizers a meta-optimizer (NGOpt, portfolios, chains) delegates to."""
    yield opt
    if depth > 8:
        return
    subs = []
    if hasattr(opt, "optim"):
        subs.append(opt.optim)
    subs += list(getattr(opt, "optims", None) or [])
    for sub in subs:
        if sub is not opt:
            yield from _chain(sub, depth + 1)


@OPTIMIZERS.register("nevergrad")
class Nevergrad(Optimizer):
    Options = NevergradOptions
    multi_objective = True
    partial_tell = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import nevergrad as ng
        from nevergrad.optimization.recaster import RecastOptimizer

        name = self.options.name
        if name not in ng.optimizers.registry:
            close = sorted(k for k in ng.optimizers.registry if k.lower().startswith(name[:3].lower()))[:8]
            raise ConfigError(f"unknown nevergrad optimizer {name!r}" + (f" (similar: {', '.join(close)})" if close else ""))
        param = ng.p.Array(shape=(self.space.size(),), lower=0.0, upper=1.0)
        param.value = self.space.to_unit(self.space.default_point())
        param.random_state = np.random.RandomState(self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                opt = ng.optimizers.registry[name](parametrization=param, budget=self.options.budget or self.budget,
                                                   num_workers=self.population)
                chain = list(_chain(opt))
            except Exception as exc:
                raise ConfigError(f"nevergrad optimizer {name!r} cannot run here: {str(exc).splitlines()[0]}") from None
        recast = [type(o).__name__ for o in chain if isinstance(o, RecastOptimizer)]
        if recast:
            raise ConfigError(f"nevergrad optimizer {name!r} runs {recast[0]} (scipy in a thread), which cannot be "
                              f"checkpointed; pick another (e.g. TwoPointsDE, CMA, PSO, OnePlusOne)")
        try:
            pickle.dumps(opt)
        except Exception as exc:
            raise ConfigError(f"nevergrad optimizer {name!r} cannot be pickled for checkpoints: {exc}") from None
        self._opt = opt

    def _inject(self, points):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for point in reversed(points):  # nevergrad serves suggestions last-in first-out
                self._opt.suggest(self.space.to_unit(point))

    def _ask(self, n):
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(n):
                cand = self._opt.ask()
                out.append((self.space.from_unit(np.asarray(cand.value)), cand))
        return out

    def _tell(self, handles, losses):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for cand, loss in zip(handles, losses):
                self._opt.tell(cand, loss[0] if len(loss) == 1 else loss)

    def _recommend(self):
        """nevergrad's own recommendation, asked of a copy (some optimizers update state while recommending)."""
        import copy

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cand = copy.deepcopy(self._opt).provide_recommendation()
        return self.space.from_unit(np.clip(np.asarray(cand.value, dtype=float), 0.0, 1.0))

    def _get_state(self):
        return self._opt

    def _set_state(self, state):
        self._opt = state
