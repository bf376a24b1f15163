"""The online item bank: a 2PL model refitted from every answer a search has collected.

Rows are the seed models (base, parents, or a kept bank's population), which answered the whole pool, and
the search's candidates (ledger records), which answered a few adaptively chosen pool items each: a sparse
response matrix, fitted with the missing answers masked (``fit_mirt_2pl``). A fit is a pure function of the
seed rows and the ledger prefix it is given (seeded start, deterministic L-BFGS), so a resumed run refits to
the same bank and asks the same items. ``to_item_bank`` gives the ordinary :class:`ItemBank` users keep.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.fitness.irt.bank import ItemBank
from evomerge.fitness.irt.fit import fit_mirt_2pl
from evomerge.fitness.online.config import FidelityConfig, OnlineBankConfig
from evomerge.fitness.online.request import BankView, FitnessRequest, Scores
from evomerge.fsutil import atomic_write

log = logging.getLogger(__name__)
SEED_FILE = "online_seed.json"


def record_scores(rec: Mapping[str, Any]) -> Scores:
    """A ledger record's answers as ``{task: {item: score}}`` (ids are strings in the JSON)."""
    return {t: {int(i): float(s) for i, s in v.items()} for t, v in (rec.get("item_results") or {}).items()}


def record_value(rec: Mapping[str, Any], tasks: Sequence[str]) -> Optional[float]:
    """The mean over tasks of a record's estimates (None for a failed record)."""
    if rec.get("status") != "ok":
        return None
    m = rec.get("metrics") or {}
    vals = [m[t] for t in tasks if t in m]
    return float(np.mean(vals)) if len(vals) == len(tasks) else None


class OnlineBank:
    """Seed rows + pool, and fits over a ledger prefix (cached by prefix length)."""

    def __init__(self, tasks: Sequence[str], cfg: OnlineBankConfig, fidelity: FidelityConfig, seed: int = 0):
        self.tasks = list(tasks)
        self.cfg = cfg
        self.fidelity = fidelity
        self.seed = seed
        self.pool: dict[str, list[int]] = {}
        self.seed_rows: dict[str, Scores] = {}
        self.fingerprint: dict[str, Any] = {}
        self._fits: dict[int, tuple[ItemBank, BankView]] = {}

    # --- seed rows -------------------------------------------------------------------------------------
    def add_seed(self, name: str, scores: Mapping[str, Mapping[int, float]]) -> None:
        if not self.pool:
            self.pool = {t: sorted(int(i) for i in scores[t]) for t in self.tasks}
        self.seed_rows[name] = {t: {int(i): float(s) for i, s in scores.get(t, {}).items()} for t in self.tasks}
        self._fits.clear()

    def start_from(self, bank: ItemBank) -> None:
        """Take a kept bank's items as the pool and its population's answers as seed rows."""
        bank.check_tasks(self.tasks)
        self.pool = {t: list(bank.item_ids[t]) for t in self.tasks}
        self.fingerprint = dict(bank.fingerprint)
        for r, name in enumerate(bank.models):
            row = {}
            for t in self.tasks:
                vals = bank.responses[r, bank.task_slice(t)]
                row[t] = {int(i): float(v) for i, v in zip(bank.item_ids[t], vals) if not np.isnan(v)}
            self.seed_rows[name] = row
        self._fits.clear()

    def save_seed(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / SEED_FILE, json.dumps({
            "pool": self.pool, "fingerprint": self.fingerprint,
            "rows": {m: {t: {str(i): s for i, s in v.items()} for t, v in row.items()}
                     for m, row in self.seed_rows.items()}}, sort_keys=True))

    def load_seed(self, folder: Path) -> bool:
        path = folder / SEED_FILE
        if not path.exists():
            return False
        data = json.loads(path.read_text())
        self.pool = {t: [int(i) for i in v] for t, v in data["pool"].items()}
        self.fingerprint = data.get("fingerprint", {})
        self.seed_rows = {m: {t: {int(i): float(s) for i, s in v.items()} for t, v in row.items()}
                          for m, row in data["rows"].items()}
        self._fits.clear()
        return True

    # --- fits ------------------------------------------------------------------------------------------
    def matrix(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[str], np.ndarray]:
        """Row names and the (rows, pool items) response matrix, NaN where a row did not answer."""
        cols = {(t, i): k for k, (t, i) in enumerate((t, i) for t in self.tasks for i in self.pool[t])}
        rows: list[tuple[str, Scores]] = list(self.seed_rows.items())
        cand = [(f"eval-{r['eval_id']}", record_scores(r)) for r in records if r.get("status") == "ok"]
        rows += [c for c in cand if any(c[1].values())][-self.cfg.max_rows:]
        mat = np.full((len(rows), len(cols)), np.nan)
        for r, (_, sc) in enumerate(rows):
            for t, v in sc.items():
                for i, s in v.items():
                    k = cols.get((t, i))
                    if k is not None:
                        mat[r, k] = s
        return [n for n, _ in rows], mat

    def fit(self, records: Sequence[Mapping[str, Any]]) -> tuple[ItemBank, BankView]:
        """The bank fitted on the seed rows and ``records`` (a ledger prefix; cached by its length)."""
        n = len(records)
        if n not in self._fits:
            if len(self.seed_rows) + n < 2:
                raise EvomergeError("the online bank needs at least two seed models (base and parents)")
            names, mat = self.matrix(records)
            settings = {"dim": self.cfg.dim or min(len(self.tasks), 5), "seed": self.seed}
            f = fit_mirt_2pl(mat, **settings)
            bank = ItemBank(tasks=self.tasks, item_ids=self.pool, a=f.a, b=f.b, models=names, responses=mat,
                            theta=f.theta, fingerprint=self.fingerprint, endpoints=list(self.seed_rows),
                            fit_settings=settings)
            mean, cov = bank.prior()
            view = BankView(tasks=self.tasks, item_ids=self.pool, a=f.a, b=f.b, mean=mean, cov=cov, rows=n)
            self._fits = {n: (bank, view)}  # one fit kept: prefixes only grow
            log.info("online bank refitted: %d rows (%d seed), %d items, %.0f%% answered", len(names),
                     len(self.seed_rows), mat.shape[1], 100 * np.mean(~np.isnan(mat)))
        return self._fits[n]

    def threshold(self, records: Sequence[Mapping[str, Any]]) -> float:
        """The ``top_k``-th best value so far: seed models' pool accuracies and the records' estimates."""
        vals = [float(np.mean([np.mean(list(row[t].values())) for t in self.tasks]))
                for row in self.seed_rows.values() if all(row.get(t) for t in self.tasks)]
        vals += [v for v in (record_value(r, self.tasks) for r in records) if v is not None]
        vals.sort(reverse=True)
        return vals[min(self.fidelity.top_k, len(vals)) - 1] if vals else float("-inf")

    def request(self, fit_records: Sequence[Mapping[str, Any]], rank_records: Sequence[Mapping[str, Any]]
                ) -> FitnessRequest:
        _, view = self.fit(fit_records)
        f = self.fidelity
        return FitnessRequest(bank=view, levels=list(f.levels), full_pool=f.full_pool,
                              threshold=self.threshold(rank_records), z=f.z)
