"""The demo search with full-split fitness and with reduced fitness, at an equal candidate budget, over seeds.

    python benchmarks/irt_search.py [--job zoo_demo] [--evaluations 64] [--only ROW,...] [--seeds 0,1,2]
                                    [--quick] [--runs-dir runs/irt_search] [--bank DIR]
                                    [--space YAML] [--finalist-items N]

Rows (``--job``: the demo search ``zoo_demo`` by default, CMA-ES on the full zoo; ``zoo2_demo`` is the
same search on the second zoo; ``--space`` replaces the job's space, e.g. by the previous demo space the
docs/benchmarks.md tables were measured on, and ``--finalist-items`` the finalists' items per task; the row's fitness
replaces the job's):

- ``full``: every search item (1000 per skill);
- ``subset_mean``: one fixed sample of 100 random items per skill;
- ``resample``: 100 random items per skill, a new sample for every generation (the demos' fitness);
- ``resample_20``: the same with 20 items per skill, and the top 4 finalists on 400 fresh items per skill (the
  row's own setting, not ``--finalist-items``): 8,640 items in all, within the issue-17 budget (>= 20x fewer
  than the full split at 64 candidates);
- ``soft_20``: ``resample_20`` on the graded score ``p_gold`` (``fitness.metric``) of the search tasks'
  loglikelihood twins (``zoo_add_ll``, ...; the test split is still exact match);
- ``soft_20_c128``: the same with 128 candidates and the top 4 on 160 fresh items per skill (9,600 items);
- ``soft_10_c256`` / ``resample_10_c256``: 10 items per skill per generation (graded / 0/1), CMA-ES population
  16, 256 candidates, the top 4 on 160 fresh items per skill (9,600 items): more, cheaper candidates;
- ``adaptive_bank``: adaptive IRT, 20 items per skill in 4 rounds, bank built up front (base, parents, 15
  random merges, 15 random points of the space, all on the full split: counted);
- ``online``: adaptive IRT on the online bank (base + parents on a 100-item pool per skill, refitted every
  generation from every candidate's answers), 20 items per skill, the whole pool for a candidate whose
  estimate beats the best so far;
- ``online_race``: the same with racing: 8 items per skill, then 20, then 40 while estimate + se reaches the
  3rd best value so far, then the pool (the default settings of ``bank: online``);
- ``online_race_p200``: racing on a 200-item pool per skill, never the whole pool: every value is an IRT
  estimate from at most 40 adaptive items per skill (no exact pool score to overfit);
- ``fresh_items``: 100 items per skill drawn anew for every candidate (independent samples: nothing fixed to
  overfit, the same cost as ``subset_mean``); an experiment, not a fitness users get: the benchmark swaps the
  online bank's request for a per-candidate sample (seeded by the order candidates are sent, so a resumed row
  draws other items).

Columns: items evaluated in all INCLUDING every bank evaluation (seed rows, up-front bank) and the finalists'
fresh items (``finalists`` in the run config: the top 5 re-scored on fresh items per skill), search wall
time, the winner's TEST mean (500 unseen items per skill), per seed and mean +- std over seeds, and the TEST
mean of the candidate with the best told value (the winner without finalists).
Each (row, seed) is cached in ``--runs-dir/ROW-seedS/result.json`` (``--runs-dir/JOB/ROW-seedS`` for another
job): rows run separately (one per core) and a killed benchmark resumes (a run dir without result.json is
resumed by ``run_search``). ``--quick``: 24 candidates, runs in ``--runs-dir``-quick.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import statistics
import time
from pathlib import Path

import yaml

# the demo's space until the per-layer attention / MLP one (the irt_search tables of docs/benchmarks.md were measured on it)
PREVIOUS_DEMO_SPACE = "{preset: task_arithmetic_layerwise, weight: {low: 0.0, high: 1.0, default: 0.333}}"

FITNESS = {
    "full": {"estimator": "full"},
    "subset_mean": {"estimator": "subset_mean", "anchors": "random", "items_per_task": 100, "population": 0},
    "resample": {"estimator": "subset_mean", "anchors": "random", "items_per_task": 100, "population": 0,
                 "resample": "generation"},
    "resample_20": {"estimator": "subset_mean", "anchors": "random", "items_per_task": 20, "population": 0,
                    "resample": "generation"},
    "adaptive_bank": {"estimator": "adaptive", "anchors": "kmeans_correct", "items_per_task": 20,
                      "population": 30, "irt_dim": 5, "bank": "build"},
    "online": {"estimator": "adaptive", "bank": "online", "online": {"pool_per_task": 100},
               "fidelity": {"levels": [20], "top_k": 1, "z": 0.0}},
    "online_race": {"estimator": "adaptive", "bank": "online", "online": {"pool_per_task": 100},
                    "fidelity": {"levels": [8, 20, 40], "top_k": 3, "z": 1.0}},
    "online_race_p200": {"estimator": "adaptive", "bank": "online", "online": {"pool_per_task": 200},
                         "fidelity": {"levels": [8, 20, 40], "top_k": 3, "z": 1.0, "full_pool": False}},
    "fresh_items": {"estimator": "adaptive", "bank": "online", "online": {"pool_per_task": 100}},
}
FITNESS["soft_20"] = {**FITNESS["resample_20"], "metric": "p_gold"}
FITNESS["soft_20_c128"] = FITNESS["soft_20"]
FITNESS["soft_10_c256"] = {**FITNESS["soft_20"], "items_per_task": 10}
FITNESS["resample_10_c256"] = {**FITNESS["resample_20"], "items_per_task": 10}
ROW_FINALISTS = {"resample_20": {"top": 4, "items_per_task": 400}, "soft_20": {"top": 4, "items_per_task": 400},
                 "soft_20_c128": {"top": 4, "items_per_task": 160}, "soft_10_c256": {"top": 4, "items_per_task": 160},
                 "resample_10_c256": {"top": 4, "items_per_task": 160}}
# rows with their own candidate budget / CMA-ES population (the table's "fewer than full" stays relative to
# the full split at --evaluations candidates)
ROW_BUDGET = {"soft_20_c128": {"evaluations": 128}, "soft_10_c256": {"evaluations": 256, "population": 16},
              "resample_10_c256": {"evaluations": 256, "population": 16}}
FRESH_ITEMS = 100  # per skill and candidate, the fresh_items row
FULL_ITEMS = 1000  # search-split items per skill


def config(kind: str, evaluations: int, bank: str | None = None, seed: int = 0, job: str = "zoo_demo",
           space: dict | None = None, finalist_items: int | None = None):
    from evomerge.run import load_run_config, run_config_from_dict

    data = load_run_config(job).model_dump(mode="json")
    if space:
        data["space"] = space
    if kind in ROW_FINALISTS:
        data["finalists"] = ROW_FINALISTS[kind]
    elif finalist_items:
        data["finalists"] = {**data.get("finalists", {}), "items_per_task": finalist_items}
    # the rows compare fitness estimators with one final step, the one they were measured with: no
    # recommendation (run/recommend.py; at 20 items per skill per generation CMA-ES's mean was no better)
    data["finalists"] = {**data.get("finalists", {}), "recommended": False}
    data["name"] = f"irt_search_{kind}"
    data["seed"] = seed
    drop = ("estimator", "anchors", "items_per_task", "population", "bank", "online", "fidelity", "resample")
    data["fitness"] = {k: v for k, v in data["fitness"].items() if k not in drop} | FITNESS[kind]
    if FITNESS[kind].get("metric") == "p_gold":  # scored on the search tasks' loglikelihood twins
        data["fitness"]["tasks"] = [f"{t}_ll" for t in data["fitness"]["tasks"]]
    data["budget"] = {"evaluations": ROW_BUDGET.get(kind, {}).get("evaluations", evaluations)}
    if "population" in ROW_BUDGET.get(kind, {}):
        data["optimizer"]["population"] = ROW_BUDGET[kind]["population"]
    if bank and kind == "adaptive_bank":
        data["fitness"]["bank"] = bank
    return run_config_from_dict(data)


def bank_items(cfg, run_dir: Path) -> tuple[int, int]:
    """(models, items) the fitness evaluated for its item bank in this run (0 for a reused bank)."""
    import numpy as np

    f = cfg.fitness
    seed = run_dir / "item_bank" / "online_seed.json"
    if f.get("bank") == "online" and seed.exists():
        rows = json.loads(seed.read_text())["rows"]
        return len(rows), sum(len(v) for row in rows.values() for v in row.values())
    if f.get("bank") == "build" and (run_dir / "item_bank" / "bank.npz").exists():
        resp = np.load(run_dir / "item_bank" / "bank.npz")["responses"]
        return resp.shape[0], int((~np.isnan(resp)).sum())
    return 0, 0


@contextlib.contextmanager
def fresh_item_requests(items_per_task: int):
    """Every candidate answers its own seeded random sample of the search split (``fresh_items`` row)."""
    from evomerge.fitness.online.request import FitnessRequest
    from evomerge.run.online import OnlineFitness

    sent = itertools.count()
    original = OnlineFitness.request, OnlineFitness.prepare
    OnlineFitness.request = lambda self, n_fit, n_rank: FitnessRequest(
        pool_per_task=items_per_task, seed=1_000_003 * self.fcfg.seed + next(sent))
    OnlineFitness.prepare = lambda self: None  # no seed rows: nothing is fitted
    try:
        yield
    finally:
        OnlineFitness.request, OnlineFitness.prepare = original


def run_row(kind: str, evaluations: int, runs_dir: Path, bank: str | None, seed: int, job: str = "zoo_demo",
            space: dict | None = None, finalist_items: int | None = None) -> dict:
    """Run (or load) one row's search for one seed; a search cached before finalists existed gets them
    scored now (its config's ``finalists`` defaults apply; the search itself is finished, nothing else runs)."""
    from evomerge.run import resume, run_search

    run_dir = runs_dir / f"{kind}-seed{seed}"
    result = run_dir / "result.json"
    cached = json.loads(result.read_text()) if result.exists() else None
    if cached is not None and "told_test" in cached:
        return cached
    patch = fresh_item_requests(FRESH_ITEMS) if kind == "fresh_items" else contextlib.nullcontext()
    cfg = config(kind, evaluations, bank, seed, job, space, finalist_items)
    t0 = time.perf_counter()
    with patch:
        if cached is None:
            run_search(cfg, run_dir)
        else:
            resume(run_dir)
    wall = time.perf_counter() - t0 + (cached["wall_s"] if cached else 0.0)
    row = summarise(kind, seed, run_dir, wall)
    result.write_text(json.dumps(row, indent=1))
    return row


def summarise(kind: str, seed: int, run_dir: Path, wall: float) -> dict:
    """A row's numbers: items (search, bank, finalists), the winner's and the best told value's TEST mean."""
    from evomerge.run.export import evaluate_on_test
    from evomerge.run.report import RunReport

    report = RunReport.load(run_dir)
    best, told = report.best(), report.ranked()[0]
    test = evaluate_on_test(report, [best, told])
    items = report.items_evaluated()
    n_bank_models, n_bank = bank_items(report.config, run_dir) if kind != "fresh_items" else (0, 0)
    return {"fitness": kind, "seed": seed, "candidates": len(report.records), "items_search": items["candidates"],
            "bank_models": n_bank_models, "bank_items": n_bank, "items_finalists": items["finalists"],
            "items_total": items["candidates"] + n_bank + items["finalists"], "wall_s": wall,
            "best_search": best["metrics"]["mean"], "best_test": test[best["eval_id"]]["mean"],
            "best_id": best["eval_id"], "best_fidelity": best.get("fidelity"),
            "told_id": told["eval_id"], "told_test": test[told["eval_id"]]["mean"]}


def _ms(xs: list[float], fmt: str) -> str:
    return (fmt.format(xs[0]) if len(xs) == 1 else
            f"{fmt.format(statistics.mean(xs))} +- {fmt.format(statistics.stdev(xs))}")


def table(rows: list[dict], evaluations: int, job: str) -> str:
    full_items = evaluations * 3 * FULL_ITEMS
    out = [f"{job}: same search, {evaluations} candidates (items in all include every bank evaluation; "
           f"full split = {full_items:,})", "",
           "| fitness | seeds | items in all | fewer than full | search wall s | best search mean | winner TEST mean |"
           " per seed | best told value's TEST mean |", "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for kind in dict.fromkeys(r["fitness"] for r in rows):
        rs = [r for r in rows if r["fitness"] == kind]
        items = [r["items_total"] for r in rs]
        out.append(f"| {kind} | {','.join(str(r['seed']) for r in rs)} | {_ms(items, '{:,.0f}')} | "
                   f"{full_items / statistics.mean(items):.1f}x | {_ms([r['wall_s'] for r in rs], '{:.0f}')} | "
                   f"{_ms([100 * r['best_search'] for r in rs], '{:.1f}')} | "
                   f"{_ms([100 * r['best_test'] for r in rs], '{:.1f}')} | "
                   f"{' / '.join('{:.1f}'.format(100 * r['best_test']) for r in rs)} | "
                   f"{_ms([100 * r.get('told_test', r['best_test']) for r in rs], '{:.1f}')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", default="zoo_demo", help="the search: a shipped experiment name (3 tasks)")
    ap.add_argument("--evaluations", type=int, default=None)
    ap.add_argument("--runs-dir", default="runs/irt_search")
    ap.add_argument("--only", help=f"comma-separated rows (default all: {', '.join(FITNESS)})")
    ap.add_argument("--seeds", default="0", help="comma-separated run seeds (the optimizer's trajectory varies)")
    ap.add_argument("--quick", action="store_true", help="24 candidates (runs kept apart from full-size ones)")
    ap.add_argument("--bank", help="an up-front item bank for the adaptive_bank row (else it builds one)")
    ap.add_argument("--print-only", action="store_true", help="print the cached rows, run nothing")
    ap.add_argument("--space", help="the job's space replaced by this one: a YAML mapping (e.g. the previous demo "
                    f"space, {PREVIOUS_DEMO_SPACE!r}); runs kept in --runs-dir/space-HASH")
    ap.add_argument("--finalist-items", type=int, help="finalists.items_per_task (default: the config's; the "
                    "docs/benchmarks.md tables: 200)")
    args = ap.parse_args()
    space = yaml.safe_load(args.space) if args.space else None
    if space is not None and not isinstance(space, dict):
        raise SystemExit(f"error: --space must be a YAML mapping, got {args.space!r}")
    evaluations = args.evaluations or (24 if args.quick else 64)
    runs = Path(args.runs_dir + ("-quick" if args.quick else ""))
    runs = runs if args.job == "zoo_demo" else runs / args.job
    if space:
        runs = runs / ("space-" + hashlib.sha256(json.dumps(space, sort_keys=True).encode()).hexdigest()[:8])
    kinds = args.only.split(",") if args.only else list(FITNESS)
    unknown = [k for k in kinds if k not in FITNESS]
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)} (known: {', '.join(FITNESS)})")
    seeds = [int(x) for x in args.seeds.split(",")]
    rows = []
    for k in kinds:
        for s in seeds:
            cached = runs / f"{k}-seed{s}" / "result.json"
            if args.print_only:
                if cached.exists():
                    rows.append(json.loads(cached.read_text()))
            else:
                rows.append(run_row(k, evaluations, runs, args.bank, s, args.job, space, args.finalist_items))
    print(table(rows, evaluations, args.job))
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
