"""Pareto dominance, the non-dominated front and exact hypervolume (any number of objectives).

Values are given in the objectives' natural orientation with a ``directions`` list; everything is turned into
minimisation internally. Hypervolume uses recursive slicing (HSO), exact and fast for the front sizes a merge
search produces (tens of points, a handful of objectives).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def to_losses(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    arr = np.asarray(values, dtype=float).reshape(-1, len(directions))
    return arr * sign


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` (both losses): no worse anywhere and better somewhere."""
    a, b = np.asarray(a), np.asarray(b)
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_front(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (duplicates of a front point are all kept), in input order."""
    losses = to_losses(values, directions)
    keep = []
    for i, li in enumerate(losses):
        if not any(dominates(lj, li) for j, lj in enumerate(losses) if j != i):
            keep.append(i)
    return keep


def _hv(points: np.ndarray, ref: np.ndarray) -> float:
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    order = np.argsort(points[:, -1], kind="stable")
    pts = points[order]
    total = 0.0
    for i in range(len(pts)):
        top = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        height = top - pts[i, -1]
        if height > 0:
            total += _hv(pts[: i + 1, :-1], ref[:-1]) * height
    return total


def hypervolume(values: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> float:
    """Volume dominated by ``values`` and bounded by ``reference`` (a point worse than all, natural orientation)."""
    if len(values) == 0:
        return 0.0
    losses = to_losses(values, directions)
    ref = to_losses([reference], directions)[0]
    inside = losses[np.all(losses < ref, axis=1)]
    if len(inside) == 0:
        return 0.0
    front = inside[pareto_front(inside, ["minimize"] * inside.shape[1])]
    return _hv(np.unique(front, axis=0), ref)
