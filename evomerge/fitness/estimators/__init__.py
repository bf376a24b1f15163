"""Fitness estimators (registry ``ESTIMATORS``), one file each: full, subset_mean, anchor, pirt, gpirt, mpirt,
gmpirt."""

from evomerge.fitness.estimators.base import ESTIMATORS, Answers, Estimator, IRTEstimator, MixedEstimator

__all__ = ["ESTIMATORS", "Answers", "Estimator", "IRTEstimator", "MixedEstimator"]
