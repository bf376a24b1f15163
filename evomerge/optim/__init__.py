"""Optimizers behind one ask/tell interface: cma, nevergrad, optuna, random (see :mod:`evomerge.optim.base`)."""

from evomerge.optim.base import Optimizer
from evomerge.optim.registry import OPTIMIZERS, make_optimizer

__all__ = ["OPTIMIZERS", "Optimizer", "make_optimizer"]
