"""Fitness: lm-eval evaluation with per-item results, IRT item banks, anchors, and accuracy estimators.

Public API: ``LMEvalEvaluator``, ``ItemResults``, ``ESTIMATORS`` / ``Estimator``, ``ItemBank``,
``select_anchors`` / ``Anchors``, ``FitnessConfig``, ``Fitness`` (see fitness.py for the call sequence).
The names load on first use (PEP 562): the submodules import torch, lm-eval and scikit-learn, which a config
check (``evomerge.fitness.config``) or ``evomerge bank show`` must not wait for.
"""

import importlib

_WHERE = {
    "ANCHOR_METHODS": "anchors", "Anchors": "anchors", "select_anchors": "anchors",
    "EndpointCache": "cache", "FitnessConfig": "config", "ESTIMATORS": "estimators", "Estimator": "estimators",
    "LMEvalEvaluator": "evaluator", "Fitness": "fitness", "ItemBank": "irt", "fit_item_bank": "irt",
    "ItemResults": "results",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_WHERE)
