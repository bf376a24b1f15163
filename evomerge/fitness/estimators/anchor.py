"""``anchor``: the weighted anchor estimate, sum of weight * answer (tinyBenchmarks' anchor-point estimate)."""

from __future__ import annotations

from evomerge.fitness.estimators.base import ESTIMATORS, Answers, Estimator, weighted_anchor_estimate


@ESTIMATORS.register("anchor")
class AnchorEstimator(Estimator):
    needs_bank = False

    def estimate(self, answers: Answers) -> dict[str, float]:
        return weighted_anchor_estimate(self.anchors, self._anchor_answers(answers))
