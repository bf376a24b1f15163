"""The search loop: ask -> decode -> executor (merge -> evaluate -> estimate) -> tell -> ledger -> checkpoint.

Resume protocol (kill -9 safe). A checkpoint is written after each generation's ``tell`` and holds the
optimizer state as it was *before* the next ``ask``. On resume the optimizer is restored and asked again,
which (seeded, own RNG) gives the same points; candidates of that generation already in the ledger are
taken from it instead of being evaluated again, the rest are evaluated and appended. So no completed
evaluation is lost or redone, and the ledger ends the same as an uninterrupted run's (up to timings).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional


from evomerge.errors import ConfigError, EvomergeError
from evomerge.execution.base import EXECUTORS, CandidateResult, WorkerSpec
from evomerge.run.checkpoint import load_latest_checkpoint, save_checkpoint
from evomerge.run.config import RunConfig, run_config_from_dict, validate_run
from evomerge.run.ledger import Ledger
from evomerge.yaml_io import parse_yaml

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], None]
CHECKPOINT_VERSION = 1


def default_run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else Path("runs") / cfg.name


def _identity(cfg: RunConfig) -> dict[str, Any]:
    """The parts of a config that define *which* run it is (budget and run_dir may change on resume)."""
    d = cfg.model_dump(mode="json")
    d.pop("budget", None)
    d.pop("run_dir", None)
    d.pop("description", None)
    return d


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def load_run_dir_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise EvomergeError(f"{run_dir} is not a run directory (no config.yaml)")
    return run_config_from_dict(parse_yaml(path.read_text(), f"run config YAML {path}"))


def prepare_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    """Create the run dir with the resolved config, or check an existing one holds this same run."""
    path = run_dir / "config.yaml"
    if path.exists():
        old = load_run_dir_config(run_dir)
        a, b = _identity(old), _identity(cfg)
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ConfigError(f"run dir {run_dir} already holds a different run (differs in: {', '.join(diff)}); "
                              "pick another --run-dir or use 'evomerge resume'")
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".config.yaml.tmp"
    tmp.write_text(cfg.to_yaml())
    tmp.replace(path)


def run_search(cfg: RunConfig, run_dir: Optional[Path] = None, progress: Optional[Progress] = None) -> Path:
    """Validate, then run (or continue) the search into ``run_dir``; returns the run dir."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    space, optimizer, _ = validate_run(cfg)  # every config error surfaces here, before any compute
    prepare_run_dir(cfg, run_dir)
    _search(cfg, run_dir, space, optimizer, progress)
    return run_dir


def resume(run_dir: Path, progress: Optional[Progress] = None, budget: Optional[dict[str, Any]] = None) -> Path:
    """Continue the run in ``run_dir`` from its latest intact checkpoint and ledger (optionally a new budget)."""
    run_dir = Path(run_dir)
    cfg = load_run_dir_config(run_dir)
    if budget:
        cfg = run_config_from_dict({**cfg.model_dump(mode="json"), "budget": {**cfg.budget.model_dump(), **budget}})
    space, optimizer, _ = validate_run(cfg)
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


def _budget_left(cfg: RunConfig, gen: int, n_evals: int, elapsed: float) -> Optional[int]:
    """How many evaluations the next generation may use (None: the budget is spent)."""
    b = cfg.budget
    if b.generations is not None and gen >= b.generations:
        return None
    if b.wall_time_s is not None and elapsed >= b.wall_time_s:
        return None
    n = cfg.optimizer.population
    if b.evaluations is not None:
        n = min(n, b.evaluations - n_evals)
    return n if n > 0 else None


def _search(cfg: RunConfig, run_dir: Path, space, optimizer, progress: Optional[Progress]) -> None:
    ledger = Ledger(run_dir / "ledger.jsonl")
    ckpt = load_latest_checkpoint(run_dir / "checkpoints")
    config_sha = _sha(_identity(cfg))
    gen, elapsed, n_checkpointed = 0, 0.0, 0
    if ckpt is not None:
        _, state = ckpt
        if state.get("version") != CHECKPOINT_VERSION or state.get("config_sha") != config_sha:
            raise EvomergeError(f"checkpoint in {run_dir} belongs to another run or version")
        optimizer.load_state_dict(state["optimizer"])
        gen, elapsed, n_checkpointed = state["gen"], state["elapsed_s"], state["n_records"]
    records = ledger.records()
    if len(records) < n_checkpointed:
        raise EvomergeError(f"ledger of {run_dir} has {len(records)} records but the checkpoint counts "
                            f"{n_checkpointed}; the ledger was truncated")
    replay = {}
    for r in records[n_checkpointed:]:
        if r["gen"] != gen:
            raise EvomergeError(f"ledger record {r['eval_id']} (generation {r['gen']}) is ahead of the checkpoint "
                                f"(generation {gen}); cannot resume consistently")
        replay[r["index"]] = r
    if replay:
        log.info("resuming generation %d with %d of its candidates already in the ledger", gen, len(replay))

    spec = worker_spec(cfg, space, run_dir)
    executor = None  # started on the first generation that runs (a finished run resumes without loading models)
    t_start = time.monotonic() - elapsed
    try:
        # evaluations of *completed* generations decide the next size (replayed records must not shrink it)
        while (n := _budget_left(cfg, gen, n_checkpointed, time.monotonic() - t_start)) is not None:
            if executor is None:
                executor = EXECUTORS.get(cfg.executor.name)(spec, run_dir=run_dir, **cfg.executor.options)
            points = optimizer.ask(n)
            slots: list[Optional[dict[str, Any]]] = [None] * n
            tasks = []
            for i, point in enumerate(points):
                if i in replay:
                    if replay[i]["point"] != json.loads(json.dumps(point)):
                        raise EvomergeError(f"resumed generation {gen} asks a different point {i} than the ledger "
                                            "holds; the optimizer is not deterministic")
                    slots[i] = replay.pop(i)
                    continue
                try:
                    tasks.append((i, space.decode(point)))
                except EvomergeError as exc:
                    slots[i] = _append(cfg, ledger, gen, i, point, None, CandidateResult.failed(f"decode: {exc}"))
            recipes = dict(tasks)
            if progress:
                progress({"event": "generation", "gen": gen, "size": n, "replayed": n - len(tasks)})
            for i, res in executor.map(tasks):
                slots[i] = _append(cfg, ledger, gen, i, points[i], recipes[i], res)
                if progress:
                    progress({"event": "candidate", "gen": gen, "record": slots[i], "n_evals": len(ledger)})
            if replay:
                raise EvomergeError(f"ledger holds candidates of generation {gen} that the optimizer did not ask")
            optimizer.tell(points, [s["values"] for s in slots])
            gen += 1
            n_checkpointed = len(ledger)
            save_checkpoint(run_dir / "checkpoints", gen, {
                "version": CHECKPOINT_VERSION, "config_sha": config_sha, "gen": gen,
                "optimizer": optimizer.state_dict(), "n_records": len(ledger),
                "elapsed_s": time.monotonic() - t_start})
            if progress:
                progress({"event": "checkpoint", "gen": gen, "n_evals": len(ledger)})
    finally:
        if executor is not None:
            executor.close()
    if progress:
        progress({"event": "done", "gen": gen, "n_evals": len(ledger)})


def worker_spec(cfg: RunConfig, space, run_dir: Path) -> WorkerSpec:
    return WorkerSpec(fitness=cfg.fitness, sources=space.sources(), base=cfg.base, seed=cfg.seed,
                      run_dir=str(run_dir))


def _append(cfg, ledger: Ledger, gen: int, index: int, point, recipe, res: CandidateResult) -> dict[str, Any]:
    values, res = _values(cfg, res)
    rec = {
        "eval_id": len(ledger), "gen": gen, "index": index, "point": point,
        "recipe": recipe.model_dump(mode="json") if recipe is not None else None,
        "status": res.status, "reason": res.reason, "values": values, "metrics": res.objectives,
        "item_results": res.item_results, "timings": res.timings, "time": time.time(),
    }
    return ledger.append(rec)
