"""Search quality over optimizer seeds: the winner's TEST mean vs the best parent and the best simple merge.

    python benchmarks/search_quality.py [--job zoo_demo] [--job experiments/zoo2_demo.yaml] [--seeds 0,1,2,3,4]
                                        [--quick] [--evaluations N] [--runs-dir runs/search_quality]

For each job (default: the demo) and seed, the job's search runs with ``seed: <seed>`` (the fitness items are
the job's own: the same for every seed), then its winner is scored on the test split beside its parents, the
uniform average and the best task-arithmetic and TIES merges (picked on the search split) by the demo's own
comparison (``evomerge.run.demo.compare_with_baselines``; the baselines are scored once per job and cached).
Printed per seed: the winner's test mean (and where it came from), best parent, best simple merge, winner -
best simple, candidates and items evaluated (the finalists' fresh items included), search wall time; then
mean +- std and min over the seeds, and the issue-16 targets (winner beats the best simple merge in every
seed, by >= 5 points on average; std <= 1.5; min >= seed-0 result - 2). ``--quick``: seeds 0,1 with 24
evaluations. Runs are kept in ``--runs-dir``: a second call only prints, after scoring the finalists of a
search finished before they existed (and an interrupted search resumes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evomerge.run import load_run_config, run_config_from_dict, run_search
from evomerge.run.demo import compare_with_baselines
from evomerge.run.report import RunReport


def job_config(job: str, seed: int, evaluations: int | None):
    data = load_run_config(job).model_dump(mode="json")
    data["seed"] = seed
    if evaluations:
        data["budget"] = {"evaluations": evaluations}
    return run_config_from_dict(data)


def run_seed(job: str, seed: int, evaluations: int | None, root: Path) -> dict:
    cfg = job_config(job, seed, evaluations)
    run_dir = root / f"seed{seed}"
    timing = run_dir / "wall_s.json"
    t0 = time.perf_counter()
    run_search(cfg, run_dir)  # a finished search only scores its finalists, once
    if not timing.exists():
        timing.write_text(json.dumps({"wall_s": time.perf_counter() - t0}))
    res = compare_with_baselines(run_dir, say=lambda s: None, baseline_cache=root / "baselines.json")
    report = RunReport.load(run_dir)
    test = {r["family"]: [] for r in res["rows"]}
    for r in res["rows"]:
        test[r["family"]].append((100 * r["test"]["mean"], r["model"]))
    return {"seed": seed, "winner": test["winner"][0][0], "winner_id": res["winner_id"],
            "winner_origin": res["winner_origin"] or "optimizer", "best_parent": max(test["parent"]),
            "best_simple": max(test["simple"]), "candidates": len(report.records),
            "items": sum(report.items_evaluated().values()),
            "wall_s": json.loads(timing.read_text())["wall_s"]}


def summary(rows: list[dict]) -> dict:
    def stats(xs):
        return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "min": min(xs)}

    win = [r["winner"] for r in rows]
    margins = [r["winner"] - r["best_simple"][0] for r in rows]
    seed0 = next((r["winner"] for r in rows if r["seed"] == 0), None)
    s = {"winner": stats(win), "best_parent": stats([r["best_parent"][0] for r in rows]),
         "best_simple": stats([r["best_simple"][0] for r in rows]), "margin": stats(margins)}
    s["targets"] = {"beats best simple merge in every seed": all(m > 0 for m in margins),
                    "by >= 5 points on average": s["margin"]["mean"] >= 5.0,
                    "std <= 1.5": s["winner"]["std"] <= 1.5,
                    "min >= seed-0 - 2": seed0 is None or s["winner"]["min"] >= seed0 - 2.0}
    return s


def markdown(job: str, rows: list[dict], s: dict) -> str:
    """The table as markdown (docs/benchmarks.md's form)."""
    out = [f"| {job} seed | winner (test) | winner from | best parent | best simple merge | winner - simple | "
           "candidates | items | wall s |", "|---:|---:|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['seed']} | {r['winner']:.1f} | {r['winner_id']} ({r['winner_origin']}) | "
                   f"{r['best_parent'][0]:.1f} ({r['best_parent'][1]}) | {r['best_simple'][0]:.1f} ({r['best_simple'][1]}) | "
                   f"{r['winner'] - r['best_simple'][0]:+.1f} | {r['candidates']} | {r['items']} | {r['wall_s']:.0f} |")
    fmt = (lambda k: f"{s[k]['mean']:.1f} +- {s[k]['std']:.1f} (min {s[k]['min']:.1f})")
    out.append(f"| all | {fmt('winner')} | | {fmt('best_parent')} | {fmt('best_simple')} | "
               f"{s['margin']['mean']:+.1f} (min {s['margin']['min']:+.1f}) | | | |")
    return "\n".join(out)


def print_job(console: Console, job: str, rows: list[dict], s: dict) -> None:
    t = Table(title=f"search quality: {job} (test-split mean exact match %, {len(rows)} optimizer seeds)")
    for col in ("seed", "winner", "from", "best parent", "best simple", "win-simple", "cands", "items", "wall s"):
        t.add_column(col, justify="left" if col in ("from", "best parent", "best simple") else "right")
    for r in rows:
        t.add_row(str(r["seed"]), f"{r['winner']:.1f}", f"{r['winner_id']} ({r['winner_origin']})",
                  f"{r['best_parent'][0]:.1f} ({r['best_parent'][1]})", f"{r['best_simple'][0]:.1f} ({r['best_simple'][1]})",
                  f"{r['winner'] - r['best_simple'][0]:+.1f}", str(r["candidates"]), str(r["items"]), f"{r['wall_s']:.0f}")
    fmt = (lambda k: f"{s[k]['mean']:.1f}+-{s[k]['std']:.1f} min {s[k]['min']:.1f}")
    t.add_row("all", fmt("winner"), "", fmt("best_parent"), fmt("best_simple"),
              f"{s['margin']['mean']:+.1f} min {s['margin']['min']:+.1f}", "", "", "")
    console.print(t)
    for name, ok in s["targets"].items():
        console.print(f"  target {name}: {'yes' if ok else 'NO'}")
    console.print(markdown(job, rows, s), soft_wrap=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", action="append", help="a job config (path or shipped name); repeatable; default zoo_demo")
    ap.add_argument("--seeds", default=None, help="optimizer seeds, comma-separated (default 0,1,2,3,4)")
    ap.add_argument("--evaluations", type=int, default=None, help="override the job's evaluation budget")
    ap.add_argument("--quick", action="store_true", help="seeds 0,1 and 24 evaluations")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/search_quality"))
    args = ap.parse_args()
    seeds = [int(s) for s in (args.seeds or ("0,1" if args.quick else "0,1,2,3,4")).split(",")]
    evaluations = args.evaluations or (24 if args.quick else None)
    console = Console(width=200)
    for job in args.job or ["zoo_demo"]:
        name = load_run_config(job).name + (f"-e{evaluations}" if evaluations else "")
        root = args.runs_dir / name
        rows = []
        for seed in seeds:
            console.print(f"{name} seed {seed} ...")
            rows.append(run_seed(job, seed, evaluations, root))
        s = summary(rows)
        (root / "search_quality.json").write_text(json.dumps({"job": job, "rows": rows, "summary": s}, indent=1))
        print_job(console, name, rows, s)


if __name__ == "__main__":
    main()
