"""Steady-state schedule: tell each result as it arrives, ask a new point for the worker it freed.

The executor pulls candidates lazily (one per free worker), so the points are asked as late as possible and
see every result told before them; no worker waits for the slowest candidate of a "generation". A record's
``gen`` is ``index // population`` (for reports); ``index`` is the ask order.

Resume protocol. Each ledger record also holds ``n_asked``: how many points had been asked when it was told.
The checkpoint (written every ``population`` tells) holds the optimizer state, ``n_asked`` and the points in
flight. On resume the optimizer is restored, then the ledger records after the checkpoint are replayed in
ledger order: points are asked until ``n_asked`` matches the record (a seeded optimizer asks the same points
again; the ledger's point is checked) and the record is told. Points asked but never recorded were in flight
at the crash: they are evaluated first, then the run goes on. Nothing is lost or evaluated twice; with one
worker (in-process) the ledger is the uninterrupted run's.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any, Iterator, Optional

from evomerge.errors import EvomergeError
from evomerge.execution.base import CandidateResult
from evomerge.run.config import RunConfig
from evomerge.run.ledger import same_point
from evomerge.run.report import is_recommendation

if TYPE_CHECKING:
    from evomerge.run.context import SearchContext

log = logging.getLogger(__name__)


def evaluation_limit(cfg: RunConfig) -> Optional[int]:
    """Points the run may ask in all (None: only the wall-time budget stops it)."""
    b = cfg.budget
    caps = [b.evaluations] if b.evaluations is not None else []
    if b.generations is not None:
        caps.append(b.generations * cfg.optimizer.population)
    return min(caps) if caps else None


class _SteadyState:
    def __init__(self, ctx: "SearchContext"):
        self.ctx = ctx
        self.population = ctx.cfg.optimizer.population
        self.limit = evaluation_limit(ctx.cfg)
        self.n_asked: int = ctx.state.get("n_asked", 0)
        self.pending: dict[int, Any] = {int(i): p for i, p in ctx.state.get("in_flight", [])}  # asked, not told
        self.recipes: dict[int, Any] = {}
        self.replaying = False
        self.checkpointed_at: Optional[int] = ctx.optimizer.n_told if ctx.state else None  # n_told saved last

    @property
    def n_told(self) -> int:
        return self.ctx.optimizer.n_told

    def ask(self) -> int:
        point = self.ctx.optimizer.ask(1)[0]
        index = self.n_asked
        self.pending[index] = point
        self.n_asked += 1
        return index

    def tell(self, index: int, values: list[float]) -> None:
        self.ctx.optimizer.tell([self.pending.pop(index)], [values])
        if self.n_told % self.population == 0 and not self.replaying:
            self.checkpoint()

    def checkpoint(self) -> None:
        self.ctx.checkpoint(self.n_told // self.population, step=self.n_told, n_asked=self.n_asked,
                            in_flight=sorted(self.pending.items()))
        self.checkpointed_at = self.n_told

    def replay(self) -> None:
        """Tell the records written after the checkpoint, asking in between exactly as the run did."""
        records = self.ctx.ledger.records()[self.ctx.state.get("n_records", 0):]
        self.replaying = True  # a checkpoint must not be written before every record is told
        for r in records:
            if is_recommendation(r):  # evaluated after the budget, never told (run/recommend.py)
                continue
            if "n_asked" not in r:
                raise EvomergeError(f"ledger record {r['eval_id']} was not written by a steady-state run")
            while self.n_asked < r["n_asked"]:
                self.ask()
            if r["index"] not in self.pending or not same_point(self.pending[r["index"]], r["point"]):
                raise EvomergeError(f"resumed run asks a different point {r['index']} than the ledger holds; "
                                    "the optimizer is not deterministic")
            self.tell(r["index"], r["values"])
        self.replaying = False
        if records:
            log.info("resumed: %d records replayed after the checkpoint, %d candidates in flight re-run",
                     len(records), len(self.pending))

    def may_ask(self) -> bool:
        if self.limit is not None and self.n_asked >= self.limit:
            return False
        wall = self.ctx.cfg.budget.wall_time_s
        return wall is None or self.ctx.elapsed() < wall

    def record(self, index: int, recipe, res: CandidateResult) -> None:
        rec = self.ctx.append(index // self.population, index, self.pending[index], recipe, res,
                              n_asked=self.n_asked)
        self.tell(index, rec["values"])

    def tasks(self) -> Iterator[tuple[int, Any]]:
        """Candidates for the executor, pulled one per free worker: the ones in flight at a crash, then new."""
        rerun = collections.deque(sorted(self.pending))
        while True:
            if rerun:
                index = rerun.popleft()
            elif self.may_ask():
                index = self.ask()
            else:
                return
            try:
                self.recipes[index] = self.ctx.space.decode(self.pending[index])
            except EvomergeError as exc:
                self.record(index, None, CandidateResult.failed(f"decode: {exc}"))
                continue
            n = len(self.ctx.ledger)
            requests = self.ctx.item_requests
            yield self.ctx.task(index, self.recipes[index], requests.refit_point(n) if requests else n, n)

    def run(self) -> int:
        self.replay()
        if self.pending or self.may_ask():
            for index, res in self.ctx.executor.map(self.tasks()):
                self.record(index, self.recipes.pop(index), res)
        if self.checkpointed_at != self.n_told:
            self.checkpoint()
        return self.n_told // self.population


def run_steady_state(ctx: "SearchContext") -> int:
    """Ask/tell one candidate at a time until the budget is spent; returns the number of full populations told."""
    return _SteadyState(ctx).run()
