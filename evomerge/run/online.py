"""Run-loop side of the online item bank: seed it once, hand each candidate a FitnessRequest, keep the bank.

Used by both schedules through :class:`~evomerge.run.context.SearchContext` (``ctx.task``). The request for a
candidate depends only on the ledger prefix the schedule names (generational: the records of the finished
generations; steady state: the records at the last refit point for the bank, all records told so far for
the racing threshold), so a resumed run hands the same candidate the same request.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from evomerge.errors import EvomergeError

if TYPE_CHECKING:
    from evomerge.run.context import SearchContext

log = logging.getLogger(__name__)


class OnlineFitness:
    def __init__(self, ctx: "SearchContext", fcfg):
        from evomerge.fitness.online.bank import OnlineBank

        self.ctx = ctx
        self.fcfg = fcfg
        self.folder = Path(ctx.run_dir) / "item_bank"
        self.bank = OnlineBank(fcfg.tasks, fcfg.online, fcfg.fidelity, seed=fcfg.seed)
        self.every = fcfg.online.refit_every or ctx.cfg.optimizer.population
        self._saved_at: Optional[int] = None

    def prepare(self) -> None:
        """Load the seed rows of this run, or evaluate them (base + parents on the pool) and save them."""
        if self.bank.load_seed(self.folder):
            return
        from evomerge.fitness.online.request import FitnessRequest
        from evomerge.recipe import MergeRecipe, ModelSource

        if self.fcfg.online.start_from:
            from evomerge.fitness.irt.bank import ItemBank

            self.bank.start_from(ItemBank.load(self.fcfg.online.start_from))
        refs = list(dict.fromkeys(([self.ctx.cfg.base] if self.ctx.cfg.base else []) + self.ctx.space.sources()))
        todo = [r for r in refs if r not in self.bank.seed_rows]
        pool = self.bank.pool or None
        req = FitnessRequest(items=pool, pool_per_task=self.fcfg.online.pool_per_task, seed=self.fcfg.seed)
        tasks = [(ref, MergeRecipe(method="linear", models=[ModelSource(model=ref, params={"weight": 1.0})]), req)
                 for ref in todo]
        got = dict(self.ctx.executor.map(tasks)) if tasks else {}
        for ref in todo:  # in config order, whatever order they came back in
            res = got[ref]
            if res.status != "ok":
                raise EvomergeError(f"online item bank: seed model {ref} failed: {res.reason}")
            self.bank.fingerprint = self.bank.fingerprint or dict(res.fidelity.get("fingerprint") or {})
            self.bank.add_seed(ref, {t: {int(i): s for i, s in v.items()} for t, v in res.item_results.items()})
        self.bank.save_seed(self.folder)
        self.bank.load_seed(self.folder)  # one route to the seed rows (row order, floats) for fresh and resumed runs
        log.info("online item bank seeded: %d models x %d items", len(self.bank.seed_rows),
                 sum(map(len, self.bank.pool.values())))

    def request(self, n_fit: int, n_rank: int):
        records = self.ctx.ledger.records()
        req = self.bank.request(records[:n_fit], records[:n_rank])
        if self._saved_at != n_fit:  # the bank as of this refit, a file users keep (bank show / merge / reuse)
            self.bank.fit(records[:n_fit])[0].save(self.folder)
            self._saved_at = n_fit
        return req

    def refit_point(self, n: int) -> int:
        """Steady state: the ledger prefix the bank is fitted on when ``n`` records exist."""
        return n - n % self.every
