"""Estimator interface: turn a candidate's answers on the anchor items into per-task accuracy estimates.

An estimator is built once per run from the item bank and the anchors (``Estimator(bank, anchors, **params)``),
may ``tune()`` its mixing weights on the bank's population, and then maps
``answers[task][item_id] = score`` (the anchors' answers) to ``{task: estimated full-split accuracy}``.
Adaptive estimators also say which items to run next (``next_items``), given the answers so far; the anchors
are then only the first round (``first_round`` of the ``items_per_task`` budget).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Optional

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.registry import Registry

if TYPE_CHECKING:  # the registry and first_round (a config check) need neither scipy nor the IRT code
    from evomerge.fitness.anchors import Anchors
    from evomerge.fitness.irt.bank import ItemBank

Answers = Mapping[str, Mapping[int, float]]

ESTIMATORS: Registry[type["Estimator"]] = Registry(
    "estimator", entry_point_group="evomerge.estimators",
    modules=[f"evomerge.fitness.estimators.{m}" for m in ("full", "subset_mean", "anchor", "pirt", "gpirt",
                                                          "mpirt", "gmpirt", "adaptive")])


class Estimator(ABC):
    """Base class. ``needs_bank``: requires an IRT item bank; ``full_split``: evaluates every item."""

    needs_bank: ClassVar[bool] = True
    full_split: ClassVar[bool] = False

    def __init__(self, bank: Optional[ItemBank], anchors: Optional[Anchors], **params: Any):
        if self.needs_bank and bank is None:
            raise EvomergeError(f"estimator {type(self).__name__} needs an item bank")
        if not self.full_split and anchors is None:
            raise EvomergeError(f"estimator {type(self).__name__} needs anchors")
        self.bank = bank
        self.anchors = anchors
        self.params = params

    @classmethod
    def first_round(cls, items_per_task: int, params: dict[str, Any]) -> int:
        """How many of the ``items_per_task`` anchors are asked before ``next_items`` is consulted."""
        return items_per_task

    def tune(self) -> dict[str, Any]:
        """Fit data-driven settings (mixing weights) on the bank's population; returns them."""
        return {}

    def next_items(self, answers: Answers) -> Optional[dict[str, list[int]]]:
        """Items to evaluate next, given every answer so far (None: the answers are complete)."""
        return None

    @abstractmethod
    def estimate(self, answers: Answers) -> dict[str, float]:
        """Per-task accuracy estimates from the answers on the anchors."""

    # helpers shared by the IRT estimators
    def _anchor_answers(self, answers: Answers) -> dict[str, np.ndarray]:
        out = {}
        for task, ids in self.anchors.items.items():
            got = answers.get(task)
            if got is None:
                raise EvomergeError(f"no answers for task {task!r}")
            try:
                out[task] = np.array([float(got[i]) for i in ids])
            except KeyError as exc:
                raise EvomergeError(f"answer for anchor item {exc.args[0]} of task {task!r} is missing") from None
        return out


class IRTEstimator(Estimator):
    """p-IRT style: fit one ability on all anchor answers; per task, the answers seen plus the predicted
    probabilities of the items not seen, averaged over the full split (tinyBenchmarks' p-IRT)."""

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        cols = np.concatenate([self.bank.columns(t, self.anchors.items[t]) for t in self.bank.tasks])
        return self.bank.a[cols], self.bank.b[cols]

    def ability(self, y: np.ndarray) -> np.ndarray:
        a, b = self._design()
        mean, cov = self.bank.prior()
        from evomerge.fitness.irt.ability import fit_latent

        return fit_latent(y, a, b, mean, cov, method=self.params.get("ability", "map"))

    def estimate(self, answers: Answers) -> dict[str, float]:
        seen = self._anchor_answers(answers)
        theta = self.ability(np.concatenate([seen[t] for t in self.bank.tasks]))
        p = self.bank.predict(theta)
        out = {}
        for t in self.bank.tasks:
            sl = self.bank.task_slice(t)
            full = p[sl].copy()
            full[self.bank.columns(t, self.anchors.items[t]) - sl.start] = seen[t]
            out[t] = float(full.mean())
        return out


def weighted_anchor_estimate(anchors: Anchors, seen: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {t: float(np.dot(anchors.weights[t], seen[t])) for t in anchors.items}


class MixedEstimator(Estimator):
    """``lambda_t * weighted anchor estimate + (1 - lambda_t) * IRT estimate`` per task (gp-IRT family).

    ``lambda_t`` is given (``mix``) or tuned: the bank is refitted without a fold of its non-parent population,
    the held-out models are estimated from their anchor answers, and lambda minimises the squared error
    against their known full-split accuracy (closed form, clipped to [0, 1]).
    """

    inner: ClassVar[type[IRTEstimator]]

    def __init__(self, bank, anchors, **params):
        super().__init__(bank, anchors, **params)
        self._irt = self.inner(bank, anchors, **params)
        mix = params.get("mix")
        self.mix: Optional[dict[str, float]] = None if mix is None else (
            {t: float(mix) for t in bank.tasks} if not isinstance(mix, Mapping) else dict(mix))

    def tune(self) -> dict[str, Any]:
        folds = int(self.params.get("tune_folds", 4))
        parents = set(self.params.get("parents") or self.bank.endpoints)
        rows = [r for r, m in enumerate(self.bank.models) if m not in parents]
        if len(rows) < 2:
            raise EvomergeError("tuning mixing weights needs >= 2 non-parent models in the item bank population")
        rng = np.random.default_rng(int(self.params.get("seed", 0)))
        rows = list(rng.permutation(rows))
        num = {t: 0.0 for t in self.bank.tasks}
        den = {t: 0.0 for t in self.bank.tasks}
        for k in range(min(folds, len(rows))):
            held = rows[k::min(folds, len(rows))]
            sub = self.bank.refit_without(held)
            inner = self.inner(sub, self.anchors, **self.params)
            for r in held:
                answers = self._answers_of_row(r)
                irt = inner.estimate(answers)
                base = weighted_anchor_estimate(self.anchors, self._anchor_answers(answers))
                for t in self.bank.tasks:
                    truth = float(np.nanmean(self.bank.responses[r, self.bank.task_slice(t)]))
                    num[t] += (truth - irt[t]) * (base[t] - irt[t])
                    den[t] += (base[t] - irt[t]) ** 2
        self.mix = {t: float(np.clip(num[t] / den[t], 0.0, 1.0)) if den[t] > 0 else 0.0 for t in self.bank.tasks}
        return {"mix": self.mix}

    def _answers_of_row(self, r: int) -> dict[str, dict[int, float]]:
        out = {}
        for t in self.bank.tasks:
            cols = self.bank.columns(t, self.anchors.items[t])
            out[t] = {i: float(self.bank.responses[r, c]) for i, c in zip(self.anchors.items[t], cols)}
        return out

    def estimate(self, answers: Answers) -> dict[str, float]:
        if self.mix is None:
            self.tune()
        irt = self._irt.estimate(answers)
        base = weighted_anchor_estimate(self.anchors, self._anchor_answers(answers))
        return {t: self.mix[t] * base[t] + (1 - self.mix[t]) * irt[t] for t in self.bank.tasks}
