"""Finalists: the search's best candidates re-scored on fresh search items before a winner is named.

A fitness that tells the optimizer values from part of the search split (a fixed item sample, the online
bank's pool, IRT estimates from a few items) is climbed: among 64 candidates the best told values are partly
luck on those items. After the budget is spent, the ``finalists.top`` candidates by told value answer
``finalists.items_per_task`` search items per task that none of them has answered (the same items for all,
drawn with the run's seed), and each finalist's value per task pools its told value (weighted by the items
it answered for the task) with its accuracy on the fresh items; the objective's value is that (its mean over
tasks for ``mean``). The optimizer's recommendation (``run/recommend.py``), when the run evaluated one,
joins them whatever its told value. :meth:`RunReport.best` is then the best finalist. Results go to
``RUN_DIR/finalists.json`` (atomic, plain JSON); a run killed before it is written redoes the step with the
same items.

Skipped (and the best told value stays the winner) when ``top`` is 0, the worker evaluates the whole split
(``Worker.partial_split``), or the run has several objectives or one that is not a task's score or ``mean``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from evomerge.fsutil import atomic_write
from evomerge.run.report import FINALISTS_FILE, RunReport, load_finalists

if TYPE_CHECKING:
    from evomerge.run.context import SearchContext

log = logging.getLogger(__name__)


def pooled(told: dict[str, float], answered: dict[str, int], fresh: dict[str, float], n_fresh: dict[str, int]
           ) -> dict[str, float]:
    """Per task: the told value and the fresh accuracy, weighted by their item counts; plus their ``mean``."""
    out = {t: (answered.get(t, 0) * told[t] + n_fresh[t] * fresh[t]) / (answered.get(t, 0) + n_fresh[t])
           if answered.get(t, 0) + n_fresh[t] else told[t] for t in fresh}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def applies(ctx: "SearchContext") -> Optional[str]:
    """Why finalists are skipped for this run (None: they are scored)."""
    from evomerge.run.config import fitness_config

    cfg = ctx.cfg
    if cfg.finalists.top == 0:
        return "finalists.top is 0"
    if len(cfg.objectives) != 1:
        return "several objectives: the Pareto front is the result"
    if cfg.objectives[0].metric not in ["mean", *getattr(cfg.fitness, "tasks", [])]:
        return f"objective {cfg.objectives[0].metric!r} is not a task's score or their mean"
    worker, fitness = fitness_config(cfg)
    if not worker.partial_split(fitness):
        return "the fitness evaluates the whole search split"
    return None


def settings(ctx: "SearchContext", top: list[dict[str, Any]]) -> dict[str, Any]:
    """What a saved result must match to be reused: the config's settings and the finalists' ids."""
    return {"top": ctx.cfg.finalists.top, "items_per_task": ctx.cfg.finalists.items_per_task,
            "seed": ctx.cfg.seed, "candidates": [r["eval_id"] for r in top]}


def score_finalists(ctx: "SearchContext") -> Optional[dict[str, Any]]:
    """Re-score the run's top candidates on fresh items (once per settings); returns what was saved."""
    from evomerge.fitness.online.request import FitnessRequest
    from evomerge.recipe import recipe_from_dict

    why = applies(ctx)
    if why:
        log.info("finalists skipped: %s", why)
        return None
    report = RunReport(ctx.run_dir, ctx.cfg, ctx.ledger.records(), 0)
    metric = ctx.cfg.objectives[0].metric
    task_names = list(ctx.cfg.fitness.tasks)  # a task with no fresh item left keeps its told value
    top = report.finalist_candidates(ctx.cfg.finalists.top)
    if len(top) < 2:
        return None
    want = settings(ctx, top)
    saved = load_finalists(ctx.run_dir)
    if saved is not None and saved.get("settings") == want:
        return saved
    answered = {}
    for r in top:
        for t, v in r["item_results"].items():
            answered.setdefault(t, set()).update(int(i) for i in v)
    req = FitnessRequest(pool_per_task=ctx.cfg.finalists.items_per_task, seed=ctx.cfg.seed,
                         exclude={t: sorted(v) for t, v in answered.items()})
    jobs = [(r["eval_id"], recipe_from_dict(r["recipe"]), req) for r in top]
    log.info("scoring %d finalists on %d fresh items per task", len(top), ctx.cfg.finalists.items_per_task)
    ctx.emit("finalists", n=len(top))
    by_id = {r["eval_id"]: r for r in top}
    rows = {}
    for eid, res in ctx.executor.map(jobs):
        rec = by_id[eid]
        if res.status != "ok" or not res.item_results:
            rows[str(eid)] = {"status": "failed", "reason": res.reason or "no fresh items left"}
            continue
        n_fresh = {t: len(res.item_results.get(t, {})) for t in task_names}
        told = {t: float(rec["metrics"][t]) for t in task_names}
        fresh = {t: float(res.objectives[t]) if n_fresh[t] else told[t] for t in task_names}
        values = pooled(told, {t: len(rec["item_results"].get(t, {})) for t in task_names}, fresh, n_fresh)
        rows[str(eid)] = {"status": "ok", "told": told, "fresh": fresh, "fresh_items": n_fresh,
                          "metrics": values, "value": values[metric], "item_results": res.item_results}
    out = {"settings": want, "metric": metric, "finalists": rows}
    atomic_write(Path(ctx.run_dir) / FINALISTS_FILE, json.dumps(out, indent=1, sort_keys=True))
    return out
