"""Choose the few items a candidate is evaluated on (anchors), with the weight each stands for.

Methods (``ANCHOR_METHODS``), all picking ``n`` items per task of an item bank:

- ``random``: uniform without replacement, equal weights;
- ``stratified``: items sorted by population difficulty, cut into ``n`` equal strata, one random item each;
  weight = stratum mass;
- ``kmeans_correct``: tinyBenchmarks-style k-means on the population's correctness vector of each item;
- ``kmeans_irt``: k-means on the IRT embedding (a_i, b_i) of each item.

For k-means, the anchor is the item nearest each centroid and its weight the cluster's share of the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.registry import Registry

if TYPE_CHECKING:
    from evomerge.fitness.irt.bank import ItemBank


@dataclass
class Anchors:
    """Per task: the chosen item ids and their weights (summing to 1)."""

    method: str
    items: dict[str, list[int]]
    weights: dict[str, list[float]]

    def n_items(self) -> int:
        return sum(len(v) for v in self.items.values())

    def to_dict(self) -> dict:
        return {"method": self.method, "items": self.items, "weights": self.weights}

    @classmethod
    def from_dict(cls, d: dict) -> "Anchors":
        return cls(method=d["method"], items={t: [int(i) for i in v] for t, v in d["items"].items()},
                   weights={t: [float(w) for w in v] for t, v in d["weights"].items()})


@dataclass
class ItemList:
    """Tasks and their item ids: all that an anchor method in :data:`NEEDS_NO_RESPONSES` reads of a bank."""

    tasks: list[str]
    item_ids: dict[str, list[int]]


#: anchor methods that read only the item ids (no responses, no IRT fit): a search split's list will do
NEEDS_NO_RESPONSES = frozenset({"random"})

AnchorFn = Callable[["ItemBank", str, int, np.random.Generator], tuple[list[int], list[float]]]
ANCHOR_METHODS: Registry[AnchorFn] = Registry("anchor method")


@ANCHOR_METHODS.register("random")
def _random(bank: ItemBank, task: str, n: int, rng: np.random.Generator):
    ids = bank.item_ids[task]
    pick = rng.choice(len(ids), size=n, replace=False)
    return [ids[k] for k in sorted(pick)], [1.0 / n] * n


@ANCHOR_METHODS.register("stratified")
def _stratified(bank: ItemBank, task: str, n: int, rng: np.random.Generator):
    ids = bank.item_ids[task]
    sl = bank.task_slice(task)
    difficulty = np.nanmean(bank.responses[:, sl], axis=0)
    order = np.argsort(difficulty + 1e-9 * rng.random(len(ids)), kind="stable")
    strata = np.array_split(order, n)
    return [ids[int(rng.choice(s))] for s in strata], [len(s) / len(ids) for s in strata]


def _kmeans_pick(emb: np.ndarray, ids: list[int], n: int, rng: np.random.Generator):
    from sklearn.cluster import KMeans  # here: scikit-learn takes ~1 s to import, a config check needs none

    km = KMeans(n_clusters=n, n_init=5, random_state=int(rng.integers(2**31 - 1))).fit(emb)
    items, weights = [], []
    for c in range(n):
        members = np.flatnonzero(km.labels_ == c)
        if len(members) == 0:
            continue
        d = np.linalg.norm(emb[members] - km.cluster_centers_[c], axis=1)
        items.append(ids[int(members[np.argmin(d)])])
        weights.append(len(members) / len(ids))
    return items, weights


@ANCHOR_METHODS.register("kmeans_correct")
def _kmeans_correct(bank: ItemBank, task: str, n: int, rng: np.random.Generator):
    sl = bank.task_slice(task)
    emb = np.nan_to_num(bank.responses[:, sl].T, nan=0.5)
    return _kmeans_pick(emb, bank.item_ids[task], n, rng)


@ANCHOR_METHODS.register("kmeans_irt")
def _kmeans_irt(bank: ItemBank, task: str, n: int, rng: np.random.Generator):
    sl = bank.task_slice(task)
    emb = np.concatenate([bank.a[sl], bank.b[sl, None]], axis=1)
    return _kmeans_pick(emb, bank.item_ids[task], n, rng)


def select_anchors(bank: "ItemBank | ItemList", method: str, n_per_task: int, seed: int = 0) -> Anchors:
    """Pick ``n_per_task`` anchors in every task of ``bank`` with a registered method."""
    fn = ANCHOR_METHODS.get(method)
    if n_per_task < 1:
        raise EvomergeError(f"anchors per task must be >= 1, got {n_per_task}")
    rng = np.random.default_rng(seed)
    items, weights = {}, {}
    for task in bank.tasks:
        n_task = len(bank.item_ids[task])
        if n_per_task > n_task:
            raise EvomergeError(f"{n_per_task} anchors asked for task {task!r}, which has only {n_task} items")
        it, w = fn(bank, task, n_per_task, rng)
        total = sum(w)
        items[task], weights[task] = it, [x / total for x in w]
    return Anchors(method=method, items=items, weights=weights)
