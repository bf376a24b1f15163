"""``full``: no estimate at all; every item of the search split is evaluated and averaged."""

from __future__ import annotations

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.fitness.estimators.base import ESTIMATORS, Answers, Estimator


@ESTIMATORS.register("full")
class FullEstimator(Estimator):
    needs_bank = False
    full_split = True

    def estimate(self, answers: Answers) -> dict[str, float]:
        out = {}
        for task, scores in answers.items():
            if not scores:
                raise EvomergeError(f"no answers for task {task!r}")
            out[task] = float(np.mean(list(scores.values())))
        return out
