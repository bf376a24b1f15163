"""Run-loop side of ``resample: generation``: every generation answers its own seeded random item sample.

With one fixed sample for the whole run, the optimizer climbs that sample: the best told values are partly
luck on those items. Drawing a new sample per generation (shared by all of the generation's candidates)
keeps the values of one generation paired, which is all a rank-based optimizer such as CMA-ES compares, and
leaves nothing fixed to climb across generations. The sample of a generation depends only on the fitness's
seed (``fitness.seed``: the same samples for every optimizer seed) and the ledger prefix the schedule names
(generational: the records of the finished generations; steady state: the records at the last multiple of
``population``), so a resumed run hands every candidate the same items. The finalists step (``run/finalists.py``) then names the winner on items none of them answered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from evomerge.run.context import SearchContext


class GenerationSamples:
    """Hands each candidate the request for its generation's sample (same interface as ``OnlineFitness``)."""

    def __init__(self, ctx: "SearchContext", fcfg):
        self.items_per_task: int = fcfg.generation_sample
        self.seed: int = fcfg.seed
        self.every = ctx.cfg.optimizer.population

    def prepare(self) -> None:
        """Nothing to prepare: no bank, no seed rows."""

    def request(self, n_fit: int, n_rank: Optional[int] = None):
        from evomerge.fitness.online.request import FitnessRequest

        return FitnessRequest(pool_per_task=self.items_per_task, seed=sample_seed(self.seed, n_fit))

    def refit_point(self, n: int) -> int:
        """Steady state: the ledger prefix that names the sample when ``n`` records exist."""
        return n - n % self.every


def sample_seed(seed: int, n_records: int) -> int:
    """The sample's seed for the generation that starts after ``n_records`` ledger records."""
    return 1_000_003 * seed + n_records
