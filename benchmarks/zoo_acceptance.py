"""Zoo acceptance over training seeds: for each seed, build the variant's zoo (cached by settings hash), score
the base, the experts and the simple merges on the test split (`evomerge zoo report`), and say whether the
uniform average of the experts beats every expert (and the base) on the test mean.

    python benchmarks/zoo_acceptance.py --variant full --seeds 0 1 2 3 4 [--quick] [--jobs 2]

``--quick`` scores 200 items per skill instead of 500. ``--set base.steps=400`` (repeatable; the value is JSON,
e.g. ``--set 'base.calibrate={"target": 0.5}'``) tries other training settings: such zoos are built under
``--cache-dir`` (default: a folder in /tmp), never in the cache that ``zoo://`` references read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

QUICK_ITEMS = 200


def _settings(variant: str, overrides: list[str]):
    from evomerge.zoo.build import VARIANTS

    s = VARIANTS[variant].model_dump()
    for ov in overrides:
        key, _, value = ov.partition("=")
        *path, leaf = key.split(".")
        node = s
        for k in path:
            node = node[k]
        node[leaf] = json.loads(value)  # numbers, true/false, null, lists and mappings (JSON)
    return type(VARIANTS[variant]).model_validate(s)


def one_seed(variant: str, seed: int, limit: int | None, overrides: list[str], cache_dir: str | None) -> dict:
    """Build (or reuse) one seed's zoo and score it; runs in a worker process."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    import torch

    torch.set_num_threads(1)  # as the build does: on shared cores, more threads per tiny model only thrash
    import evomerge.zoo.build as build
    from evomerge.zoo.report import zoo_report

    t0 = time.time()
    if overrides:
        build.VARIANTS[variant] = _settings(variant, overrides)  # this process only
    path = build.ensure_zoo(variant, seed=seed, cache_dir=cache_dir)
    manifest = build.read_manifest(path)
    built = time.time() - t0
    rows = zoo_report(path, limit=limit)
    return {"seed": seed, "zoo": str(path), "rows": rows, "build_s": manifest.get("build_seconds"),
            "fresh_build": built > 5, "report_s": round(time.time() - t0 - built, 1)}


def verdict(rows: list[dict]) -> dict:
    base = next(r for r in rows if r["kind"] == "base")
    experts = [r for r in rows if r["kind"] == "expert"]
    merges = [r for r in rows if r["kind"] == "merge"]
    avg = next(r for r in merges if r["model"] == "average")
    best = max(merges, key=lambda r: r["mean"])
    gains = [e["scores"][e["model"]] - base["scores"][e["model"]] for e in experts]
    passed = avg["mean"] > max(e["mean"] for e in experts) and avg["mean"] > base["mean"]
    return {"base": base["mean"], "experts": {e["model"]: e["mean"] for e in experts}, "average": avg["mean"],
            "best_merge": (best["model"], best["mean"]), "min_gain": min(gains), "passed": passed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="full")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--quick", action="store_true", help=f"score {QUICK_ITEMS} test items per skill (else 500)")
    ap.add_argument("--jobs", type=int, default=1, help="seeds built in parallel (each on one core)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training setting, e.g. base.hard_fraction=0.1 (zoo goes to --cache-dir)")
    ap.add_argument("--cache-dir", default=None, help="evomerge home for the builds (default: the real cache; "
                    "with --set: /tmp/evomerge-zoo-acceptance)")
    ap.add_argument("--json", type=Path, default=None, help="also write every row as JSON")
    args = ap.parse_args(argv)
    from evomerge.zoo.build import VARIANTS

    if args.variant not in VARIANTS:
        ap.error(f"unknown variant {args.variant!r} (known: {', '.join(VARIANTS)})")
    cache_dir = args.cache_dir or ("/tmp/evomerge-zoo-acceptance" if args.overrides else None)
    limit = QUICK_ITEMS if args.quick else None
    skills = VARIANTS[args.variant].skills
    print(f"zoo acceptance: variant {args.variant}, skills {', '.join(skills)}, seeds {args.seeds}, "
          f"{'%d' % QUICK_ITEMS if args.quick else 500} test items per skill"
          + (f", overrides {args.overrides}" if args.overrides else ""), flush=True)
    jobs = [(args.variant, s, limit, args.overrides, cache_dir) for s in args.seeds]

    def done(res: dict) -> dict:  # progress: one line per seed as it finishes
        v = verdict(res["rows"])
        print(f"seed {res['seed']}: base {v['base']:.1f}, experts "
              + ", ".join(f"{k} {m:.1f}" for k, m in v["experts"].items())
              + f", average {v['average']:.1f}: {'pass' if v['passed'] else 'FAIL'} ({res['zoo']})", flush=True)
        return res

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = [done(r) for r in pool.map(one_seed, *zip(*jobs))]
    else:
        results = [done(one_seed(*j)) for j in jobs]
    head = ["seed", "base", *(f"expert {s}" for s in skills), "average", "best simple merge", "min gain",
            "pass", "build s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * (len(head) - 5) + "---|---:|:---:|---:|")
    passed = 0
    for res in results:
        v = verdict(res["rows"])
        passed += v["passed"]
        best = v["best_merge"]
        cells = [str(res["seed"]), f"{v['base']:.1f}", *(f"{v['experts'][s]:.1f}" for s in skills),
                 f"**{v['average']:.1f}**" if v["passed"] else f"{v['average']:.1f}",
                 f"{best[0]} {best[1]:.1f}", f"{v['min_gain']:+.1f}", "pass" if v["passed"] else "FAIL",
                 f"{res['build_s']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"acceptance {passed}/{len(results)} (uniform average beats every expert and the base on the test mean)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
