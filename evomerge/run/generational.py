"""Generational schedule: ask a population, evaluate it (results stream in any order), tell it whole.

Resume protocol. A checkpoint is written after each generation's ``tell`` and holds the optimizer state as it
was *before* the next ``ask``. On resume the optimizer is restored and asked again, which (seeded, own RNG)
gives the same points; candidates of that generation already in the ledger are taken from it instead of being
evaluated again, the rest are evaluated and appended. So no completed evaluation is lost or redone, and the
ledger ends the same as an uninterrupted run's (up to timings).

Records are appended in proposal order (a result that comes back before an earlier index waits in memory),
so the same seed writes the same ledger with any executor and any number of workers (up to the ``timings``
and ``time`` fields); a crash loses at most the results that were waiting, and they are evaluated again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

from evomerge.errors import EvomergeError
from evomerge.execution.base import CandidateResult
from evomerge.run.config import RunConfig
from evomerge.run.ledger import same_point
from evomerge.run.report import is_recommendation

if TYPE_CHECKING:
    from evomerge.run.context import SearchContext

log = logging.getLogger(__name__)


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


def _write_ready(ctx: "SearchContext", gen: int, points: list, slots: list, done: dict) -> None:
    """Append finished results in proposal (index) order, whatever order the executor returned them in."""
    for i in range(len(points)):
        if slots[i] is None:
            if i not in done:
                return
            recipe, res = done.pop(i)
            slots[i] = ctx.append(gen, i, points[i], recipe, res)


def run_generational(ctx: "SearchContext") -> int:
    """Run generations until the budget is spent; returns the number of generations told."""
    gen, n_checkpointed = ctx.state.get("gen", 0), ctx.state.get("n_records", 0)
    replay = {}
    for r in ctx.ledger.records()[n_checkpointed:]:
        if is_recommendation(r):  # evaluated after the budget, never told (run/recommend.py)
            continue
        if r["gen"] != gen:
            raise EvomergeError(f"ledger record {r['eval_id']} (generation {r['gen']}) is ahead of the checkpoint "
                                f"(generation {gen}); cannot resume consistently")
        replay[r["index"]] = r
    if replay:
        log.info("resuming generation %d with %d of its candidates already in the ledger", gen, len(replay))
    # evaluations of *completed* generations decide the next size (replayed records must not shrink it)
    while (n := _budget_left(ctx.cfg, gen, n_checkpointed, ctx.elapsed())) is not None:
        points = ctx.optimizer.ask(n)
        slots: list[Optional[dict[str, Any]]] = [None] * n
        done: dict[int, tuple[Any, CandidateResult]] = {}  # evaluated, waiting for the earlier indices
        tasks = []
        for i, point in enumerate(points):
            if i in replay:
                if not same_point(replay[i]["point"], point):
                    raise EvomergeError(f"resumed generation {gen} asks a different point {i} than the ledger "
                                        "holds; the optimizer is not deterministic")
                slots[i] = replay.pop(i)
                continue
            try:
                tasks.append(ctx.task(i, ctx.space.decode(point), n_checkpointed))
            except EvomergeError as exc:
                done[i] = (None, CandidateResult.failed(f"decode: {exc}"))
        recipes = {t[0]: t[1] for t in tasks}
        ctx.emit("generation", gen=gen, size=n, replayed=n - len(tasks))
        _write_ready(ctx, gen, points, slots, done)
        if tasks:
            for i, res in ctx.executor.map(tasks):
                done[i] = (recipes[i], res)
                _write_ready(ctx, gen, points, slots, done)
        if replay:
            raise EvomergeError(f"ledger holds candidates of generation {gen} that the optimizer did not ask")
        ctx.optimizer.tell(points, [s["values"] for s in slots])
        gen += 1
        n_checkpointed = len(ctx.ledger)
        ctx.checkpoint(gen)
    return gen
