"""optuna samplers (TPE, CMA-ES via ``cmaes``, NSGA-II, random) through the ask/tell interface.

The study lives in optuna's in-memory storage; the run's checkpoint holds it as plain data (trials, study
attributes and the sampler's generator states, :mod:`evomerge.optim.optuna_state`; no pickle), replayed into a
fresh study on resume, so a resumed study asks exactly what the checkpointed one would have: no trial is
half-recorded in an external database that the checkpoint does not know about. Conditional parameters are suggested
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


def param_distribution(p):
    """The optuna distribution of one search parameter (what optuna samples, and how the run's optuna journal
    shows it: ``evomerge.tracking.optuna_journal``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(p, FloatParam):
        return FloatDistribution(p.low, p.high, log=p.log)
    if isinstance(p, IntParam):
        return IntDistribution(p.low, p.high)
    if isinstance(p, BoolParam):
        return CategoricalDistribution([False, True])
    if isinstance(p, CategoricalParam):
        return CategoricalDistribution(p.choices)
    raise ConfigError(f"optuna cannot sample parameter type {type(p).__name__}")


@OPTIMIZERS.register("optuna")
class Optuna(Optimizer):
    Options = OptunaOptions
    multi_objective = True
    partial_tell = True
    plain_state = True  # trials + generator states (optuna_state); handles are trial numbers

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.options.sampler == "cmaes" and len(self.directions) > 1:
            raise ConfigError("optuna's cmaes sampler is single-objective; use nsga2 or tpe for several objectives")
        self._study = optuna.create_study(directions=["minimize"] * len(self.directions), sampler=self._sampler())

    def _sampler(self):
        return _make_sampler(self.options.sampler, self.seed, self.population, dict(self.options.sampler_options))

    def _suggest(self, trial) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        point: dict[str, Any] = {}
        for p in self.space.params:
            if not p.is_active(point):
                continue
            d = param_distribution(p)
            if isinstance(d, FloatDistribution):
                point[p.name] = trial.suggest_float(p.name, d.low, d.high, log=d.log)
            elif isinstance(d, CategoricalDistribution):
                point[p.name] = trial.suggest_categorical(p.name, list(d.choices))
            else:
                point[p.name] = trial.suggest_int(p.name, d.low, d.high)
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
        from evomerge.optim.optuna_state import study_state

        return study_state(self._study)

    def _set_state(self, state):
        if not isinstance(state, dict):  # a pickled Study (checkpoints of earlier versions, read via the allow-list)
            self._study = state
            return
        from evomerge.optim.optuna_state import restore_study

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._study = restore_study(state, self._sampler(), len(self.directions))

    @property
    def study(self):
        """The underlying optuna study (read it, e.g. for optuna's visualisations)."""
        return self._study
