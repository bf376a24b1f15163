"""Search quality across zoo builds and optimizer seeds: the winner's TEST mean vs the best simple merge, the
experts' ceiling and the share of the headroom above the best simple merge that the search closed.

    python benchmarks/search_quality.py [--job zoo_demo@0-4] [--job zoo2_demo@0-2] [--seeds 0,1]
                                        [--set KEY=JSON ...] [--label NAME] [--evaluations N] [--jobs 2]
                                        [--runs-dir runs/search_quality] [--finalists] [--write-docs]

``--job JOB@ZOOSEEDS``: a job config (path or shipped name) and the zoo training seeds to run it on (``0-4``,
``0,2``; a build of seed S is the job with every ``zoo://VARIANT/`` reference turned into
``zoo://VARIANT@S/``; zoos are built on first use, about 4 min each on one core). Default: issue 33's set,
``zoo_demo@0-4`` and ``zoo2_demo@0-2``, optimizer seeds 0 and 1. ``--set space.preset=ties_attn_mlp``
(repeatable; the value is JSON where it parses, else a string) changes the job for every build, to try another
default side by side; ``--label`` names that variant's runs (default: built from the overrides).

Per build and optimizer seed, the job's search runs with ``seed: <seed>``, then its winner is scored on the
test split beside its parents, the uniform average and the best task-arithmetic and TIES merges (picked on the
search split; ``evomerge.run.demo.compare_with_baselines``, scored once per build and cached). Printed per run:
the winner's test mean, the best simple merge, the margin, the **ceiling** (the mean over skills of the best
parent's score on that skill: every expert's own skill kept) and the **share of headroom closed** = (winner -
best simple) / (ceiling - best simple); then per build and over all runs, and issue 33's targets: the winner
beats the best simple merge in every run; mean share >= 25%, and >= 10% in every build (the build's mean over
its optimizer seeds); mean margin >= +3 on the builds whose headroom is >= 10 points. Runs are kept in
``--runs-dir`` (a second call only prints; an interrupted search resumes). ``--finalists`` also scores every
finalist on the test split and says how much picking the best of them (an oracle) would add to the winner.
``--write-docs`` replaces this script's section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's per-request bars, hundreds per run
sys.path.insert(0, str(HERE))
DEFAULT_JOBS = ["zoo_demo@0-4", "zoo2_demo@0-2"]
TARGETS = {"share_mean": 0.25, "share_build_min": 0.10, "margin_mean": 3.0, "headroom_min": 10.0}


def parse_seeds(text: str) -> list[int]:
    """``0-4`` / ``0,2,3`` / ``1`` -> a list of seeds."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def parse_override(text: str) -> tuple[list[str], object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"error: --set wants KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.split("."), parsed


def job_config(job: str, zoo_seed: int, seed: int, overrides: list[str], evaluations: int | None):
    """The job for one build and optimizer seed (validated as any config is)."""
    from evomerge.run import load_run_config, run_config_from_dict

    data = load_run_config(job).model_dump(mode="json")
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    data["seed"] = seed
    if evaluations:
        data["budget"] = {"evaluations": evaluations}
    if zoo_seed:
        data = json.loads(re.sub(r"zoo://([A-Za-z0-9_]+)/", rf"zoo://\1@{zoo_seed}/", json.dumps(data)))
    return run_config_from_dict(data)


def variant_label(overrides: list[str], evaluations: int | None = None) -> str:
    """The folder name of a variant's runs: ``default``, else built from its overrides."""
    if not overrides and not evaluations:
        return "default"
    return "-".join([*(re.sub(r"[^A-Za-z0-9_.=-]+", "_", o) for o in overrides),
                     *([f"e{evaluations}"] if evaluations else [])])


def baseline_key(cfg) -> str:
    """The baselines depend on the models and the fitness only, not on the space or the optimizer."""
    d = cfg.model_dump(mode="json")
    blob = json.dumps({k: d[k] for k in ("base", "models", "fitness")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def references(rows: list[dict], tasks: list[str]) -> tuple[dict, float]:
    """From a comparison's rows: the best simple merge's row (by test mean) and the ceiling, the mean over
    ``tasks`` of the best parent's test score on each (%)."""
    parents = [r for r in rows if r["family"] == "parent"]
    simple = max((r for r in rows if r["family"] == "simple"), key=lambda r: r["test"]["mean"])
    return simple, 100 * statistics.fmean(max(p["test"][t] for p in parents) for t in tasks)


def run_one(job: str, zoo_seed: int, seed: int, overrides: list[str], evaluations: int | None, root: Path,
            baselines: Path, finalists: bool = False) -> dict:
    """One search and its test-split comparison (resumed or only re-read when the run exists)."""
    from evomerge.run import run_search
    from evomerge.run.demo import compare_with_baselines
    from evomerge.run.report import RunReport

    cfg = job_config(job, zoo_seed, seed, overrides, evaluations)
    run_dir = root / f"zoo{zoo_seed}" / f"seed{seed}"
    timing = run_dir / "wall_s.json"
    t0 = time.perf_counter()
    run_search(cfg, run_dir)  # a finished search only scores its finalists, once
    if not timing.exists():
        timing.write_text(json.dumps({"wall_s": time.perf_counter() - t0}))
    res = compare_with_baselines(run_dir, say=lambda s: None,
                                 baseline_cache=baselines / f"{baseline_key(cfg)}.json")
    report = RunReport.load(run_dir)
    tasks = res["tasks"]
    simple, ceiling = references(res["rows"], tasks)
    parents = [r for r in res["rows"] if r["family"] == "parent"]
    winner = next(r for r in res["rows"] if r["family"] == "winner")
    best_simple = 100 * simple["test"]["mean"]
    out = {"zoo_seed": zoo_seed, "seed": seed, "winner": 100 * winner["test"]["mean"],
           "winner_tasks": {t: 100 * winner["test"][t] for t in tasks}, "winner_id": res["winner_id"],
           "winner_origin": res["winner_origin"] or "optimizer", "best_simple": best_simple,
           "best_simple_model": simple["model"], "ceiling": ceiling,
           "best_parent": max(100 * p["test"]["mean"] for p in parents), "candidates": len(report.records),
           "items": sum(report.items_evaluated().values()), "wall_s": json.loads(timing.read_text())["wall_s"]}
    if finalists:
        out["best_finalist_id"], out["best_finalist"] = best_finalist(run_dir, report)
    out["margin"] = out["winner"] - best_simple
    out["headroom"] = ceiling - best_simple
    out["share"] = out["margin"] / out["headroom"] if out["headroom"] > 0 else float("nan")
    return out


def best_finalist(run_dir: Path, report) -> tuple[int, float]:
    """The finalist with the best TEST mean (an oracle pick: how much a better pick could add), scored once
    and cached in ``pareto/test_scores.json``."""
    from evomerge.execution.base import EXECUTORS
    from evomerge.recipe import recipe_from_dict
    from evomerge.run.context import worker_spec
    from evomerge.run.export import save_test_scores
    from evomerge.spaces import build_space

    ids = [int(k) for k in json.loads((run_dir / "finalists.json").read_text())["finalists"]]
    path = run_dir / "pareto" / "test_scores.json"
    known = {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}
    todo = [i for i in ids if i not in known]
    if todo:
        cfg, recs = report.config, {r["eval_id"]: r for r in report.records}
        space = build_space(cfg.space, base=cfg.base, models=cfg.models)
        with EXECUTORS.get("local")(worker_spec(cfg, space, run_dir)) as ex:
            res = list(ex.map([(i, recipe_from_dict(recs[i]["recipe"])) for i in todo], split="test"))
        scores = {i: r.objectives for i, r in res if r.status == "ok"}
        save_test_scores(run_dir, scores)
        known |= scores
    best = max(ids, key=lambda i: known[i]["mean"])
    return best, 100 * known[best]["mean"]


def run_build(job: str, zoo_seed: int, seeds: list[int], overrides: list[str], evaluations: int | None,
              root: Path, baselines: Path, threads: int, finalists: bool = False) -> list[dict]:
    """Every optimizer seed of one build, in order (the first scores and caches the build's baselines)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    rows = []
    for seed in seeds:
        print(f"{root.name} zoo {zoo_seed} seed {seed} ...", flush=True)
        rows.append({"job": job, **run_one(job, zoo_seed, seed, overrides, evaluations, root, baselines, finalists)})
    return rows


def summarize(rows: list[dict]) -> dict:
    """Per build (job, zoo seed) means, overall means and the issue-33 targets."""
    builds: dict[tuple, list[dict]] = {}
    for r in rows:
        builds.setdefault((r["job"], r["zoo_seed"]), []).append(r)
    per_build = []
    for (job, zs), rs in builds.items():
        per_build.append({"job": job, "zoo_seed": zs, "runs": len(rs),
                          **{k: statistics.fmean(r[k] for r in rs)
                             for k in ("winner", "best_simple", "ceiling", "headroom", "margin", "share")},
                          "min_margin": min(r["margin"] for r in rs)})
    wide = [b for b in per_build if b["headroom"] >= TARGETS["headroom_min"]]
    s = {"builds": per_build, "runs": len(rows),
         "share_mean": statistics.fmean(r["share"] for r in rows),
         "share_build_min": min(b["share"] for b in per_build),
         "margin_mean": statistics.fmean(r["margin"] for r in rows),
         "margin_min": min(r["margin"] for r in rows),
         "margin_mean_wide": statistics.fmean(b["margin"] for b in wide) if wide else float("nan"),
         "winner_mean": statistics.fmean(r["winner"] for r in rows),
         "winner_min": min(r["winner"] for r in rows)}
    if all("best_finalist" in r for r in rows):
        gains = [r["best_finalist"] - r["winner"] for r in rows]
        s["oracle_pick_gain"] = {"mean": statistics.fmean(gains), "max": max(gains)}
    s["targets"] = {"beats the best simple merge in every run": s["margin_min"] > 0,
                    f"mean share of headroom closed >= {TARGETS['share_mean']:.0%}":
                        s["share_mean"] >= TARGETS["share_mean"],
                    f"share >= {TARGETS['share_build_min']:.0%} in every build":
                        s["share_build_min"] >= TARGETS["share_build_min"],
                    f"mean margin >= +{TARGETS['margin_mean']:.0f} on builds with headroom >= "
                    f"{TARGETS['headroom_min']:.0f}": not wide or s["margin_mean_wide"] >= TARGETS["margin_mean"]}
    return s


def tables(rows: list[dict], s: dict) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    run_head = ["job", "zoo seed", "opt seed", "winner (test)", "winner from", "best simple merge", "margin",
                "ceiling", "share closed", "cands", "items", "wall s"]
    run_rows = [[r["job"], str(r["zoo_seed"]), str(r["seed"]), f"{r['winner']:.1f}",
                 f"{r['winner_id']} ({r['winner_origin']})", f"{r['best_simple']:.1f} ({r['best_simple_model']})",
                 f"{r['margin']:+.1f}", f"{r['ceiling']:.1f}", f"{r['share']:.0%}", str(r["candidates"]),
                 str(r["items"]), f"{r['wall_s']:.0f}"] for r in rows]
    build_head = ["job", "zoo seed", "runs", "winner", "best simple", "ceiling", "headroom", "margin (min)",
                  "share closed"]
    build_rows = [[b["job"], str(b["zoo_seed"]), str(b["runs"]), f"{b['winner']:.1f}", f"{b['best_simple']:.1f}",
                   f"{b['ceiling']:.1f}", f"{b['headroom']:.1f}", f"{b['margin']:+.1f} ({b['min_margin']:+.1f})",
                   f"{b['share']:.0%}"] for b in s["builds"]]
    build_rows.append(["all", "", str(s["runs"]), f"{s['winner_mean']:.1f} (min {s['winner_min']:.1f})", "", "",
                       "", f"{s['margin_mean']:+.1f} ({s['margin_min']:+.1f})",
                       f"{s['share_mean']:.0%} (build min {s['share_build_min']:.0%})"])
    return run_head, run_rows, build_head, build_rows


def oracle_line(s: dict) -> str:
    g = s["oracle_pick_gain"]
    return (f"the best finalist by its test score (an oracle pick) would add {g['mean']:+.1f} points to the winner "
            f"on average (at most {g['max']:+.1f})")


def markdown(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def write_docs(label: str, argv: list[str], rows: list[dict], s: dict) -> None:
    from docs_section import write_section

    run_head, run_rows, build_head, build_rows = tables(rows, s)
    lines = [f"### Search quality across zoo builds: `{label}` (`benchmarks/search_quality.py`)", "",
             f"`python benchmarks/search_quality.py {shlex.join(argv)}` on {os.cpu_count()} CPU cores. Test-split "
             "exact match %, 500 items per skill. *ceiling*: the mean over skills of the best parent's score on "
             "that skill; *share closed*: (winner - best simple merge) / (ceiling - best simple merge). Method: "
             "the script's docstring.", "", "**Per build** (means over the optimizer seeds)", "",
             *markdown(build_head, build_rows), "", "**Targets (issue 33)**", "",
             *(f"- {name}: {'yes' if ok else 'no'}" for name, ok in s["targets"].items()),
             *([f"- ({oracle_line(s)})"] if "oracle_pick_gain" in s else []), ""]
    if label == "default":  # a variant's per-run rows stay in its search_quality.json
        lines += ["**Per run**", "", *markdown(run_head, run_rows), ""]
    write_section(f"search_quality.py {label}", lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", action="append", help="JOB[@ZOOSEEDS], repeatable (default: " + " ".join(DEFAULT_JOBS))
    ap.add_argument("--seeds", default="0,1", help="optimizer seeds (default 0,1)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=JSON")
    ap.add_argument("--label", default=None, help="name of this variant's runs (default: from the overrides)")
    ap.add_argument("--evaluations", type=int, default=None, help="override the job's evaluation budget")
    ap.add_argument("--jobs", type=int, default=1, help="builds searched side by side (torch threads split)")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/search_quality"))
    ap.add_argument("--finalists", action="store_true",
                    help="also score every finalist on the test split: what an oracle pick would add")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from evomerge.run import load_run_config

    seeds = parse_seeds(args.seeds)
    label = args.label or variant_label(args.overrides, args.evaluations)
    work = []
    for spec in args.job or DEFAULT_JOBS:
        job, _, zs = spec.partition("@")
        name = load_run_config(job).name
        for zoo_seed in parse_seeds(zs or "0"):
            job_config(job, zoo_seed, seeds[0], args.overrides, args.evaluations)  # bad overrides: before compute
            work.append((job, zoo_seed, seeds, args.overrides, args.evaluations, args.runs_dir / label / name,
                         args.runs_dir / "baselines", (os.cpu_count() or 1) // args.jobs if args.jobs > 1 else 0,
                         args.finalists))
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run_build, *zip(*work)))
    else:
        results = [run_build(*w) for w in work]
    rows = [r for rs in results for r in rs]
    s = summarize(rows)
    (args.runs_dir / label).mkdir(parents=True, exist_ok=True)
    (args.runs_dir / label / "search_quality.json").write_text(json.dumps({"rows": rows, "summary": s}, indent=1))
    console = Console(width=220)
    run_head, run_rows, build_head, build_rows = tables(rows, s)
    for title, head, body in ((f"{label}: per run", run_head, run_rows), (f"{label}: per build", build_head, build_rows)):
        t = Table(title=title)
        for h in head:
            t.add_column(h, justify="left" if h in ("job", "winner from", "best simple merge") else "right")
        for r in body:
            t.add_row(*r)
        console.print(t)
    for name, ok in s["targets"].items():
        console.print(f"  target {name}: {'yes' if ok else 'NO'}")
    if "oracle_pick_gain" in s:
        console.print(f"  {oracle_line(s)}")
    if args.write_docs:
        write_docs(label, argv, rows, s)


if __name__ == "__main__":
    main()
