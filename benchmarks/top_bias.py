"""Bias at the top of a real search's population: what the fitness told the optimizer vs the full search split.

Used by ``irt_error.py --runs`` / ``--top-of``. A search's top ``k`` candidates (by the value the optimizer was
told) are re-evaluated on the whole search split (cached in ``RUN_DIR/pareto/full_split.json``; a full-split
run's own records already are), then bias = mean(told - full) over the k candidates and the tasks. A
fitness that scores a fixed item sample (the online bank's pool, subset_mean's items) has two parts in that
bias: the estimator's error against the sample's accuracy, and the sample's offset from the whole split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evomerge.fitness.results import ItemResults

FULL_SPLIT_FILE = Path("pareto") / "full_split.json"
REDUCED = ("anchors", "items_per_task", "population", "bank", "online", "fidelity", "estimator_params", "resample")


def full_split_results(report, records: list[dict]) -> dict[int, ItemResults]:
    """Full search-split results of ``records`` (by eval_id), evaluating only those not cached yet."""
    from evomerge.execution import EXECUTORS
    from evomerge.recipe import recipe_from_dict
    from evomerge.run import run_config_from_dict
    from evomerge.run.context import worker_spec
    from evomerge.spaces import build_space

    if report.config.fitness.get("estimator") == "full":
        return {r["eval_id"]: ItemResults.from_dict({"scores": r["item_results"]}) for r in records}
    path = report.run_dir / FULL_SPLIT_FILE
    cached = {int(k): ItemResults.from_dict(v) for k, v in json.loads(path.read_text()).items()} \
        if path.exists() else {}
    todo = [r for r in records if r["eval_id"] not in cached]
    if todo:
        data = report.config.model_dump(mode="json")
        data["fitness"] = {k: v for k, v in data["fitness"].items() if k not in REDUCED} | {"estimator": "full"}
        cfg = run_config_from_dict(data)
        space = build_space(cfg.space, base=cfg.base, models=cfg.models)
        with EXECUTORS.get("local")(worker_spec(cfg, space, report.run_dir)) as ex:
            for eid, res in ex.map([(r["eval_id"], recipe_from_dict(r["recipe"])) for r in todo]):
                if res.status != "ok":
                    raise RuntimeError(f"full-split evaluation of candidate {eid} failed: {res.reason}")
                cached[eid] = ItemResults.from_scores(res.item_results)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({str(k): {"scores": v.to_dict()["scores"]} for k, v in cached.items()}))
    return {r["eval_id"]: cached[r["eval_id"]] for r in records}


def target_items(report, record: dict) -> dict[str, set[int]] | None:
    """The items a run's told values are accuracies over: the online bank's pool, a fixed subset's items, or
    None for the whole split (full fitness, an up-front bank over the whole split)."""
    seed = report.run_dir / "item_bank" / "online_seed.json"
    if seed.exists():
        return {t: set(map(int, v)) for t, v in json.loads(seed.read_text())["pool"].items()}
    if report.config.fitness.get("estimator") != "subset_mean":  # full split, or IRT over a whole-split bank
        return None
    return {t: set(map(int, v)) for t, v in record["item_results"].items()}


def told_bias(report, k: int = 10) -> dict:
    """The top ``k`` candidates' told per-task values against their full-split accuracy, split into the
    estimator's error against its own target items and the target items' offset from the whole split."""
    top = report.ranked()[:k]
    truth = full_split_results(report, top)
    tasks = list(report.config.fitness["tasks"])
    told = np.array([[r["metrics"][t] for t in tasks] for r in top])
    full = np.array([[truth[r["eval_id"]].metrics[t] for t in tasks] for r in top])
    items = target_items(report, top[0])
    on_items = full if items is None else np.array(
        [[np.mean([s for i, s in truth[r["eval_id"]].scores[t].items() if i in items[t]]) for t in tasks]
         for r in top])
    return summarise(told, full) | {
        "estimator_bias": float((told - on_items).mean()), "items_offset": float((on_items - full).mean()),
        "picked_is_best": bool(np.argmax(full.mean(1)) == 0), "picked_full": float(full[0].mean()),
        "best_full": float(full.mean(1).max())}


def summarise(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Bias (mean signed error), MAE and max error over candidates x tasks; bias of the mean over tasks."""
    err = pred - truth
    return {"n": int(len(pred)), "bias": float(err.mean()), "mae": float(np.abs(err).mean()),
            "max": float(np.abs(err).max()), "bias_per_task": err.mean(0).round(4).tolist()}
