"""Item bank: fitted IRT item parameters of one task set, plus the population that fitted them.

Saved as ``bank.json`` (tasks, item ids, population names, task fingerprint) and ``bank.npz`` (arrays) in
one folder. ``check_tasks`` refuses a bank built for another task set with one clear line.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.fsutil import atomic_write
from evomerge.fitness.irt.fit import fit_mirt_2pl, predict_proba

_FORMAT = 1


@dataclass
class ItemBank:
    """IRT parameters of every item of ``tasks`` (flattened, task-major in ``item_ids`` order)."""

    tasks: list[str]
    item_ids: dict[str, list[int]]
    a: np.ndarray          # (N, D)
    b: np.ndarray          # (N,)
    models: list[str]      # population that fitted the bank
    responses: np.ndarray  # (M, N) scores of the population, NaN = not evaluated
    theta: np.ndarray      # (M, D) MAP abilities of the population
    fingerprint: dict[str, Any] = field(default_factory=dict)
    endpoints: list[str] = field(default_factory=list)  # population members that are merge sources (parents)
    fit_settings: dict[str, Any] = field(default_factory=dict)  # dim, priors, seed: to refit on a sub-population

    @property
    def dim(self) -> int:
        return self.a.shape[1]

    @property
    def n_items(self) -> int:
        return len(self.b)

    def task_slice(self, task: str) -> slice:
        """Columns of ``task`` in the flattened arrays."""
        start = 0
        for t in self.tasks:
            n = len(self.item_ids[t])
            if t == task:
                return slice(start, start + n)
            start += n
        raise EvomergeError(f"task {task!r} is not in the item bank (tasks: {', '.join(self.tasks)})")

    def columns(self, task: str, ids: Sequence[int]) -> np.ndarray:
        """Column indices of item ids of one task."""
        sl = self.task_slice(task)
        pos = {int(i): sl.start + k for k, i in enumerate(self.item_ids[task])}
        try:
            return np.array([pos[int(i)] for i in ids], dtype=np.int64)
        except KeyError as exc:
            raise EvomergeError(f"item {exc.args[0]} of task {task!r} is not in the item bank") from None

    def prior(self) -> tuple[np.ndarray, np.ndarray]:
        """Empirical Gaussian prior of abilities: the population's mean and (shrunk) covariance."""
        mean = self.theta.mean(axis=0)
        cov = np.cov(self.theta, rowvar=False).reshape(self.dim, self.dim) if len(self.theta) > 1 else np.eye(self.dim)
        return mean, cov + 0.05 * np.eye(self.dim)

    def ability_of(self, model: str) -> np.ndarray:
        if model not in self.models:
            raise EvomergeError(f"model {model!r} is not in the item bank's population")
        return self.theta[self.models.index(model)]

    def predict(self, theta: np.ndarray) -> np.ndarray:
        return predict_proba(theta, self.a, self.b)

    def check_tasks(self, tasks: Sequence[str], fingerprint: Optional[Mapping[str, Any]] = None) -> None:
        """Raise unless this bank was built for exactly ``tasks`` (and the same task fingerprint, if given)."""
        if sorted(tasks) != sorted(self.tasks):
            raise EvomergeError(f"item bank was built for tasks [{', '.join(self.tasks)}], "
                                f"not for [{', '.join(tasks)}]; rebuild it for this task set")
        if fingerprint is not None and self.fingerprint and dict(fingerprint) != self.fingerprint:
            changed = sorted(k for k in set(fingerprint) | set(self.fingerprint)
                             if fingerprint.get(k) != self.fingerprint.get(k))
            raise EvomergeError(f"item bank was built with other task settings ({', '.join(changed)} differ); "
                                f"rebuild it for this task set")

    def refit_without(self, drop: Sequence[int]) -> "ItemBank":
        """The same bank fitted again without the population rows ``drop`` (for honest tuning)."""
        keep = [r for r in range(len(self.models)) if r not in set(drop)]
        fit = fit_mirt_2pl(self.responses[keep], **self.fit_settings)
        models = [self.models[r] for r in keep]
        return ItemBank(tasks=self.tasks, item_ids=self.item_ids, a=fit.a, b=fit.b, models=models,
                        responses=self.responses[keep], theta=fit.theta, fingerprint=self.fingerprint,
                        endpoints=[e for e in self.endpoints if e in models], fit_settings=self.fit_settings)


    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"format": _FORMAT, "tasks": self.tasks, "item_ids": self.item_ids, "models": self.models,
                "fingerprint": self.fingerprint, "endpoints": self.endpoints,
                "fit_settings": self.fit_settings}
        # arrays first, the JSON last, each atomically: a reader that sees bank.json sees a whole bank
        arrays = io.BytesIO()
        np.savez(arrays, a=self.a, b=self.b, responses=self.responses, theta=self.theta)
        atomic_write(folder / "bank.npz", arrays.getvalue())
        atomic_write(folder / "bank.json", json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "ItemBank":
        folder = Path(folder)
        if not (folder / "bank.json").exists() or not (folder / "bank.npz").exists():
            raise EvomergeError(f"no item bank in {folder} (expected bank.json and bank.npz)")
        try:
            meta = json.loads((folder / "bank.json").read_text())
            if meta.get("format") != _FORMAT:
                raise EvomergeError(f"item bank {folder} has format {meta.get('format')}, expected {_FORMAT}")
            arrays = np.load(folder / "bank.npz")
            bank = cls(tasks=meta["tasks"], item_ids={t: [int(i) for i in v] for t, v in meta["item_ids"].items()},
                       a=arrays["a"], b=arrays["b"], models=meta["models"], responses=arrays["responses"],
                       theta=arrays["theta"], fingerprint=meta.get("fingerprint", {}),
                       endpoints=list(meta.get("endpoints", [])), fit_settings=meta.get("fit_settings", {}))
        except EvomergeError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
            raise EvomergeError(f"item bank {folder} is unreadable ({type(exc).__name__}: {exc})") from None
        n = sum(len(v) for v in bank.item_ids.values())
        if bank.a.shape[0] != n or bank.b.shape != (n,) or bank.responses.shape != (len(bank.models), n):
            raise EvomergeError(f"item bank {folder} is inconsistent: {n} items, arrays {bank.a.shape} / "
                                f"{bank.b.shape} / {bank.responses.shape} for {len(bank.models)} models")
        return bank


def response_matrix(population: Mapping[str, Mapping[str, Mapping[int, float]]], tasks: Sequence[str]
                    ) -> tuple[list[str], dict[str, list[int]], np.ndarray]:
    """Stack ``population[model][task][item] = score`` into (models, item ids per task, matrix with NaN holes)."""
    if not population:
        raise EvomergeError("item bank needs a non-empty population")
    models = list(population)
    item_ids: dict[str, list[int]] = {}
    for t in tasks:
        ids = sorted({int(i) for m in models for i in population[m].get(t, {})})
        if not ids:
            raise EvomergeError(f"no population answers for task {t!r}")
        item_ids[t] = ids
    cols = {(t, i): k for k, (t, i) in enumerate((t, i) for t in tasks for i in item_ids[t])}
    mat = np.full((len(models), len(cols)), np.nan)
    for r, m in enumerate(models):
        for t in tasks:
            for i, s in population[m].get(t, {}).items():
                mat[r, cols[(t, int(i))]] = float(s)
    return models, item_ids, mat


def fit_item_bank(population: Mapping[str, Mapping[str, Mapping[int, float]]], tasks: Sequence[str],
                  dim: int = 2, fingerprint: Optional[Mapping[str, Any]] = None, seed: int = 0,
                  endpoints: Sequence[str] = (), **fit_kwargs: Any) -> ItemBank:
    """Fit a bank from ``population[model][task][item_id] = score`` (scores in [0, 1])."""
    models, item_ids, mat = response_matrix(population, tasks)
    fit = fit_mirt_2pl(mat, dim=dim, seed=seed, **fit_kwargs)
    return ItemBank(tasks=list(tasks), item_ids=item_ids, a=fit.a, b=fit.b, models=models, responses=mat,
                    theta=fit.theta, fingerprint=dict(fingerprint or {}),
                    endpoints=[e for e in endpoints if e in models],
                    fit_settings={"dim": dim, "seed": seed, **fit_kwargs})

