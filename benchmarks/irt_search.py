"""The same search with full-split fitness and with IRT-reduced fitness, at an equal candidate budget.

    python benchmarks/irt_search.py [--evaluations 64] [--only full|gpirt|subset_mean] [--runs-dir runs/irt_search]

Each row is the README demo search (TIES per 2-layer group, CMA-ES, seed 0, full zoo) with one fitness:
``full`` (all 1000 search items per skill), ``gpirt`` (20 k-means/IRT anchors per skill, item bank fitted on the
base, the parents and 16 random merges) and ``subset_mean`` (100 random items per skill, the demo's choice).
Printed: items evaluated per candidate and in all (item-bank fitting included), search wall time, the best
candidate's search-split score and its **test**-split mean (500 unseen items per skill). Runs are kept in
``--runs-dir``, so a second call only prints (``--only`` runs one row, e.g. one per core in parallel).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evomerge.run import load_run_config, run_config_from_dict, run_search
from evomerge.run.export import evaluate_on_test
from evomerge.run.report import RunReport

FITNESS = {
    "full": {"estimator": "full"},
    "gpirt": {"estimator": "gpirt", "anchors": "kmeans_irt", "items_per_task": 20, "population": 16},
    "subset_mean": {"estimator": "subset_mean", "anchors": "random", "items_per_task": 100, "population": 0},
}
FULL_ITEMS = 1000  # search-split items per skill


def config(kind: str, evaluations: int):
    data = load_run_config("zoo_demo").model_dump(mode="json")
    data["name"] = f"irt_search_{kind}"
    data["fitness"] = {k: v for k, v in data["fitness"].items()
                       if k not in ("estimator", "anchors", "items_per_task", "population")} | FITNESS[kind]
    data["budget"] = {"evaluations": evaluations}
    return run_config_from_dict(data)


def run_row(kind: str, evaluations: int, runs_dir: Path) -> dict:
    cfg = config(kind, evaluations)
    run_dir = runs_dir / kind
    timing = run_dir / "wall_s.json"
    if not timing.exists():
        t0 = time.perf_counter()
        run_search(cfg, run_dir)
        timing.write_text(json.dumps({"search_wall_s": time.perf_counter() - t0}))
    report = RunReport.load(run_dir)
    best = report.best()
    test = evaluate_on_test(report, [best])[best["eval_id"]]
    n_tasks = len(cfg.fitness["tasks"])
    per_cand = [sum(len(v) for v in r["item_results"].values()) for r in report.ok()]
    bank_models = 0 if kind == "full" else 1 + len(cfg.models) + int(cfg.fitness["population"])
    total = sum(per_cand) + bank_models * FULL_ITEMS * n_tasks
    return {"fitness": kind, "candidates": len(report.records), "items_per_candidate": sum(per_cand) / len(per_cand),
            "items_total": total, "bank_models": bank_models, "wall_s": json.loads(timing.read_text())["search_wall_s"],
            "best_search": best["metrics"]["mean"], "best_test": test["mean"], "best_id": best["eval_id"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--evaluations", type=int, default=64)
    ap.add_argument("--runs-dir", default="runs/irt_search")
    ap.add_argument("--only", choices=list(FITNESS))
    args = ap.parse_args()
    runs = Path(args.runs_dir)
    kinds = [args.only] if args.only else list(FITNESS)
    rows = [run_row(k, args.evaluations, runs) for k in kinds]
    full = next((r for r in rows if r["fitness"] == "full"), None)
    t = Table(title=f"same search, {args.evaluations} candidates: full-split vs IRT-reduced fitness")
    for c in ("fitness", "items/candidate", "items in all (bank incl.)", "compute vs full", "search wall s",
              "best search mean", "best TEST mean"):
        t.add_column(c, justify="right")
    for r in rows:
        ratio = f"{full['items_total'] / r['items_total']:.1f}x less" if full and r is not full else "-"
        t.add_row(r["fitness"], f"{r['items_per_candidate']:.0f}", f"{r['items_total']:,}", ratio, f"{r['wall_s']:.0f}",
                  f"{100 * r['best_search']:.1f}", f"{100 * r['best_test']:.1f}")
    Console().print(t)
    (runs / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
