"""What every part of a running search shares (the schedules, the recommendation, the finalists, the item
requests): :class:`SearchContext` with the run's config, space, optimizer, ledger, checkpoint state and
executor, and the worker spec the executor builds its workers from."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from evomerge.execution.base import EXECUTORS, CandidateResult, Executor, WorkerSpec
from evomerge.run.checkpoint import save_checkpoint
from evomerge.run.config import RunConfig
from evomerge.run.ledger import Ledger

Progress = Callable[[dict[str, Any]], None]
CHECKPOINT_VERSION = 2


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
    tracking: Any = None  # evomerge.tracking.Tracking: told each record as it lands
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
        if self.tracking is not None:
            self.tracking.candidate(rec)
        self.emit("candidate", gen=gen, record=rec, n_evals=len(self.ledger))
        return rec

    def task(self, key, recipe, n_fit: int, n_rank: Optional[int] = None) -> tuple:
        """An executor task for one candidate: ``(key, recipe)``, plus its items' request (the online bank fitted
        on the first ``n_fit`` ledger records, racing against the first ``n_rank``; or the sample of the
        generation after ``n_fit`` records) when the driver chooses the items."""
        if self.item_requests is None:
            return key, recipe
        return key, recipe, self.item_requests.request(n_fit, n_fit if n_rank is None else n_rank)

    def checkpoint(self, gen: int, step: Optional[int] = None, n_records: Optional[int] = None,
                   **extra: Any) -> None:
        """Save the optimizer (as it is now) and schedule-specific state as checkpoint number ``step`` (default
        ``gen``; the newest step wins on resume). ``n_records``: the ledger records the optimizer has been told
        (default: the whole ledger; fewer while a resume replays records already in it)."""
        told = len(self.ledger) if n_records is None else n_records
        save_checkpoint(self.run_dir / "checkpoints", gen if step is None else step, {
            "version": CHECKPOINT_VERSION, "config_sha": self.config_sha, "schedule": self.schedule, "gen": gen,
            "optimizer": self.optimizer.state_dict(), "n_records": told, "elapsed_s": self.elapsed(), **extra})
        self.emit("checkpoint", gen=gen, n_evals=len(self.ledger))


def worker_spec(cfg: RunConfig, space, run_dir: Path) -> WorkerSpec:
    return WorkerSpec(fitness=cfg.fitness, sources=space.sources(), base=cfg.base, seed=cfg.seed,
                      run_dir=str(run_dir), space=cfg.space, models=cfg.models)
