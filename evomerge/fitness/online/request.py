"""What the driver asks a worker for one candidate under the online bank, and how the worker answers it.

The driver owns the online bank (refitted from the ledger) and the racing threshold; a worker gets both in a
:class:`FitnessRequest` with each candidate and runs :func:`answer_request` against its own evaluator, so a
candidate is merged once and answers all its items in one worker call (local or Ray alike):

- seed mode (``items`` or ``pool_per_task``): answer exactly these items (the pool: base and parents), or
  ``pool_per_task`` items per task drawn from the split without ``exclude`` (a run's finalists);
- bank mode: ``levels`` rounds of adaptively chosen pool items (each round brings every task up to the
  level's item count; items picked greedily to shrink the posterior variance of the task's pool accuracy),
  stopping as soon as ``estimate + z * se < threshold`` (racing); past the last level, a candidate that still
  reaches the threshold answers the rest of the pool (its value is then exact on the pool).

Estimate: MAP ability (Gaussian prior of the bank's rows), then per task the mean over the pool of the
answers seen and the predicted probabilities of the rest. ``se``: the standard error of the mean over tasks
(Laplace posterior of the ability plus the Bernoulli noise of the unseen items). Deterministic in the request
and the answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import numpy as np
from scipy.special import expit

from evomerge.errors import EvomergeError
from evomerge.fitness.irt.ability import fit_latent

Scores = dict[str, dict[int, float]]


@dataclass
class BankView:
    """The parts of a fitted bank a worker needs: pool items per task, item parameters, ability prior."""

    tasks: list[str]
    item_ids: dict[str, list[int]]
    a: np.ndarray
    b: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    rows: int = 0  # candidate rows (ledger records) the fit saw

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for t in self.tasks:
            out[t] = slice(start, start + len(self.item_ids[t]))
            start += len(self.item_ids[t])
        return out


@dataclass
class FitnessRequest:
    items: Optional[dict[str, list[int]]] = None
    pool_per_task: int = 0
    seed: int = 0
    bank: Optional[BankView] = None
    levels: list[int] = field(default_factory=lambda: [20])
    full_pool: bool = True
    threshold: Optional[float] = None
    z: float = 0.0
    exclude: Optional[dict[str, list[int]]] = None  # seed mode: items not to draw


def sample_pool(all_items: Mapping[str, list[int]], k: int, seed: int) -> dict[str, list[int]]:
    """``k`` items per task (all if fewer), drawn once from the split with a seeded generator."""
    rng = np.random.default_rng([seed, 17])
    out = {}
    for t in sorted(all_items):
        ids = np.asarray(all_items[t])
        out[t] = sorted(int(i) for i in (ids if len(ids) <= k else rng.choice(ids, k, replace=False)))
    return out


def estimate(bank: BankView, answers: Scores) -> tuple[dict[str, float], float, np.ndarray]:
    """Per-task pool accuracy estimates, std error of their mean, and the MAP ability."""
    sl = bank.slices()
    seen = np.zeros(len(bank.b), dtype=bool)
    y = np.full(len(bank.b), np.nan)
    for t in bank.tasks:
        pos = {i: sl[t].start + k for k, i in enumerate(bank.item_ids[t])}
        for i, s in answers.get(t, {}).items():
            if int(i) in pos:
                seen[pos[int(i)]] = True
                y[pos[int(i)]] = float(s)
    theta = fit_latent(y[seen], bank.a[seen], bank.b[seen], bank.mean, bank.cov) if seen.any() else bank.mean
    p = expit(bank.a @ theta - bank.b)
    w = p * (1 - p)
    prec = np.linalg.inv(bank.cov) + (bank.a[seen] * w[seen, None]).T @ bank.a[seen]
    cov = np.linalg.inv(prec)
    full = np.where(seen, y, p)
    out, g, noise = {}, np.zeros(len(theta)), 0.0
    for t in bank.tasks:
        n = sl[t].stop - sl[t].start
        out[t] = float(full[sl[t]].mean())
        unseen = ~seen[sl[t]]
        g += (bank.a[sl[t]][unseen] * w[sl[t]][unseen, None]).sum(axis=0) / n
        noise += float(w[sl[t]][unseen].sum()) / n**2
    k = len(bank.tasks)
    se = float(np.sqrt(max(g @ cov @ g / k**2 + noise / k**2, 0.0)))
    return out, se, theta


def choose_items(bank: BankView, answers: Scores, want: Mapping[str, int], theta: np.ndarray) -> Scores:
    """Per task, ``want[t]`` unseen pool items that shrink the variance of the task's accuracy most."""
    sl = bank.slices()
    p = expit(bank.a @ theta - bank.b)
    w = p * (1 - p)
    seen = np.zeros(len(bank.b), dtype=bool)
    for t in bank.tasks:
        got = {int(i) for i in answers.get(t, {})}
        seen[sl[t]] = [i in got for i in bank.item_ids[t]]
    precision = np.linalg.inv(bank.cov) + (bank.a[seen] * w[seen, None]).T @ bank.a[seen]
    out: dict[str, list[int]] = {}
    for t, k in want.items():
        a, wt, ss = bank.a[sl[t]], w[sl[t]], seen[sl[t]].copy()
        g = (a * wt[:, None]).mean(axis=0)
        picks = []
        for _ in range(min(k, int((~ss).sum()))):
            s_a = np.linalg.solve(precision, a.T).T
            gain = wt * (s_a @ g) ** 2 / (1 + wt * np.einsum("nd,nd->n", s_a, a))
            gain[ss] = -np.inf
            j = int(np.argmax(gain))  # ties (e.g. an uninformed bank): the lowest index, deterministic
            ss[j] = True
            precision = precision + wt[j] * np.outer(a[j], a[j])
            picks.append(bank.item_ids[t][j])
        if picks:
            out[t] = picks
    return out


def _merge(into: Scores, new: Mapping[str, Mapping[int, float]]) -> None:
    for t, v in new.items():
        into.setdefault(t, {}).update({int(i): float(s) for i, s in v.items()})


def answer_request(req: FitnessRequest, evaluate: Callable[[dict[str, list[int]]], Mapping],
                   all_items: Callable[[], Mapping[str, list[int]]]) -> tuple[dict[str, float], Scores, dict]:
    """Run a request: (per-task values, every answer, fidelity record: items, se, level, stopped)."""
    answers: Scores = {}
    if req.bank is None:
        items = req.items
        if not items and req.pool_per_task:
            skip = {t: {int(i) for i in v} for t, v in (req.exclude or {}).items()}
            left = {t: [i for i in v if i not in skip.get(t, ())] for t, v in all_items().items()}
            items = {t: v for t, v in sample_pool(left, req.pool_per_task, req.seed).items() if v}
        if not items:
            raise EvomergeError("fitness request names neither items nor a bank")
        _merge(answers, evaluate(items))
        vals = {t: float(np.mean(list(v.values()))) for t, v in answers.items()}
        return vals, answers, {"items": sum(map(len, answers.values())), "se": 0.0, "level": "pool"}
    bank = req.bank
    theta = bank.mean
    fid: dict = {"bank_rows": bank.rows, "threshold": req.threshold}
    level = None
    for li, target in enumerate(req.levels):
        want = {t: target - len(answers.get(t, {})) for t in bank.tasks}
        more = choose_items(bank, answers, {t: k for t, k in want.items() if k > 0}, theta)
        if more:
            _merge(answers, evaluate(more))
        vals, se, theta = estimate(bank, answers)
        level = li
        bound = float(np.mean(list(vals.values()))) + req.z * se
        if req.threshold is not None and bound < req.threshold:
            fid.update(stopped=True)
            break
    else:
        if req.full_pool:
            rest = {t: [i for i in bank.item_ids[t] if i not in answers.get(t, {})] for t in bank.tasks}
            rest = {t: v for t, v in rest.items() if v}
            if rest:
                _merge(answers, evaluate(rest))
            vals, se, _ = estimate(bank, answers)
            level = "pool"
    fid.update(items=sum(map(len, answers.values())), se=se, level=level)
    fid.setdefault("stopped", False)
    return vals, answers, fid
