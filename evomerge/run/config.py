"""``RunConfig``: one search job (YAML in ``experiments/``), validated once at the edge; its ``fitness`` section
is typed by its kind (the worker plugin's config class). ``evomerge.run.validate`` builds what the config names.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path, PurePath
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evomerge.errors import ConfigError
from evomerge.execution.base import FitnessSection
from evomerge.recipe import _one_line
from evomerge.yaml_io import parse_yaml


#: a run or stage name: one path component of safe characters (it names a folder under the run root)
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


def check_name(v: str, what: str = "name") -> str:
    if not re.match(SAFE_NAME, v or ""):
        raise ValueError(f"{what} {v!r} must be one folder name of letters, digits, '_', '.', '-' "
                         "(starting with a letter or digit)")
    return v


def check_relative_dir(v: Optional[str]) -> Optional[str]:
    """A config's ``run_dir``: a relative path that stays inside the working folder (another place: the
    command line's --run-dir, which a config someone sent you cannot set)."""
    if v is None:
        return v
    p = PurePath(v)
    if p.is_absolute() or ".." in p.parts or str(v).startswith("~") or not p.parts:
        raise ValueError(f"run_dir {v!r} must be a relative path inside the working folder without '..' "
                         "(use --run-dir for another place)")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ObjectiveConfig(_Strict):
    """One objective: a metric the worker reports (a task name, ``mean``, ...) to maximise or minimise."""

    metric: str = Field(description="a metric the fitness reports: a task name, mean, num_layers, params_m, ...")
    direction: Literal["maximize", "minimize"] = Field("maximize", description="maximize or minimize the metric")
    penalty: Optional[float] = Field(None, description="value told for failed candidates (default -1e3 / +1e3)")
    reference: Optional[float] = Field(None, description="hypervolume reference (default: worst value seen)")

    def penalty_value(self) -> float:
        if self.penalty is not None:
            return self.penalty
        return -1e3 if self.direction == "maximize" else 1e3


class BudgetConfig(_Strict):
    evaluations: Optional[int] = Field(None, ge=1,
                                       description="stop after this many candidates (warm start and recommendation "
                                                   "included)")
    generations: Optional[int] = Field(None, ge=1,
                                       description="stop after this many generations (populations) of the optimizer")
    wall_time_s: Optional[float] = Field(None, gt=0,
                                         description="stop starting new candidates after this many seconds of search")

    @model_validator(mode="after")
    def _some(self):
        if self.evaluations is None and self.generations is None and self.wall_time_s is None:
            raise ValueError("set at least one of evaluations, generations, wall_time_s")
        return self


class FinalistsConfig(_Strict):
    """After the budget: the ``top`` candidates by told value answer ``items_per_task`` search items per task
    that none of them has answered, and the winner is the best of them on their told items and these pooled
    (``run/finalists.py``). ``top: 0`` names the best told value the winner. ``recommended``: the optimizer's
    recommendation (``run/recommend.py``) joins them. Not part of a run's identity: a finished run resumed with
    other settings re-scores its finalists."""

    top: int = Field(5, ge=0,
                     description="candidates (best told values) re-scored on fresh items; 0: the best told value wins")
    items_per_task: int = Field(400, ge=1, description="fresh search items per task each finalist answers")
    recommended: bool = Field(True, description="also evaluate the optimizer's own estimate of the best point "
                                                "(CMA-ES: its distribution's mean) and let it compete")


class WarmStartRecipe(_Strict):
    """A recipe to evaluate first (e.g. an earlier stage's winner: ``{recipe: {best_of: ps}}`` in a staged job)."""

    recipe: dict[str, Any] = Field(description="a recipe (or {best_of: STAGE} in a staged job) to evaluate first")
    label: str = Field("recipe", description="how the ledger names this warm start")
    required: bool = Field(True, description="refuse the run when the space cannot express the recipe "
                                             "(else it is skipped)")


class WarmStartPoint(_Strict):
    """A point of the search space to evaluate first."""

    point: dict[str, Any] = Field(description="a point of the search space (parameter name -> value) to evaluate first")
    label: str = Field("point", description="how the ledger names this warm start")


#: ``default``: the space's default point; ``simple_merges``: the uniform average and the task-arithmetic and
#: TIES coefficient grids (the demo's baselines) that the space can express
WarmStartName = Literal["default", "simple_merges"]
WarmStartEntry = Union[WarmStartName, WarmStartRecipe, WarmStartPoint]


class OptimizerConfig(_Strict):
    name: str = Field("cma", description="optimizer plugin: cma, nevergrad, optuna, random (or a third-party one)")
    population: int = Field(8, ge=1, description="candidates per generation (asked together, evaluated in parallel)")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="options of the plugin (pycma's, nevergrad's optimizer name, optuna's "
                                                "sampler, ...)")
    warm_start: Union[Literal["auto", "none"], list[WarmStartEntry]] = Field(
        "auto", description="points asked before the optimizer's own (counted in the budget, marked in the "
                            "ledger): auto = [default, simple_merges]; none; or a list of entries")
    schedule: Literal["auto", "generational", "steady_state"] = Field(
        "auto", description="steady_state: tell each result as it arrives and keep every worker busy; "
                            "generational: evaluate and tell whole populations; auto: steady_state when the "
                            "optimizer takes partial tells")


class ExecutorConfig(_Strict):
    name: str = Field("local", description="where candidates are evaluated: local (in this process) or ray")
    options: dict[str, Any] = Field(default_factory=dict, description="options of the executor (ray: see RayOptions)")


class TrackerConfig(_Strict):
    """An experiment tracker the search logs to (``evomerge.tracking``); a bare name stands for
    ``{name: NAME}``."""

    name: str = Field(description="tracker plugin: wandb, mlflow (or a third-party one)")
    options: dict[str, Any] = Field(default_factory=dict, description="options of the tracker")

    @model_validator(mode="before")
    @classmethod
    def _short(cls, v):
        return {"name": v} if isinstance(v, str) else v


class RunConfig(_Strict):
    """A search job. ``space`` is a shipped name, a YAML path, or a mapping (``preset`` + overrides)."""

    name: str = Field("search", description="the run's name (its folder under runs/ unless run_dir is set)")
    description: str = Field("", description="free text kept with the run")
    seed: int = Field(0, ge=0, lt=2**63,
                      description="seeds every generator of the run (optimizer, item samples, stochastic merges)")
    base: Optional[str] = Field(None,
                                description="the base model (HF folder, hub name org/name[@revision], or "
                                            "zoo://VARIANT/NAME)")
    models: list[str] = Field(default_factory=list, description="the fine-tuned models to merge (same forms as base)")
    space: Union[str, dict[str, Any]] = Field(description="search space: a shipped name, a YAML path, or a mapping "
                                                          "(preset: NAME plus overrides)")
    fitness: FitnessSection = Field(description="how candidates are scored; its fields depend on kind (lm_eval, "
                                                "synthetic, ...)")
    objectives: list[ObjectiveConfig] = Field(description="metrics to optimise; several give a Pareto front")
    optimizer: OptimizerConfig = Field(OptimizerConfig(), description="the optimizer plugin and its settings")
    budget: Optional[BudgetConfig] = Field(None,
                                           description="when to stop (at least one of evaluations, generations, "
                                                       "wall_time_s)")
    executor: ExecutorConfig = Field(ExecutorConfig(), description="where candidates are evaluated")
    run_dir: Optional[str] = Field(None,
                                   description="the run folder, relative to the working folder (default runs/NAME)")
    finalists: FinalistsConfig = Field(FinalistsConfig(),
                                       description="after the budget: the best candidates re-scored on fresh items "
                                                   "name the winner")
    tracking: list[TrackerConfig] = Field(default_factory=list,
                                          description="experiment trackers that watch the search (wandb, mlflow); "
                                                      "the optuna journal for `evomerge dashboard` is always kept")
    # config.json fields of the models (model_type, hidden_size, ...): lets `evomerge plan` size a job whose
    # models are not on this machine; ignored when they are
    architecture: Optional[dict[str, Any]] = Field(None,
                                                   description="config.json fields of the models, so `evomerge plan` "
                                                               "can size a job whose models are not here (ignored when "
                                                               "they are)")

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v, "run name")))
    _run_dir = field_validator("run_dir")(classmethod(lambda cls, v: check_relative_dir(v)))

    @model_validator(mode="after")
    def _check(self):
        if not self.objectives:
            raise ValueError("objectives is empty: name at least one metric to optimise")
        names = [o.metric for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives listed twice: {names}")
        if self.budget is None:
            raise ValueError("budget is missing: set evaluations, generations and/or wall_time_s")
        trackers = [t.name for t in self.tracking]
        if len(set(trackers)) != len(trackers):
            raise ValueError(f"trackers listed twice: {trackers}")
        return self

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def run_config_from_dict(data: Any) -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"a run config must be a mapping, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        if all(e["loc"][:1] == ("fitness",) and len(e["loc"]) > 1 for e in exc.errors()):
            raise ConfigError(f"invalid fitness config: {_one_line(exc, skip=1)}") from None
        raise ConfigError(f"invalid run config: {_one_line(exc)}") from None


def read_experiment(ref: Union[str, Path, dict[str, Any]]) -> dict[str, Any]:
    """The mapping of a job config: a YAML path, a shipped experiment name, or a mapping (copied)."""
    if isinstance(ref, dict):
        return copy.deepcopy(ref)
    from evomerge.resources import resolve

    path = resolve("experiments", ref)
    data = parse_yaml(Path(path).read_text(), f"run config YAML {path}")
    if not isinstance(data, dict):
        raise ConfigError(f"run config {path} does not hold a mapping")
    return data


def load_run_config(path_or_name: Union[str, Path]) -> RunConfig:
    """A run config from a YAML path or a shipped experiment name."""
    return run_config_from_dict(read_experiment(path_or_name))


def fitness_config(cfg: RunConfig):
    """``(worker class, typed fitness config)`` of a run config (validated when the config was)."""
    from evomerge.execution.base import WORKERS

    return WORKERS.get(cfg.fitness.kind), cfg.fitness


def resolve_schedule(cfg: RunConfig, optimizer) -> str:
    """``generational`` or ``steady_state`` for this run (``auto`` follows the optimizer)."""
    wanted = cfg.optimizer.schedule
    if wanted == "auto":
        return "steady_state" if optimizer.partial_tell else "generational"
    if wanted == "steady_state" and not optimizer.partial_tell:
        raise ConfigError(f"optimizer {cfg.optimizer.name!r} needs whole generations; "
                          "use schedule generational (or auto)")
    return wanted
