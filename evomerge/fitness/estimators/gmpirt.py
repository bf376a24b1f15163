"""``gmpirt``: MERGE^3's gmp-IRT: per-task mix of the weighted anchor estimate and mp-IRT, mix tuned on the bank."""

from __future__ import annotations

from evomerge.fitness.estimators.base import ESTIMATORS, MixedEstimator
from evomerge.fitness.estimators.mpirt import MPIRTEstimator


@ESTIMATORS.register("gmpirt")
class GMPIRTEstimator(MixedEstimator):
    inner = MPIRTEstimator
