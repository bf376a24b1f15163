"""The search loop: ask -> decode -> executor (merge -> evaluate -> estimate) -> tell -> ledger -> checkpoint;
after the budget, the optimizer's recommendation (``run/recommend.py``) and the finalists (``run/finalists.py``).

Two schedules share this module's run directory, ledger and checkpoints:

- ``generational`` (:mod:`evomerge.run.generational`): ask a population, evaluate it, tell it whole. Optimizers
  that need whole generations (pycma's CMA-ES) always run this way.
- ``steady_state`` (:mod:`evomerge.run.steady_state`): every result is told as it arrives and a new point is
  asked for the worker it freed, so no worker idles while another finishes its candidate. The default for
  optimizers that take partial tells (optuna, nevergrad, random).

Both are kill -9 safe: the ledger (appended + fsynced per candidate) and the latest checkpoint (optimizer
state) are the truth; a resumed run evaluates nothing twice and loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from evomerge.errors import ConfigError, EvomergeError
from evomerge.execution.base import EXECUTORS, CandidateResult, Executor, WorkerSpec
from evomerge.fsutil import atomic_write, remove_stale_temps
from evomerge.run.checkpoint import load_latest_checkpoint, save_checkpoint
from evomerge.run.config import RunConfig, fitness_config, resolve_schedule, run_config_from_dict
from evomerge.run.ledger import Ledger
from evomerge.run.preflight import preflight
from evomerge.yaml_io import parse_yaml

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], None]
CHECKPOINT_VERSION = 2


RUN_ROOT = Path("runs")


def default_run_dir(cfg: RunConfig) -> Path:
    """``cfg.run_dir`` (a relative path inside the working folder, checked by RunConfig), else RUN_ROOT/NAME."""
    return Path(cfg.run_dir) if cfg.run_dir else RUN_ROOT / cfg.name


def _identity(cfg: RunConfig) -> dict[str, Any]:
    """The parts of a config that define *which* run it is (budget, run_dir, the executor and the finalists
    may change on resume: a run can go on with more workers or on a cluster)."""
    d = cfg.model_dump(mode="json")
    for key in ("budget", "run_dir", "description", "executor", "finalists"):
        d.pop(key, None)
    return d


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def load_run_dir_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise EvomergeError(f"{run_dir} is not a run directory (no config.yaml)")
    return run_config_from_dict(parse_yaml(path.read_text(), f"run config YAML {path}"))


def identity_diff(cfg: RunConfig, run_dir: Path) -> list[str]:
    """Top-level keys in which ``cfg`` names another run than the one ``run_dir`` holds ([] = the same run)."""
    a, b = _identity(load_run_dir_config(run_dir)), _identity(cfg)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def prepare_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    """Create the run dir with the resolved config, or check an existing one holds this same run; removes
    temporary files an interrupted write left behind."""
    path = run_dir / "config.yaml"
    if path.exists():
        diff = identity_diff(cfg, run_dir)
        if diff:
            raise ConfigError(f"run dir {run_dir} already holds a different run (differs in: {', '.join(diff)}); "
                              "pick another --run-dir or use 'evomerge resume'")
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run_dir)
    atomic_write(path, cfg.to_yaml())


def pin_hub_models(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """``cfg`` with every hub model pinned to a commit: the one ``run_dir`` already holds for it (a run
    continued), else the one its revision names now. The pinned config is what the run folder keeps."""
    from evomerge.models.hub import HubRef, pin, pin_all, pinned_refs

    data = cfg.model_dump(mode="json")
    held: dict[str, str] = {}
    if (run_dir / "config.yaml").is_file():
        try:
            held = pinned_refs(load_run_dir_config(run_dir).model_dump(mode="json"))
        except EvomergeError:
            pass  # preflight names what is wrong with the run dir

    def resolve(ref: str) -> str:
        h = HubRef.parse(ref)
        return held[h.repo_id] if h is not None and not h.pinned and h.repo_id in held else pin(ref)

    pinned = pin_all(data, resolve)
    return cfg if pinned == data else run_config_from_dict(pinned)


def run_search(cfg: RunConfig, run_dir: Optional[Path] = None, progress: Optional[Progress] = None) -> Path:
    """Validate, then run (or continue) the search into ``run_dir``; returns the run dir."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    cfg = pin_hub_models(cfg, run_dir)
    rep = preflight(cfg, run_dir)  # every error that needs no compute surfaces here; nothing written before
    space, optimizer = rep.space, rep.optimizer
    prepare_run_dir(cfg, run_dir)
    _search(cfg, run_dir, space, optimizer, progress)
    return run_dir


def resume(run_dir: Path, progress: Optional[Progress] = None, budget: Optional[dict[str, Any]] = None) -> Path:
    """Continue the run in ``run_dir`` from its latest intact checkpoint and ledger (optionally a new budget)."""
    run_dir = Path(run_dir)
    cfg = load_run_dir_config(run_dir)
    if budget:
        cfg = run_config_from_dict({**cfg.model_dump(mode="json"), "budget": {**cfg.budget.model_dump(), **budget}})
    rep = preflight(cfg, run_dir, resuming=True)
    space, optimizer = rep.space, rep.optimizer
    prepare_run_dir(cfg, run_dir)
    _search(cfg, run_dir, space, optimizer, progress)
    return run_dir


def _values(cfg: RunConfig, res: CandidateResult) -> tuple[list[float], CandidateResult]:
    if res.status == "ok":
        missing = [o.metric for o in cfg.objectives if o.metric not in res.objectives]
        if not missing:
            return [float(res.objectives[o.metric]) for o in cfg.objectives], res
        res = CandidateResult.failed(f"worker did not report metric(s) {', '.join(missing)}", res.timings)
    return [o.penalty_value() for o in cfg.objectives], res


@dataclass
class SearchContext:
    """What a schedule needs: the run's config, space, optimizer, ledger, checkpoint state and executor."""

    cfg: RunConfig
    run_dir: Path
    space: Any
    optimizer: Any
    ledger: Ledger
    progress: Optional[Progress]
    schedule: str
    state: dict[str, Any] = field(default_factory=dict)  # the latest checkpoint's state ({} on a fresh run)
    config_sha: str = ""
    t_start: float = 0.0
    # what names each candidate's items when the driver chooses them (each hands a candidate a FitnessRequest):
    # OnlineFitness for the online item bank (run/online.py), GenerationSamples for resample: generation
    # (run/resample.py); None when the worker picks its own items
    item_requests: Any = None
    _executor: Optional[Executor] = None

    @property
    def executor(self) -> Executor:
        """Started on first use, so a finished run resumes without loading any model."""
        if self._executor is None:
            spec = worker_spec(self.cfg, self.space, self.run_dir)
            self._executor = EXECUTORS.get(self.cfg.executor.name)(spec, run_dir=self.run_dir,
                                                                   **self.cfg.executor.options)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start

    def emit(self, event: str, **data: Any) -> None:
        if self.progress:
            self.progress({"event": event, **data})

    def append(self, gen: int, index: int, point, recipe, res: CandidateResult,
               **extra: Any) -> dict[str, Any]:
        """Record one evaluated (or failed) candidate in the ledger; returns the record."""
        values, res = _values(self.cfg, res)
        origin = self.optimizer.origin(point)  # warm-start points say where they come from
        if origin is not None:
            extra.setdefault("origin", origin)
        rec = {
            "eval_id": len(self.ledger), "gen": gen, "index": index, "point": point,
            "recipe": recipe.model_dump(mode="json") if recipe is not None else None,
            "status": res.status, "reason": res.reason, "values": values, "metrics": res.objectives,
            "item_results": res.item_results, "timings": res.timings, "time": time.time(), **extra,
        }
        if res.fidelity:  # online bank: items answered, std error, racing level (run/online.py)
            rec["fidelity"] = res.fidelity
        rec = self.ledger.append(rec)
        self.emit("candidate", gen=gen, record=rec, n_evals=len(self.ledger))
        return rec

    def task(self, key, recipe, n_fit: int, n_rank: Optional[int] = None) -> tuple:
        """An executor task for one candidate: ``(key, recipe)``, plus its items' request (the online bank fitted
        on the first ``n_fit`` ledger records, racing against the first ``n_rank``; or the sample of the
        generation after ``n_fit`` records) when the driver chooses the items."""
        if self.item_requests is None:
            return key, recipe
        return key, recipe, self.item_requests.request(n_fit, n_fit if n_rank is None else n_rank)

    def checkpoint(self, gen: int, step: Optional[int] = None, **extra: Any) -> None:
        """Save the optimizer (as it is now, having seen the whole ledger) and schedule-specific state as
        checkpoint number ``step`` (default ``gen``; the newest step wins on resume)."""
        save_checkpoint(self.run_dir / "checkpoints", gen if step is None else step, {
            "version": CHECKPOINT_VERSION, "config_sha": self.config_sha, "schedule": self.schedule, "gen": gen,
            "optimizer": self.optimizer.state_dict(), "n_records": len(self.ledger), "elapsed_s": self.elapsed(),
            **extra})
        self.emit("checkpoint", gen=gen, n_evals=len(self.ledger))


def check_state(state: dict, run_dir: Path) -> None:
    """The checkpoint's own fields have the types the schedules read (one line naming the field otherwise)."""
    def bad(key: str, want: str):
        raise EvomergeError(f"checkpoint in {run_dir} is damaged: {key} is {state.get(key)!r}, not {want}")

    if not isinstance(state.get("optimizer"), dict):
        bad("optimizer", "a mapping")
    for key in ("gen", "n_records", "n_asked"):
        value = state.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            bad(key, "a count")
    if isinstance(state.get("elapsed_s", 0.0), bool) or not isinstance(state.get("elapsed_s", 0.0), (int, float)):
        bad("elapsed_s", "a number of seconds")
    flight = state.get("in_flight", [])
    if not isinstance(flight, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2
                                               and isinstance(p[0], int) for p in flight):
        bad("in_flight", "a list of (index, point) pairs")


def _search(cfg: RunConfig, run_dir: Path, space, optimizer, progress: Optional[Progress]) -> None:
    from evomerge.run.finalists import score_finalists
    from evomerge.run.generational import run_generational
    from evomerge.run.recommend import evaluate_recommendation
    from evomerge.run.steady_state import run_steady_state

    schedule = resolve_schedule(cfg, optimizer)
    ctx = SearchContext(cfg, run_dir, space, optimizer, Ledger(run_dir / "ledger.jsonl"), progress, schedule,
                        config_sha=_sha(_identity(cfg)))
    ckpt = load_latest_checkpoint(run_dir / "checkpoints")
    if ckpt is not None:
        state = ckpt[1]
        if state.get("version") != CHECKPOINT_VERSION:
            raise EvomergeError(f"checkpoint in {run_dir} has format {state.get('version')}, this evomerge reads "
                                f"{CHECKPOINT_VERSION}: continue it with the evomerge that wrote it, or use a new "
                                "run dir")
        if state.get("config_sha") != ctx.config_sha:
            raise EvomergeError(f"checkpoint in {run_dir} belongs to another run config")
        if state.get("schedule") != schedule:
            raise EvomergeError(f"run {run_dir} was checkpointed with schedule {state.get('schedule')!r}, "
                                f"not {schedule!r}")
        check_state(state, run_dir)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except EvomergeError:
            raise
        except Exception as exc:  # a state edited by hand (its checksum redone): refuse, name what broke
            raise EvomergeError(f"checkpoint in {run_dir} holds an optimizer state {cfg.optimizer.name} cannot "
                                f"restore ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                                ) from None
        ctx.state = state
    else:  # a fresh run (or one killed before its first checkpoint: the same points are queued again)
        from evomerge.run.warm_start import enqueue_warm_start

        enqueue_warm_start(cfg, space, optimizer)
    n_records = ctx.state.get("n_records", 0)
    if len(ctx.ledger) < n_records:
        raise EvomergeError(f"ledger of {run_dir} has {len(ctx.ledger)} records but the checkpoint counts "
                            f"{n_records}; the ledger was truncated")
    ctx.t_start = time.monotonic() - ctx.state.get("elapsed_s", 0.0)
    try:
        _start_item_requests(ctx)
        gen = (run_steady_state if schedule == "steady_state" else run_generational)(ctx)
        evaluate_recommendation(ctx, gen)
        score_finalists(ctx)
    finally:
        ctx.close()
    ctx.emit("done", gen=gen, n_evals=len(ctx.ledger))


def _start_item_requests(ctx: SearchContext) -> None:
    """Fitness whose items the driver chooses per candidate: the online bank, or a sample per generation."""
    from evomerge.run.online import OnlineFitness
    from evomerge.run.resample import GenerationSamples

    _, fcfg = fitness_config(ctx.cfg)
    if getattr(fcfg, "online_mode", False):
        ctx.item_requests = OnlineFitness(ctx, fcfg)
    elif getattr(fcfg, "generation_sample", None):
        ctx.item_requests = GenerationSamples(ctx, fcfg)
    if ctx.item_requests is not None:
        ctx.item_requests.prepare()


def worker_spec(cfg: RunConfig, space, run_dir: Path) -> WorkerSpec:
    return WorkerSpec(fitness=cfg.fitness, sources=space.sources(), base=cfg.base, seed=cfg.seed,
                      run_dir=str(run_dir), space=cfg.space, models=cfg.models)
