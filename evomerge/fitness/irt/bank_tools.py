"""Item banks as files users keep: a summary (``evomerge bank show``) and the union of two banks
(``evomerge bank merge``), refitted on every answer both hold."""

from __future__ import annotations

from typing import Any

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.fitness.irt.bank import ItemBank
from evomerge.fitness.irt.fit import fit_mirt_2pl


def summary(bank: ItemBank) -> dict[str, Any]:
    """Per task: items, share answered, difficulty and discrimination quantiles; the models it saw."""
    tasks = {}
    for t in bank.tasks:
        sl = bank.task_slice(t)
        resp = bank.responses[:, sl]
        seen = ~np.isnan(resp)
        disc = np.linalg.norm(bank.a[sl], axis=1)
        q = (0.0, 0.25, 0.5, 0.75, 1.0)
        tasks[t] = {"items": int(sl.stop - sl.start), "answers": int(seen.sum()),
                    "answered_share": float(seen.mean()) if seen.size else 0.0,
                    "models_answering": int(seen.any(axis=1).sum()),
                    "difficulty_q": [float(x) for x in np.quantile(bank.b[sl], q)],
                    "discrimination_q": [float(x) for x in np.quantile(disc, q)],
                    "mean_accuracy": float(np.nanmean(resp)) if seen.any() else float("nan")}
    return {"tasks": tasks, "dim": bank.dim, "models": list(bank.models), "endpoints": list(bank.endpoints),
            "fingerprint": bank.fingerprint}


def merge_banks(a: ItemBank, b: ItemBank, seed: int = 0) -> ItemBank:
    """One bank from two of the same tasks: items of both, rows of both (a model in both keeps A's answers and
    takes B's where A has none), refitted with A's settings on the whole sparse matrix."""
    if sorted(a.tasks) != sorted(b.tasks):
        raise EvomergeError(f"banks cover different tasks ([{', '.join(a.tasks)}] vs [{', '.join(b.tasks)}])")
    if a.fingerprint and b.fingerprint and a.fingerprint != b.fingerprint:
        diff = sorted(k for k in set(a.fingerprint) | set(b.fingerprint) if a.fingerprint.get(k) != b.fingerprint.get(k))
        raise EvomergeError(f"banks were built with other task settings ({', '.join(diff)} differ)")
    tasks = list(a.tasks)
    ids = {t: sorted(set(a.item_ids[t]) | set(b.item_ids[t])) for t in tasks}
    cols = {(t, i): k for k, (t, i) in enumerate((t, i) for t in tasks for i in ids[t])}
    models = list(dict.fromkeys(list(a.models) + list(b.models)))
    mat = np.full((len(models), len(cols)), np.nan)
    for bank in (b, a):  # A last: its answers win where both have one
        for r, m in enumerate(bank.models):
            row = models.index(m)
            for t in tasks:
                vals = bank.responses[r, bank.task_slice(t)]
                for i, v in zip(bank.item_ids[t], vals):
                    if not np.isnan(v):
                        mat[row, cols[(t, i)]] = v
    settings = {k: v for k, v in (a.fit_settings or {}).items() if k in ("dim", "prior_a", "prior_b", "prior_theta")}
    settings.setdefault("dim", a.dim)
    settings["seed"] = seed
    fit = fit_mirt_2pl(mat, **settings)
    return ItemBank(tasks=tasks, item_ids=ids, a=fit.a, b=fit.b, models=models, responses=mat, theta=fit.theta,
                    fingerprint=a.fingerprint or b.fingerprint,
                    endpoints=list(dict.fromkeys(list(a.endpoints) + list(b.endpoints))), fit_settings=settings)
