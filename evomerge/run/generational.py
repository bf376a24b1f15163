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
    gen, n_told = ctx.state.get("gen", 0), ctx.state.get("n_records", 0)
    replay = _ledger_ahead(ctx, gen, n_told)
    while (n := _budget_left(ctx.cfg, gen, n_told, ctx.elapsed())) is not None:
        points = ctx.optimizer.ask(n)
        slots: list[Optional[dict[str, Any]]] = [None] * n
        done: dict[int, tuple[Any, CandidateResult]] = {}  # evaluated, waiting for the earlier indices
        tasks = []
        for i, point in enumerate(points):
            if (gen, i) in replay:
                if not same_point(replay[gen, i]["point"], point):
                    raise EvomergeError(f"resumed generation {gen} asks a different point {i} than the ledger "
                                        "holds; the optimizer is not deterministic")
                slots[i] = replay.pop((gen, i))
                continue
            try:
                tasks.append(ctx.task(i, ctx.space.decode(point), n_told))
            except EvomergeError as exc:
                done[i] = (None, CandidateResult.failed(f"decode: {exc}"))
        recipes = {t[0]: t[1] for t in tasks}
        ctx.emit("generation", gen=gen, size=n, replayed=n - len(tasks))
        _write_ready(ctx, gen, points, slots, done)
        if tasks:
            for i, res in ctx.executor.map(tasks):
                done[i] = (recipes[i], res)
                _write_ready(ctx, gen, points, slots, done)
        if any(g == gen for g, _ in replay):
            raise EvomergeError(f"ledger holds candidates of generation {gen} that the optimizer did not ask")
        ctx.optimizer.tell(points, [s["values"] for s in slots])
        gen += 1
        n_told += n
        # records already in the ledger beyond this generation (a resume from an older checkpoint) are not its
        ctx.checkpoint(gen, n_records=n_told)
    if replay:
        raise EvomergeError(f"ledger holds {len(replay)} candidate(s) beyond the budget; resume with the budget "
                            "the run had")
    return gen


def _ledger_ahead(ctx: "SearchContext", gen: int, n_checkpointed: int) -> dict[tuple[int, int], dict[str, Any]]:
    """Records after the checkpoint, by (generation, index): the generations the optimizer will ask again and
    take from the ledger instead of evaluating (several when the checkpoint is an older one: the latest was
    damaged, so the run fell back)."""
    replay: dict[tuple[int, int], dict[str, Any]] = {}
    for r in ctx.ledger.records()[n_checkpointed:]:
        if is_recommendation(r):  # evaluated after the budget, never told (run/recommend.py)
            continue
        if r["gen"] < gen:
            raise EvomergeError(f"ledger record {r['eval_id']} (generation {r['gen']}) is behind the checkpoint "
                                f"(generation {gen}); cannot resume consistently")
        replay[r["gen"], r["index"]] = r
    if replay:
        log.info("resuming at generation %d with %d candidate(s) of generations %s already in the ledger", gen,
                 len(replay), sorted({g for g, _ in replay}))
    return replay
