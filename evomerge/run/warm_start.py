"""Warm start: the points a fresh run asks before the optimizer's own (``optimizer.warm_start``).

``auto`` (the default) is ``[default, simple_merges]``: the space's default point, then every simple merge
of ``evomerge.run.baselines`` (uniform average, task-arithmetic and TIES coefficient grids) that the space can
express (``SearchSpace.encode``; a task-arithmetic space holds the uniform average too). A staged job
adds the previous stage's winner (``evomerge.run.staged``). Duplicates (points within 1e-3 in the unit cube)
are asked once. The points are *evaluated as candidates* (counted in the budget, ledger records
marked ``origin: warm_start:<label>``) rather than scored apart and only the best handed on: every evaluation
then informs the optimizer, and simple merges the space cannot express would be evaluations it cannot use.
"""

from __future__ import annotations

import logging

from evomerge.errors import ConfigError, EvomergeError
from evomerge.run.config import RunConfig, WarmStartPoint, WarmStartRecipe
from evomerge.spaces.base import Point

log = logging.getLogger(__name__)
PREFIX = "warm_start:"
NEAR = 1e-3  # unit-cube distance under which two warm-start points are one candidate


def warm_start_points(cfg: RunConfig, space) -> list[tuple[str, Point]]:
    """(origin label, point) in asking order; raises ConfigError for a required entry the space cannot hold."""
    from evomerge.recipe import recipe_from_dict
    from evomerge.run.baselines import simple_merges

    ws = cfg.optimizer.warm_start
    if ws == "none":
        return []
    entries = ["default", "simple_merges"] if ws == "auto" else list(ws)
    out: list[tuple[str, Point]] = []

    def add(label: str, point: Point) -> None:
        if not any(space.near(point, p, NEAR) for _, p in out):  # e.g. a default of 0.333 and the average's 1/3
            out.append((PREFIX + label, point))

    for entry in entries:
        if entry == "default":
            add("default", space.default_point())
        elif entry == "simple_merges":
            skipped = []
            for label, recipe in simple_merges(cfg):
                point = space.encode(recipe)
                if point is None:
                    skipped.append(label)
                else:
                    add(label, point)
            if skipped:
                log.info("warm start: the space cannot express %d simple merges (%s)", len(skipped), ", ".join(skipped))
        elif isinstance(entry, WarmStartRecipe):
            point = space.encode(recipe_from_dict(entry.recipe))
            if point is None:
                if entry.required:
                    raise ConfigError(f"warm_start recipe {entry.label!r} cannot be expressed in the search space")
                log.info("warm start: the space cannot express %s; skipped", entry.label)
            else:
                add(entry.label, point)
        elif isinstance(entry, WarmStartPoint):
            try:
                add(entry.label, space.validate_point(dict(entry.point)))
            except EvomergeError as exc:
                raise ConfigError(f"warm_start point {entry.label!r}: {exc}") from None
    return out


def takes_warm_start(cfg: RunConfig, optimizer) -> bool:
    """Whether the points go to ``optimizer``: False for ``auto`` on a plugin that takes none; an error for
    points the config names explicitly."""
    if optimizer.supports_enqueue:
        return True
    if cfg.optimizer.warm_start != "auto":
        raise ConfigError(f"optimizer {cfg.optimizer.name!r} cannot take warm-start points; set warm_start: none")
    return False


def enqueue_warm_start(cfg: RunConfig, space, optimizer) -> int:
    """Queue the warm-start points on a fresh optimizer; returns how many (0 if the plugin takes none)."""
    points = warm_start_points(cfg, space)
    if not points:
        return 0
    if not takes_warm_start(cfg, optimizer):
        log.info("warm start: optimizer %s takes no enqueued points; skipped", cfg.optimizer.name)
        return 0
    optimizer.enqueue([p for _, p in points], [label for label, _ in points])
    log.info("warm start: %d points first (%s)", len(points), ", ".join(label for label, _ in points))
    return len(points)
