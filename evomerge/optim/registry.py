"""The optimizer registry (entry-point group ``evomerge.optimizers``) and a typed constructor."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from evomerge.registry import Registry

OPTIMIZERS: Registry = Registry(
    "optimizer",
    entry_point_group="evomerge.optimizers",
    modules=["evomerge.optim.cma_es", "evomerge.optim.nevergrad_opt", "evomerge.optim.optuna_opt",
             "evomerge.optim.random_search"],
)


def make_optimizer(name: str, space, directions: Sequence[str], seed: int = 0, population: int = 8,
                   budget: Optional[int] = None, options: Optional[dict[str, Any]] = None):
    """Build a registered optimizer; unknown names and bad options raise EvomergeError."""
    return OPTIMIZERS.get(name)(space, directions, seed=seed, population=population, budget=budget, options=options)
