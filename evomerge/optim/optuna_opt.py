"""optuna samplers (TPE, CMA-ES via ``cmaes``, NSGA-II, random) through the ask/tell interface.

The study lives in optuna's in-memory storage and is pickled whole (trials, sampler and its RNG) into the
run's checkpoint, so a resumed study is exactly the one that was checkpointed: no trial is half-recorded in
an external database that the checkpoint does not know about. Conditional parameters are suggested
define-by-run, only when active. Warm-start points are ``study.enqueue_trial``-ed right before the ask that
serves them.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from evomerge.errors import ConfigError
from evomerge.optim.base import Optimizer
from evomerge.optim.registry import OPTIMIZERS
from evomerge.spaces.params import BoolParam, CategoricalParam, FloatParam, IntParam


class OptunaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sampler: Literal["tpe", "cmaes", "nsga2", "random"] = "tpe"
    sampler_options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the sampler")


def _make_sampler(name: str, seed: int, population: int, extra: dict[str, Any]):
    import optuna

    s = optuna.samplers
    try:
        if name == "tpe":
            return s.TPESampler(seed=seed, **extra)
        if name == "cmaes":
            return s.CmaEsSampler(seed=seed, warn_independent_sampling=False, **extra)
        if name == "nsga2":
            return s.NSGAIISampler(seed=seed, population_size=extra.pop("population_size", population), **extra)
        return s.RandomSampler(seed=seed, **extra)
    except TypeError as exc:
        raise ConfigError(f"bad optuna sampler_options for {name!r}: {exc}") from None


@OPTIMIZERS.register("optuna")
class Optuna(Optimizer):
    Options = OptunaOptions
    multi_objective = True
    partial_tell = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.options.sampler == "cmaes" and len(self.directions) > 1:
            raise ConfigError("optuna's cmaes sampler is single-objective; use nsga2 or tpe for several objectives")
        sampler = _make_sampler(self.options.sampler, self.seed, self.population, dict(self.options.sampler_options))
        self._study = optuna.create_study(directions=["minimize"] * len(self.directions), sampler=sampler)

    def _suggest(self, trial) -> dict[str, Any]:
        point: dict[str, Any] = {}
        for p in self.space.params:
            if not p.is_active(point):
                continue
            if isinstance(p, FloatParam):
                point[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
            elif isinstance(p, IntParam):
                point[p.name] = trial.suggest_int(p.name, p.low, p.high)
            elif isinstance(p, BoolParam):
                point[p.name] = trial.suggest_categorical(p.name, [False, True])
            elif isinstance(p, CategoricalParam):
                point[p.name] = trial.suggest_categorical(p.name, p.choices)
            else:
                raise ConfigError(f"optuna cannot sample parameter type {type(p).__name__}")
        return point

    def _inject(self, points):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for point in points:  # asked first-in first-out by study.ask()
                self._study.enqueue_trial(dict(point))

    def _ask(self, n):
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(n):
                trial = self._study.ask()
                out.append((self._suggest(trial), trial.number))
        return out

    def _tell(self, handles, losses):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for number, loss in zip(handles, losses):
                self._study.tell(number, loss if len(loss) > 1 else loss[0])

    def _get_state(self):
        return self._study

    def _set_state(self, state):
        self._study = state

    @property
    def study(self):
        """The underlying optuna study (read it, e.g. for optuna's visualisations)."""
        return self._study
