"""Fitness: lm-eval evaluation with per-item results, IRT item banks, anchors, and accuracy estimators.

Public API: ``LMEvalEvaluator``, ``ItemResults``, ``ESTIMATORS`` / ``Estimator``, ``ItemBank``,
``select_anchors`` / ``Anchors``, ``FitnessConfig``, ``Fitness`` (see fitness.py for the call sequence).
"""

from evomerge.fitness.anchors import ANCHOR_METHODS, Anchors, select_anchors
from evomerge.fitness.cache import EndpointCache
from evomerge.fitness.config import FitnessConfig
from evomerge.fitness.estimators import ESTIMATORS, Estimator
from evomerge.fitness.evaluator import LMEvalEvaluator
from evomerge.fitness.fitness import Fitness
from evomerge.fitness.irt import ItemBank, fit_item_bank
from evomerge.fitness.results import ItemResults

__all__ = ["ANCHOR_METHODS", "Anchors", "ESTIMATORS", "EndpointCache", "Estimator", "Fitness", "FitnessConfig",
           "ItemBank", "ItemResults", "LMEvalEvaluator", "fit_item_bank", "select_anchors"]
