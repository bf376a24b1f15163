"""The same search with full-split fitness and with IRT-reduced fitness, at an equal candidate budget.

    python benchmarks/irt_search.py [--evaluations 64] [--only KIND,...] [--seeds 0,1,2] [--runs-dir runs/irt_search]
                                    [--bank DIR]

Each row is the README demo search (TIES per 2-layer group, CMA-ES, seed 0, full zoo) with one fitness:
``full`` (all 1000 search items per skill), ``gpirt`` (20 k-means/IRT anchors per skill, item bank fitted on the
base, the parents and 16 random merges), ``subset_mean`` (100 random items per skill, the demo's choice) and
``adaptive`` (20 items per skill asked in 4 adaptive rounds; bank: base, parents, 15 random merges and 15
random points of the search space).
Printed: items evaluated per candidate and in all (item-bank fitting included; a reused bank is counted too,
and shown apart), search wall time, the best candidate's search-split score and its **test**-split mean (500
unseen items per skill). Runs are kept in ``--runs-dir``, so a second call only prints (``--only`` runs one row,
e.g. one per core in parallel).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evomerge.fitness import ItemBank
from evomerge.run import load_run_config, run_config_from_dict, run_search
from evomerge.run.export import evaluate_on_test
from evomerge.run.report import RunReport

FITNESS = {
    "full": {"estimator": "full"},
    "gpirt": {"estimator": "gpirt", "anchors": "kmeans_irt", "items_per_task": 20, "population": 16},
    "subset_mean": {"estimator": "subset_mean", "anchors": "random", "items_per_task": 100, "population": 0},
    "adaptive": {"estimator": "adaptive", "anchors": "kmeans_correct", "items_per_task": 20, "population": 30,
                 "irt_dim": 5},
}
FULL_ITEMS = 1000  # search-split items per skill


def config(kind: str, evaluations: int, bank: str | None = None, seed: int = 0):
    data = load_run_config("zoo_demo").model_dump(mode="json")
    data["name"] = f"irt_search_{kind}"
    data["seed"] = seed
    data["fitness"] = {k: v for k, v in data["fitness"].items()
                       if k not in ("estimator", "anchors", "items_per_task", "population")} | FITNESS[kind]
    data["budget"] = {"evaluations": evaluations}
    if bank and FITNESS[kind].get("population"):
        data["fitness"]["bank"] = bank
    return run_config_from_dict(data)


def run_row(kind: str, evaluations: int, runs_dir: Path, bank: str | None, seed: int = 0) -> dict:
    if bank is None and seed != 0 and (runs_dir / kind / "item_bank" / "bank.json").exists():
        bank = str(runs_dir / kind / "item_bank")  # later seeds reuse the bank the seed-0 run built
    cfg = config(kind, evaluations, bank if bank and Path(bank, "bank.json").exists() else None, seed)
    run_dir = runs_dir / (kind if seed == 0 else f"{kind}-seed{seed}")
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
    bank_dir = cfg.fitness.get("bank") or (run_dir / "item_bank")
    bank_models = len(ItemBank.load(bank_dir).models) if Path(bank_dir, "bank.json").exists() else 0
    bank_items = bank_models * FULL_ITEMS * n_tasks
    total = sum(per_cand) + bank_items
    return {"fitness": kind, "seed": seed, "bank_reused": bool(cfg.fitness.get("bank")),
            "candidates": len(report.records),
            "items_per_candidate": sum(per_cand) / len(per_cand), "items_total": total, "bank_models": bank_models,
            "bank_items": bank_items, "wall_s": json.loads(timing.read_text())["search_wall_s"],
            "best_search": best["metrics"]["mean"], "best_test": test["mean"], "best_id": best["eval_id"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--evaluations", type=int, default=64)
    ap.add_argument("--runs-dir", default="runs/irt_search")
    ap.add_argument("--only", help=f"comma-separated rows to run (default all: {', '.join(FITNESS)})")
    ap.add_argument("--seeds", default="0", help="comma-separated run seeds (the optimizer's trajectory varies)")
    ap.add_argument("--bank", help="an item bank for the IRT rows (e.g. benchmarks/irt_error.py --save-bank); "
                                   "default: the seed-0 run builds one, later seeds reuse it")
    args = ap.parse_args()
    runs = Path(args.runs_dir)
    kinds = args.only.split(",") if args.only else list(FITNESS)
    unknown = [k for k in kinds if k not in FITNESS]
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)} (known: {', '.join(FITNESS)})")
    seeds = [int(x) for x in args.seeds.split(",")]
    rows = [run_row(k, args.evaluations, runs, args.bank, s) for k in kinds for s in seeds]
    full = next((r for r in rows if r["fitness"] == "full" and r["seed"] == 0), None)
    t = Table(title=f"same search, {args.evaluations} candidates: full-split vs IRT-reduced fitness")
    for c in ("fitness", "seed", "items/candidate", "bank models", "items in all (bank incl.)", "compute vs full",
              "search items (bank reused)", "vs full", "search wall s", "best search mean", "best TEST mean"):
        t.add_column(c, justify="right")
    for r in rows:
        search_items = r["items_total"] - r["bank_items"]
        ratio = f"{full['items_total'] / r['items_total']:.1f}x less" if full and r is not full else "-"
        ratio_reused = f"{full['items_total'] / search_items:.1f}x less" if full and r is not full else "-"
        t.add_row(r["fitness"], str(r["seed"]), f"{r['items_per_candidate']:.0f}",
                  f"{r['bank_models']}{' (reused)' if r['bank_reused'] else ''}", f"{r['items_total']:,}", ratio,
                  f"{search_items:,}", ratio_reused, f"{r['wall_s']:.0f}", f"{100 * r['best_search']:.1f}",
                  f"{100 * r['best_test']:.1f}")
    con = Console(width=200)
    con.print(t)
    if len(seeds) > 1:
        for k in kinds:
            tests = [100 * r["best_test"] for r in rows if r["fitness"] == k]
            con.print(f"{k}: best TEST mean over seeds {', '.join(f'{x:.1f}' for x in tests)} -> mean "
                      f"{sum(tests) / len(tests):.1f}")
    (runs / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
