"""The optimizer's recommendation: after the budget, its own estimate of the best point, evaluated once.

With a fitness on part of the search split, the best told values are partly luck on their items. The
optimizer's estimate of the optimum (CMA-ES: the mean of its search distribution, which recombines the best
points of every generation; nevergrad: its recommendation) is exposed to no single lucky value. It is
evaluated like a candidate of the generation after the last (the same item request a next generation would
get), recorded in the ledger with origin ``recommended`` and not told to the optimizer. The finalists step
(``run/finalists.py``) then scores it beside the best told values on fresh items, and the best of them wins.

Skipped when the finalists step is (``finalists.top: 0``, several objectives, a whole-split fitness: see
``finalists.applies``), when ``finalists.recommended`` is false, when the optimizer has no recommendation
(optuna, random), and when the point is already a candidate (nevergrad recommends its best candidate as a
rule). Resume: a run killed before the finalists are saved asks its
restored optimizer again (the same point) and reuses the record if it was written. The schedules skip these
records when they replay a generation. A finished run extended with a larger budget keeps its recommendation
in the ledger, between the old candidates and the new, and gets a new one at its new end.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

from evomerge.errors import EvomergeError
from evomerge.execution.base import CandidateResult
from evomerge.run.ledger import same_point
from evomerge.run.report import RECOMMENDED, is_recommendation

if TYPE_CHECKING:
    from evomerge.run.context import SearchContext

log = logging.getLogger(__name__)
def evaluate_recommendation(ctx: "SearchContext", gen: int) -> Optional[dict[str, Any]]:
    """Evaluate and record the optimizer's recommendation (once); returns its ledger record, or None."""
    from evomerge.run.finalists import applies

    if not ctx.cfg.finalists.recommended or applies(ctx) is not None:
        return None
    point = ctx.optimizer.recommend()
    if point is None:
        return None
    records = ctx.ledger.records()
    for r in records:
        if same_point(r["point"], point):
            return r if is_recommendation(r) else None
    n = len(records)
    try:
        recipe = ctx.space.decode(point)
    except EvomergeError as exc:
        return ctx.append(gen, 0, point, None, CandidateResult.failed(f"decode: {exc}"), origin=RECOMMENDED)
    log.info("evaluating the optimizer's recommendation")
    ctx.emit("recommendation")
    ((_, res),) = list(ctx.executor.map([ctx.task(0, recipe, n, n)]))
    return ctx.append(gen, 0, point, recipe, res, origin=RECOMMENDED)
