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

import logging
import time
from pathlib import Path
from typing import Any, Optional

from evomerge.errors import EvomergeError
from evomerge.run.checkpoint import load_latest_checkpoint
from evomerge.run.config import RunConfig, fitness_config, resolve_schedule, run_config_from_dict
from evomerge.run.context import CHECKPOINT_VERSION, Progress, SearchContext
from evomerge.run.ledger import Ledger
from evomerge.run.preflight import preflight
from evomerge.run.run_dir import default_run_dir, identity, load_run_dir_config, pin_hub_models, prepare_run_dir, sha

log = logging.getLogger(__name__)


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
                        config_sha=sha(identity(cfg)))
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
    ctx.tracking = _start_tracking(ctx, resumed=ckpt is not None)
    status = "failed"
    try:
        _start_item_requests(ctx)
        gen = (run_steady_state if schedule == "steady_state" else run_generational)(ctx)
        evaluate_recommendation(ctx, gen)
        score_finalists(ctx)
        ctx.tracking.finish()
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        ctx.close()
        ctx.tracking.close(status)
    ctx.emit("done", gen=gen, n_evals=len(ctx.ledger))


def _start_tracking(ctx: SearchContext, resumed: bool):
    """The optuna journal mirror and the configured trackers, handed the ledger so far."""
    from evomerge.tracking import TrackedRun, Tracking

    run = TrackedRun(name=ctx.cfg.name, run_dir=ctx.run_dir, config=ctx.cfg.model_dump(mode="json"),
                     objectives=[o.metric for o in ctx.cfg.objectives], directions=ctx.cfg.directions,
                     params=ctx.space.names(), resumed=resumed)
    return Tracking(run, ctx.space, ctx.cfg.tracking, ctx.ledger.records())


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


