"""Staged jobs: several searches run in order, a later stage's space built on an earlier stage's best recipe.

::

    name: zoo_ps_dfs
    stages:
      - {name: ps, experiment: zoo_demo}                  # parameter space first
      - name: dfs
        experiment: zoo_dfs                               # then data flow ...
        overrides:                                        # ... whose model "ps" is the PS winner
          space: {models: {ps: {best_of: ps}, sort: zoo://full/sort}}

Each stage runs in ``RUN_DIR/<stage name>`` as an ordinary run (``evomerge status RUN_DIR/ps`` works). A model
source written ``{best_of: STAGE}`` is replaced by that stage's best recipe (a nested parameter-space recipe)
before the stage is validated, so the stage's own ``config.yaml`` holds it in full. Running the job again
resumes: finished stages are skipped by their spent budget, an interrupted one continues from its checkpoint.
A later stage with ``optimizer.warm_start: auto`` also asks the previous stage's winner first (PS+DFS: the
path straight through the PS winner), where its space can express it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evomerge.errors import ConfigError, EvomergeError
from evomerge.recipe import _one_line
from evomerge.run.config import RunConfig, check_name, check_relative_dir, read_experiment, run_config_from_dict
from evomerge.run.context import Progress
from evomerge.run.loop import run_search

log = logging.getLogger(__name__)


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v, "stage name")))
    experiment: Union[str, dict[str, Any]]  # a shipped experiment name, a YAML path, or a whole run config
    overrides: dict[str, Any] = Field(default_factory=dict)  # merged into the experiment, mapping by mapping


class StagedConfig(BaseModel):
    """A job of stages (see the module doc)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "staged"
    description: str = ""
    stages: list[StageConfig] = Field(min_length=1)
    run_dir: Optional[str] = None

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v, "job name")))
    _run_dir = field_validator("run_dir")(classmethod(lambda cls, v: check_relative_dir(v)))

    @model_validator(mode="after")
    def _unique(self):
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names repeat: {names}")
        return self


def is_staged(data: Any) -> bool:
    return isinstance(data, dict) and "stages" in data


def staged_config_from_dict(data: dict[str, Any]) -> StagedConfig:
    try:
        return StagedConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid staged job: {_one_line(exc)}") from None


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _substitute(node: Any, best: Callable[[str], dict[str, Any]]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"best_of"}:
            return best(str(node["best_of"]))
        return {k: _substitute(v, best) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, best) for v in node]
    return node


def stage_config(job: StagedConfig, index: int, run_dir: Path, warm_from_previous: bool = True) -> RunConfig:
    """The resolved run config of stage ``index`` (earlier stages must have run for ``best_of``). With
    ``warm_start: auto`` (the default), a later stage also starts from the previous stage's winner where its
    space can express it (``warm_from_previous``; preflight before the stages run leaves it out)."""
    from evomerge.run.report import RunReport

    stage = job.stages[index]
    earlier = [s.name for s in job.stages[:index]]

    def best(name: str) -> dict[str, Any]:
        _earlier_stage(job, index, name)
        top = RunReport.load(run_dir / name).best()
        if top is None:
            raise EvomergeError(f"stage {name!r} has no successful candidate to build stage {stage.name!r} on")
        log.info("stage %s: best_of %s = candidate %d", stage.name, name, top["eval_id"])
        return top["recipe"]

    data = _stage_data(stage)
    opt = data.setdefault("optimizer", {})
    if warm_from_previous and index > 0 and isinstance(opt, dict) and opt.get("warm_start", "auto") == "auto":
        prev = earlier[-1]
        opt["warm_start"] = ["default", "simple_merges",
                             {"recipe": {"best_of": prev}, "label": f"best_of:{prev}", "required": False}]
    data = _substitute(data, best)
    data["run_dir"] = None
    return run_config_from_dict(data)


def _earlier_stage(job: StagedConfig, index: int, name: str) -> StageConfig:
    """The stage a ``best_of: NAME`` of stage ``index`` names (one line when it is not an earlier stage)."""
    earlier = {s.name: s for s in job.stages[:index]}
    if name not in earlier:
        raise ConfigError(f"stage {job.stages[index].name!r} asks best_of {name!r}, which is not an earlier stage "
                          f"(earlier: {', '.join(earlier) or 'none'})")
    return earlier[name]


def _stage_data(stage: StageConfig) -> dict[str, Any]:
    """The stage's experiment with its overrides merged in (``best_of`` sources not yet resolved)."""
    return _deep_merge(read_experiment(stage.experiment), stage.overrides)


def _uses_best_of(data: dict[str, Any]) -> bool:
    found: list[str] = []
    _substitute(data, lambda name: found.append(name) or {})
    return bool(found)


def check_stages(job: StagedConfig, run_dir: Optional[Path] = None) -> list[str]:
    """Preflight what can be checked before any stage runs: every stage's config without ``best_of`` sources
    (the others need an earlier stage's result and are checked when they start). Returns one line per stage."""
    from evomerge.run.preflight import preflight

    lines = []
    for i, stage in enumerate(job.stages):
        if _uses_best_of(_stage_data(stage)):
            lines.append(f"  stage {stage.name}: uses an earlier stage's result; checked when it starts")
            continue
        stage_dir = None if run_dir is None else Path(run_dir) / stage.name
        rep = preflight(stage_config(job, i, Path(run_dir or "."), warm_from_previous=False), stage_dir)
        lines.append(f"  stage {stage.name}: " + "; ".join(rep.checks))
    return lines


def plan_config(job: StagedConfig, index: int) -> tuple[RunConfig, Optional[str]]:
    """A stage's config for the memory plan, before any stage runs: a ``best_of`` source (a merge of an earlier
    stage's models, the same architecture and size) is planned as that stage's lead model. Returns the config
    and a note when a source was stood in for."""
    stage = job.stages[index]
    stood_in: list[str] = []

    def lead_of(name: str) -> Any:
        data = _stage_data(_earlier_stage(job, index, name))
        stood_in.append(name)
        return data.get("base") or (data.get("models") or [None])[0]

    data = _substitute(_stage_data(stage), lead_of)
    data["run_dir"] = None
    note = f"best_of {', '.join(dict.fromkeys(stood_in))} planned as that stage's lead model" if stood_in else None
    return run_config_from_dict(data), note


def iter_stages(job: StagedConfig, run_dir: Path) -> Iterator[tuple[StageConfig, RunConfig, Path]]:
    """``(stage, resolved config, stage run dir)`` in order, each resolved only when the previous one has run."""
    check_stages(job, run_dir)
    for i, stage in enumerate(job.stages):
        yield stage, stage_config(job, i, run_dir), run_dir / stage.name


def run_staged(job: StagedConfig, run_dir: Path, progress: Optional[Progress] = None) -> list[Path]:
    """Run (or continue) every stage in order; returns the stage run dirs."""
    dirs = []
    for stage, cfg, stage_dir in iter_stages(job, run_dir):
        log.info("stage %s (%s) in %s", stage.name, cfg.name, stage_dir)
        run_search(cfg, stage_dir, progress)
        dirs.append(stage_dir)
    return dirs


def load_job(path_or_name: Union[str, Path]) -> Union[RunConfig, StagedConfig]:
    """A run config or a staged job from a YAML path or a shipped experiment name."""
    data = read_experiment(str(path_or_name))
    return staged_config_from_dict(data) if is_staged(data) else run_config_from_dict(data)
