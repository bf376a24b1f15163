"""``gpirt``: gp-IRT: per-task mix of the weighted anchor estimate and p-IRT, the mix tuned on the bank."""

from __future__ import annotations

from evomerge.fitness.estimators.base import ESTIMATORS, MixedEstimator
from evomerge.fitness.estimators.pirt import PIRTEstimator


@ESTIMATORS.register("gpirt")
class GPIRTEstimator(MixedEstimator):
    inner = PIRTEstimator
