"""Fitness: lm-eval evaluation with per-item results, IRT item banks, anchors, and accuracy estimators.

Public API: ``LMEvalEvaluator``, ``ItemResults``, ``ESTIMATORS`` / ``Estimator``, ``ItemBank``,
``select_anchors`` / ``Anchors``, ``FitnessConfig``, ``Fitness`` (see fitness.py for the call sequence).
Names are imported on first use, so light submodules (``irt.bank``, ``online.config``; ``evomerge bank show``)
load without lm-eval or torch.
"""

import importlib

_EXPORTS = {
    "ANCHOR_METHODS": "anchors", "Anchors": "anchors", "select_anchors": "anchors", "EndpointCache": "cache",
    "FitnessConfig": "config", "ESTIMATORS": "estimators", "Estimator": "estimators",
    "LMEvalEvaluator": "evaluator", "Fitness": "fitness", "ItemBank": "irt", "fit_item_bank": "irt",
    "ItemResults": "results",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"evomerge.fitness.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'evomerge.fitness' has no attribute {name!r}")
