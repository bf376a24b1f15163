"""Preflight: every check of a job that needs no compute, run before the run directory is written.

``preflight(cfg, run_dir) -> PreflightReport`` checks, in order (cheapest first) and stops at the first
failure with one ``EvomergeError`` line:

1. the config itself (space, optimizer and its options, objectives, executor options: ``validate_run``);
2. the run directory: a folder we may create, and not one that holds a different run;
3. the executor's resources: a Ray ``address`` reachable within a short timeout, GPUs asked vs visible;
4. the fitness tasks: include-path folders exist, every task (and test task) is in them (read without lm-eval)
   or else in lm-eval's task index;
5. every model folder: ``config.json`` parses, safetensors headers parse, architectures / names / shapes agree;
6. the evaluation engine (``fitness.backend``): installed, in the tested version range, and able to serve the
   job's lead model and recipes;
7. the memory plan (``execution.memory_plan.plan_job``): a job whose worker cannot fit on this node is refused.

Nothing is written; ``run_search`` / ``resume`` write the run directory only after it passes, so a failed
preflight leaves no trace and the corrected config runs. ``evomerge check CONFIG`` runs it alone, and other
verbs (``plan``) may call it too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from evomerge.errors import ConfigError, EvomergeError
from evomerge.machine import visible_gpus
from evomerge.run.config import RunConfig
from evomerge.run.validate import validate_run

if TYPE_CHECKING:
    from evomerge.fitness.config import FitnessConfig

log = logging.getLogger(__name__)
#: how long preflight waits for a Ray address to answer (the run itself uses ``connect_timeout_s``)
REACH_TIMEOUT_S = 3.0


@dataclass
class PreflightReport:
    """What preflight built and checked: the space, the optimizer and worker class of ``validate_run``, and
    one line per check (for ``evomerge check``)."""

    cfg: RunConfig
    run_dir: Optional[Path]
    space: Any
    optimizer: Any
    worker_cls: Any
    checks: list[str] = field(default_factory=list)
    seconds: float = 0.0


def preflight(cfg: RunConfig, run_dir: Optional[Path] = None, *, resuming: bool = False) -> PreflightReport:
    """Run every compute-free check of ``cfg`` (see the module doc); raises one EvomergeError line. Hub models
    are read from their headers: no weights are fetched here."""
    from evomerge.models.hub import headers_only

    with headers_only():
        return _preflight(cfg, run_dir, resuming)


def _preflight(cfg: RunConfig, run_dir: Optional[Path], resuming: bool) -> PreflightReport:
    t0 = time.perf_counter()
    space, optimizer, worker_cls = validate_run(cfg)
    rep = PreflightReport(cfg, Path(run_dir) if run_dir is not None else None, space, optimizer, worker_cls)
    rep.checks.append(f"config: {space.size()} search parameters, optimizer {cfg.optimizer.name}, "
                      f"objectives {', '.join(o.metric for o in cfg.objectives)}")
    if rep.run_dir is not None:
        check_run_dir(cfg, rep.run_dir, resuming=resuming)
        rep.checks.append(f"run dir: {rep.run_dir}")
    rep.checks.append(check_executor(cfg))
    if cfg.fitness.kind == "lm_eval":
        rep.checks.append(check_tasks(cfg.fitness))
    if worker_cls.needs_models:
        from evomerge.spaces.dataflow import DataFlowSpace

        refs = _model_refs(cfg, space)
        lead = cfg.base or cfg.models[0]  # the live model's
        unbuilt_zoo = _unbuilt_zoo if any(r.startswith("zoo://") for r in refs) else (lambda r: None)
        pending = sorted({r[len("zoo://"):].partition("/")[0] for r in refs if unbuilt_zoo(r) is not None})
        if pending:  # building a zoo is compute: the run does it first, preflight only says so
            rep.checks.append(f"zoo {', '.join(pending)}: not built yet; the run builds it first (minutes)")
            refs = [r for r in refs if unbuilt_zoo(r) is None]
        if refs:
            rep.checks.append(check_models(refs, layer_paths=isinstance(space, DataFlowSpace),
                                           vocab=space.vocab()))
            if not isinstance(space, DataFlowSpace) and lead in refs:
                check_space_layers(space, lead)
            from evomerge.models.hub import hub_line

            if line := hub_line(refs):
                rep.checks.append(line)
        if cfg.fitness.kind == "lm_eval":
            line = check_engine(cfg.fitness, space, refs, lead)
            if line:
                rep.checks.append(line)
        if not pending:  # the memory plan (evomerge plan): a job that cannot fit on this node stops here
            from evomerge.execution.memory_plan import plan_job

            plan = plan_job(cfg, vocab=space.vocab())
            rep.checks.append(f"memory: {plan.lines[-1]}; workers that fit on this node: {plan.workers}")
    rep.seconds = time.perf_counter() - t0
    return rep


# ---- run directory ------------------------------------------------------------------------------------------

def check_run_dir(cfg: RunConfig, run_dir: Path, resuming: bool = False) -> None:
    """The run dir can be created, and (unless resuming it) does not hold a different run."""
    from evomerge.run.run_dir import check_same_run

    if run_dir.exists() and not run_dir.is_dir():
        raise EvomergeError(f"run dir {run_dir} exists and is not a folder")
    if (run_dir / "config.yaml").exists():
        check_same_run(cfg, run_dir)
        return
    parent = run_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise EvomergeError(f"cannot create run dir {run_dir}: {parent} is not a writable folder")


# ---- executor -----------------------------------------------------------------------------------------------

def check_executor(cfg: RunConfig) -> str:
    if cfg.executor.name != "ray":
        return f"executor: {cfg.executor.name}"
    from evomerge.execution.ray_cluster import check_reachable, parse_options

    opts = parse_options(cfg.executor.options)
    if opts.address:
        check_reachable(opts.address, min(opts.connect_timeout_s, REACH_TIMEOUT_S))
        return f"executor: ray at {opts.address} (reachable)"
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a session the caller started: the executor checks its nodes
        return "executor: ray (the session this process already has)"
    gpus = opts.local_num_gpus if opts.local_num_gpus is not None else visible_gpus()
    if opts.num_gpus > gpus:
        raise EvomergeError(f"ray executor: each worker asks num_gpus={opts.num_gpus:g} but this machine shows "
                            f"{gpus} GPU(s)" + ("" if gpus else " (set num_gpus: 0 to run on CPUs)"))
    cpus = opts.local_num_cpus or os.cpu_count() or 1
    if opts.num_cpus > cpus:
        raise EvomergeError(f"ray executor: each worker asks num_cpus={opts.num_cpus:g} but this machine has "
                            f"{cpus} CPU(s)")
    return f"executor: local ray ({cpus} CPUs, {gpus} GPUs)"


# ---- fitness tasks ------------------------------------------------------------------------------------------

def check_tasks(fitness: "FitnessConfig") -> str:
    """Include paths resolve to folders and every task / test task is defined in them or in lm-eval's index."""
    from evomerge.fitness.task_index import include_paths, local_task_names

    paths = include_paths(fitness.include_path)
    for p in paths:
        if not Path(p).is_dir():
            raise EvomergeError(f"fitness include_path {p} is not a folder")
    wanted = list(dict.fromkeys(list(fitness.tasks) + list(fitness.test_tasks or [])))
    # the local folders first, read without lm-eval (importing it takes a second, its default index seconds)
    known: set[str] = local_task_names(paths) if paths else set()
    where = "the include path"
    if not set(wanted) <= known:
        from lm_eval.tasks import TaskManager

        known = set(TaskManager(include_path=paths or None).all_tasks)
        where = "lm-eval's index"
    unknown = [t for t in wanted if t not in known]
    if unknown:
        import difflib

        hints = [h for t in unknown for h in difflib.get_close_matches(t, sorted(known), n=1)]
        raise EvomergeError(f"unknown lm-eval task(s): {', '.join(unknown)}"
                            + (f" (did you mean: {', '.join(hints)}?)" if hints else "")
                            + ("" if paths else " (local task folders go in fitness.include_path)"))
    if paths:
        check_local_metrics(fitness, paths)
    return f"tasks: {len(wanted)} found in {where}"


def check_local_metrics(cfg: "FitnessConfig", paths: list[str]) -> None:
    """The per-item metrics against the task YAMLs found locally (lm-eval's own tasks: when built)."""
    from evomerge.fitness.evaluator import check_task_metric
    from evomerge.fitness.task_index import local_task_configs

    if cfg.metric is None and cfg.test_metric is None:  # each task's own first metric: nothing to check
        return
    configs = local_task_configs(paths)
    for tasks, metric in ((cfg.tasks, cfg.metric), (cfg.test_tasks or [], cfg.test_metric_or_default)):
        for t in tasks:
            if metric is None or t not in configs:
                continue
            listed = configs[t].get("metric_list")
            known = [m.get("metric") for m in listed if isinstance(m, dict)] if isinstance(listed, list) else None
            check_task_metric(t, configs[t].get("output_type", "generate_until"), known, metric)


def check_space_layers(space, lead: str) -> None:
    """The space's per-layer groups fit the lead model's block list (its default point's recipe, as the merge
    engine would check it on the first candidate)."""
    from evomerge.merge.plan import check_layers
    from evomerge.models import LazyCheckpoint
    from evomerge.models.compat import layout_of
    from evomerge.recipe import MergeRecipe

    recipe = space.decode(space.default_point())
    if isinstance(recipe, MergeRecipe):
        ck = LazyCheckpoint(lead)
        try:
            check_layers(recipe, layout_of(ck))
        except EvomergeError as exc:
            raise ConfigError(f"search space: {exc} (is the space's num_layers the model's?)") from None
        try:
            space.check_modules(ck.names(), lead)
        except EvomergeError as exc:
            raise ConfigError(f"search space: {exc}") from None


# ---- evaluation engine --------------------------------------------------------------------------------------

def check_engine(fitness: "FitnessConfig", space, refs: list[str], lead: str) -> Optional[str]:
    """What the backend cannot serve, in one line (``refs``: the model folders on this machine)."""
    from evomerge.engines import ENGINES

    return ENGINES.get(fitness.backend).check(fitness, space, refs, lead)


# ---- models -------------------------------------------------------------------------------------------------

def _unbuilt_zoo(ref: str) -> Optional[str]:
    from evomerge.zoo.settings import unbuilt_zoo

    return unbuilt_zoo(ref)


def _model_refs(cfg: RunConfig, space) -> list[str]:
    """The model folders a run reads: base, models, and the space's sources (leaves of nested recipes)."""
    refs = ([cfg.base] if cfg.base else []) + list(cfg.models) + [s for s in space.sources() if isinstance(s, str)]
    return list(dict.fromkeys(refs))


def _read_json(path: Path) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EvomergeError(f"{path} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise EvomergeError(f"{path} does not hold a JSON object (got {type(data).__name__})")


def check_model(ref: str):
    """One model folder: config.json (and the shard index) parse, the safetensors headers parse."""
    from evomerge.models import LazyCheckpoint, resolve_model

    path = Path(resolve_model(ref))
    if path.is_dir():
        _read_json(path / "config.json")
        index = path / "model.safetensors.index.json"
        if index.exists():
            _read_json(index)
    try:
        return LazyCheckpoint(ref)
    except EvomergeError:
        raise
    except Exception as exc:  # SafetensorError, OSError, ...: name the file
        where = _bad_shard(path) or path
        raise EvomergeError(f"model {ref}: cannot read {where}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def _bad_shard(folder: Path) -> Optional[Path]:
    """The first safetensors file in ``folder`` whose header does not parse (None: all parse)."""
    from safetensors import safe_open

    for shard in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(str(shard), framework="numpy"):
                pass
        except Exception:
            return shard
    return None


def check_models(refs: list[str], layer_paths: bool = False, vocab: str = "base") -> str:
    """Every model folder readable, and all of them mergeable tensor by tensor (vocabularies that differ: as
    the ``vocab`` rule can merge them, the first folder being the lead); with ``layer_paths`` (data-flow
    merging: layers of several models stacked) the depths may differ, but architecture, width and vocabulary
    must agree."""
    from evomerge.models import check_compatible

    ckpts = [check_model(ref) for ref in refs]
    if len(ckpts) > 1 and layer_paths:
        _same_family(ckpts)
    elif len(ckpts) > 1:
        try:
            check_compatible(ckpts, vocab=vocab)
        except EvomergeError:
            raise
        except Exception as exc:
            raise EvomergeError(f"models cannot be compared: {type(exc).__name__}: {exc}") from None
    what = "architectures and widths agree" if layer_paths else "architectures and shapes agree"
    return f"models: {len(ckpts)} folders, headers read, {what}"


def _same_family(ckpts) -> None:
    """Data-flow sources: one architecture and one hidden size (the splice itself is checked per recipe)."""
    ref = ckpts[0]
    for other in ckpts[1:]:
        for key in ("architectures", "model_type", "hidden_size", "vocab_size"):
            a, b = ref.config.get(key), other.config.get(key)
            if a is not None and b is not None and a != b:
                raise EvomergeError(f"models differ in {key}: {ref.ref} has {a}, {other.ref} has {b}")
