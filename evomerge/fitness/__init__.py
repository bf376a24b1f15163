"""Fitness: lm-eval evaluation with per-item results, IRT item banks, anchors, and accuracy estimators.

Public API: ``LMEvalEvaluator``, ``ItemResults``, ``ESTIMATORS`` / ``Estimator``, ``ItemBank``,
``select_anchors`` / ``Anchors``, ``FitnessConfig``, ``Fitness`` (see fitness.py for the call sequence).
The names load on first use (PEP 562): the submodules import torch, lm-eval and scikit-learn, which a config
check (``evomerge.fitness.config``) or ``evomerge bank show`` must not wait for.
"""

from evomerge.lazy import lazy_getattr

_WHERE = {
    "ANCHOR_METHODS": "anchors", "Anchors": "anchors", "select_anchors": "anchors",
    "EndpointCache": "cache", "FitnessConfig": "config", "ESTIMATORS": "estimators", "Estimator": "estimators",
    "LMEvalEvaluator": "evaluator", "Fitness": "fitness", "ItemBank": "irt", "fit_item_bank": "irt",
    "ItemResults": "results",
}

__getattr__ = lazy_getattr(__name__, _WHERE)

__all__ = sorted(_WHERE)
