"""``subset_mean``: the plain mean of the answers on the anchors of each task (weights ignored)."""

from __future__ import annotations

from evomerge.fitness.estimators.base import ESTIMATORS, Answers, Estimator


@ESTIMATORS.register("subset_mean")
class SubsetMeanEstimator(Estimator):
    needs_bank = False

    def estimate(self, answers: Answers) -> dict[str, float]:
        return {t: float(y.mean()) for t, y in self._anchor_answers(answers).items()}
