"""``adaptive``: computerised adaptive testing on the item bank, then a p-IRT estimate.

A candidate answers the anchors first (round 1), then ``rounds - 1`` more small rounds. Before each round the
ability is fitted (MAP, population prior) on every answer so far and, per task, the items are chosen greedily
that shrink the posterior variance of that task's predicted accuracy most (Laplace approximation: adding item
j with weight w_j = p_j (1 - p_j) lowers Var(acc_t) = g' S g by w_j (g' S a_j)^2 / (1 + w_j a_j' S a_j), with
g = d acc_t / d theta). Static anchors must cover every ability the population spans; adaptive items sit where
this candidate's ability is uncertain, so the same number of items says more. The estimate is p-IRT: the
answers seen plus the predicted probability of every item not seen, averaged over the task's full split.

Params: ``rounds`` (default 4) and ``first_fraction`` (share of the items asked in round 1, default 0.4); the
total per task is the fitness's ``items_per_task``. Selection is deterministic in the answers, so a rerun of a
candidate asks the same items.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.fitness.estimators.base import ESTIMATORS, Answers, Estimator


def round_sizes(total: int, first: int, rounds: int) -> list[int]:
    """Items per task in each round: ``first``, then the rest split as evenly as possible."""
    rest = total - first
    k = max(1, rounds - 1) if rest > 0 else 0
    return [first] + [rest // k + (1 if r < rest % k else 0) for r in range(k)]


@ESTIMATORS.register("adaptive")
class AdaptiveIRTEstimator(Estimator):
    @classmethod
    def first_round(cls, items_per_task: int, params: dict[str, Any]) -> int:
        rounds = int(params.get("rounds", 4))
        frac = float(params.get("first_fraction", 0.4))
        if rounds < 1 or not 0 < frac <= 1:
            raise EvomergeError(f"adaptive estimator: rounds must be >= 1 and first_fraction in (0, 1], got "
                                f"{rounds} and {frac}")
        return items_per_task if rounds == 1 else max(1, min(items_per_task, round(items_per_task * frac)))

    def __init__(self, bank, anchors, **params):
        super().__init__(bank, anchors, **params)
        first = {t: len(v) for t, v in anchors.items.items()}
        self.total = int(params.get("items_per_task") or max(first.values()))
        rounds = int(params.get("rounds", 4))
        self.boundaries = {t: np.cumsum(round_sizes(max(self.total, n), n, rounds)).tolist() for t, n in first.items()}
        self.mean, self.cov = bank.prior()
        self.cov = self.cov * float(params.get("prior_scale", 1.0)) ** 2

    def _answered(self, answers: Answers) -> tuple[np.ndarray, np.ndarray]:
        """Bank columns answered and the scores, over every task of the bank."""
        cols, ys = [], []
        for t in self.bank.tasks:
            got = answers.get(t)
            if not got:
                raise EvomergeError(f"no answers for task {t!r}")
            ids = sorted(got)
            cols.append(self.bank.columns(t, ids))
            ys.append(np.array([float(got[i]) for i in ids]))
        return np.concatenate(cols), np.concatenate(ys)

    def _theta(self, cols: np.ndarray, y: np.ndarray) -> np.ndarray:
        from evomerge.fitness.irt.ability import fit_latent  # scipy: not at import time

        return fit_latent(y, self.bank.a[cols], self.bank.b[cols], self.mean, self.cov,
                          method=self.params.get("ability", "map"))

    def next_items(self, answers: Answers) -> Optional[dict[str, list[int]]]:
        want = {}
        for t in self.bank.tasks:
            done = len(answers.get(t, {}))
            nxt = next((b for b in self.boundaries[t] if b > done), None)
            if nxt is not None:
                want[t] = nxt - done
        if not want:
            return None
        cols, y = self._answered(answers)
        theta = self._theta(cols, y)
        a = self.bank.a
        p = self.bank.predict(theta)
        w = p * (1 - p)
        precision = np.linalg.inv(self.cov) + (a[cols] * w[cols, None]).T @ a[cols]
        seen = np.zeros(self.bank.n_items, dtype=bool)
        seen[cols] = True
        out = {}
        for t, k in want.items():
            sl = self.bank.task_slice(t)
            g = (a[sl] * w[sl, None]).mean(axis=0)  # d accuracy_t / d theta
            picks = []
            for _ in range(k):
                s_a = np.linalg.solve(precision, a[sl].T).T  # S a_j for the task's items
                gain = w[sl] * (s_a @ g) ** 2 / (1 + w[sl] * np.einsum("nd,nd->n", s_a, a[sl]))
                gain[seen[sl]] = -np.inf
                j = int(np.argmax(gain))
                if not np.isfinite(gain[j]):
                    break  # every item of the task is answered
                seen[sl.start + j] = True
                precision = precision + w[sl.start + j] * np.outer(a[sl.start + j], a[sl.start + j])
                picks.append(self.bank.item_ids[t][j])
            if picks:
                out[t] = picks
        return out or None

    def estimate(self, answers: Answers) -> dict[str, float]:
        cols, y = self._answered(answers)
        full = self.bank.predict(self._theta(cols, y))
        full[cols] = y
        return {t: float(full[self.bank.task_slice(t)].mean()) for t in self.bank.tasks}
