"""``RunConfig``: one search job (YAML in ``experiments/``), validated once at the edge.

``validate_run(cfg)`` builds the space and the optimizer and checks the objectives against the metrics the
fitness kind reports, so a bad config fails with one line before any merge or evaluation runs.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path, PurePath
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evomerge.errors import ConfigError
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

    metric: str
    direction: Literal["maximize", "minimize"] = "maximize"
    penalty: Optional[float] = Field(None, description="value told for failed candidates (default -1e3 / +1e3)")
    reference: Optional[float] = Field(None, description="hypervolume reference (default: worst value seen)")

    def penalty_value(self) -> float:
        if self.penalty is not None:
            return self.penalty
        return -1e3 if self.direction == "maximize" else 1e3


class BudgetConfig(_Strict):
    evaluations: Optional[int] = Field(None, ge=1)
    generations: Optional[int] = Field(None, ge=1)
    wall_time_s: Optional[float] = Field(None, gt=0)

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

    top: int = Field(5, ge=0)
    items_per_task: int = Field(400, ge=1)
    recommended: bool = Field(True, description="also evaluate the optimizer's own estimate of the best point "
                                                "(CMA-ES: its distribution's mean) and let it compete")


class WarmStartRecipe(_Strict):
    """A recipe to evaluate first (e.g. an earlier stage's winner: ``{recipe: {best_of: ps}}`` in a staged job)."""

    recipe: dict[str, Any]
    label: str = "recipe"
    required: bool = Field(True, description="refuse the run when the space cannot express the recipe "
                                             "(else it is skipped)")


class WarmStartPoint(_Strict):
    """A point of the search space to evaluate first."""

    point: dict[str, Any]
    label: str = "point"


#: ``default``: the space's default point; ``simple_merges``: the uniform average and the task-arithmetic and
#: TIES coefficient grids (the demo's baselines) that the space can express
WarmStartName = Literal["default", "simple_merges"]
WarmStartEntry = Union[WarmStartName, WarmStartRecipe, WarmStartPoint]


class OptimizerConfig(_Strict):
    name: str = "cma"
    population: int = Field(8, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)
    warm_start: Union[Literal["auto", "none"], list[WarmStartEntry]] = Field(
        "auto", description="points asked before the optimizer's own (counted in the budget, marked in the "
                            "ledger): auto = [default, simple_merges]; none; or a list of entries")
    schedule: Literal["auto", "generational", "steady_state"] = Field(
        "auto", description="steady_state: tell each result as it arrives and keep every worker busy; "
                            "generational: evaluate and tell whole populations; auto: steady_state when the "
                            "optimizer takes partial tells")


class ExecutorConfig(_Strict):
    name: str = "local"
    options: dict[str, Any] = Field(default_factory=dict)


class RunConfig(_Strict):
    """A search job. ``space`` is a shipped name, a YAML path, or a mapping (``preset`` + overrides)."""

    name: str = "search"
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**63)  # every generator of the run is seeded from it (64-bit)
    base: Optional[str] = None
    models: list[str] = Field(default_factory=list)
    space: Union[str, dict[str, Any]]
    fitness: dict[str, Any]
    objectives: list[ObjectiveConfig]
    optimizer: OptimizerConfig = OptimizerConfig()
    budget: Optional[BudgetConfig] = None
    executor: ExecutorConfig = ExecutorConfig()
    run_dir: Optional[str] = None
    finalists: FinalistsConfig = FinalistsConfig()
    # config.json fields of the models (model_type, hidden_size, ...): lets `evomerge plan` size a job whose
    # models are not on this machine; ignored when they are
    architecture: Optional[dict[str, Any]] = None

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
        if "kind" not in self.fitness:
            raise ValueError("fitness needs a kind (lm_eval or synthetic)")
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
    """``(worker class, validated fitness config)`` of a run config's ``fitness`` section."""
    from evomerge.execution.base import WORKERS

    worker_cls = WORKERS.get(str(cfg.fitness.get("kind", "lm_eval")))
    return worker_cls, worker_cls.config_class().model_validate(cfg.fitness)


def validate_run(cfg: RunConfig):
    """Build (space, optimizer, worker class) or raise one clear ConfigError; does no merging/evaluation."""
    from evomerge.execution.base import EXECUTORS
    from evomerge.optim import make_optimizer
    from evomerge.spaces import build_space

    if not cfg.models:
        raise ConfigError("models is empty: list the models to merge")
    try:
        worker_cls, fitness = fitness_config(cfg)
    except ValidationError as exc:
        raise ConfigError(f"invalid fitness config: {_one_line(exc)}") from None
    known = worker_cls.metrics(fitness)
    for o in cfg.objectives:
        if o.metric not in known:
            raise ConfigError(f"objective metric {o.metric!r} is not reported by fitness {cfg.fitness['kind']!r} "
                              f"(known: {', '.join(known)})")
    executor_cls = EXECUTORS.get(cfg.executor.name)
    if hasattr(executor_cls, "validate_options"):  # typed executor options fail here, before any compute
        executor_cls.validate_options(cfg.executor.options)
    if getattr(worker_cls, "needs_models", True):
        from evomerge.models import resolve_model
        from evomerge.zoo.settings import unbuilt_zoo

        for ref in ([cfg.base] if cfg.base else []) + cfg.models:
            if not ref.startswith("zoo://") or unbuilt_zoo(ref) is None:  # the run builds a zoo, not validation
                resolve_model(ref)  # raises "model folder not found: ..." for a missing model
    space = build_space(cfg.space, base=cfg.base, models=cfg.models)
    optimizer = make_optimizer(cfg.optimizer.name, space, cfg.directions, seed=cfg.seed,
                               population=cfg.optimizer.population, budget=cfg.budget.evaluations,
                               options=cfg.optimizer.options)
    resolve_schedule(cfg, optimizer)
    from evomerge.run.warm_start import takes_warm_start, warm_start_points

    if warm_start_points(cfg, space):
        takes_warm_start(cfg, optimizer)  # raises for explicit points the plugin cannot take
    return space, optimizer, worker_cls


def resolve_schedule(cfg: RunConfig, optimizer) -> str:
    """``generational`` or ``steady_state`` for this run (``auto`` follows the optimizer)."""
    wanted = cfg.optimizer.schedule
    if wanted == "auto":
        return "steady_state" if optimizer.partial_tell else "generational"
    if wanted == "steady_state" and not optimizer.partial_tell:
        raise ConfigError(f"optimizer {cfg.optimizer.name!r} needs whole generations; "
                          "use schedule generational (or auto)")
    return wanted
