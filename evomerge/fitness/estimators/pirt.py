"""``pirt``: p-IRT: ability fitted (MAP or EAP, ``ability`` param) on all anchor answers, unseen items predicted."""

from __future__ import annotations

from evomerge.fitness.estimators.base import ESTIMATORS, IRTEstimator


@ESTIMATORS.register("pirt")
class PIRTEstimator(IRTEstimator):
    pass
