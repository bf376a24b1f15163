"""Search overhead per candidate: everything outside merge + evaluate (ask, decode, tell, ledger fsync,
checkpoint, executor), measured on real runs whose worker takes a fixed, known time per candidate.

    python benchmarks/search_overhead.py [--eval-s 1.0] [--evaluations 32]

Prints one row per optimizer x space: the steady-state overhead in milliseconds per candidate (between the
first and the last ledger append) and as a share of the candidate's total time (target: <= 5%), plus the
one-time setup (space/optimizer construction, worker start) apart. The worker is the synthetic one with ``sleep_s = eval_s``, so the
merge + evaluate time is exactly known and the rest of the loop is the real code path.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evomerge.run import run_config_from_dict, run_search
from evomerge.run.ledger import Ledger

CASES = [
    ("cma", {}, "ties_layerwise", {}),
    ("nevergrad", {"name": "TwoPointsDE"}, "ties_layerwise", {}),
    ("optuna", {"sampler": "tpe"}, "ties_layerwise", {}),
    ("optuna", {"sampler": "nsga2"}, "method_choice", {}),
    ("random", {}, "ties_layerwise", {}),
    ("cma", {}, "ties_attn_mlp", {"num_layers": 32}),  # a Llama-8B-sized space: 3 x (2 + 64 x 2) = 390 dims
]


def measure(opt, opts, space, space_kw, eval_s, evaluations, workdir):
    cfg = run_config_from_dict({
        "name": "overhead", "seed": 0, "base": "/m/base", "models": ["/m/a", "/m/b", "/m/c"],
        "space": {"preset": space, "num_layers": 8, **space_kw},
        "fitness": {"kind": "synthetic", "tasks": ["a", "b"], "sleep_s": eval_s},
        "objectives": [{"metric": "a"}, {"metric": "b"}] if opt == "optuna" and opts.get("sampler") == "nsga2"
        else [{"metric": "mean"}],
        "optimizer": {"name": opt, "population": 8, "options": opts},
        "budget": {"evaluations": evaluations},
    })
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    t0 = time.perf_counter()
    t0_wall = time.time()
    run_search(cfg, run_dir)
    wall = time.perf_counter() - t0
    recs = Ledger(run_dir / "ledger.jsonl").records()
    work = [r["timings"].get("merge_s", 0) + r["timings"].get("eval_s", 0) for r in recs]
    dims = len(recs[0]["point"])
    # steady state: between the first and the last ledger append (one-time setup excluded, reported apart)
    span = recs[-1]["time"] - recs[0]["time"]
    over = (span - sum(work[1:])) / (len(recs) - 1)
    setup = (recs[0]["time"] - t0_wall) - work[0]
    return dims, over, over / (over + eval_s), setup, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval-s", type=float, default=1.0, help="simulated merge+evaluate seconds per candidate")
    ap.add_argument("--evaluations", type=int, default=32)
    args = ap.parse_args()
    t = Table(title=f"search overhead per candidate (merge+evaluate = {args.eval_s:.2f} s, "
                    f"{args.evaluations} evaluations, population 8)")
    for c in ("optimizer", "space", "dims", "overhead ms/cand.", "share", "<= 5%", "setup s", "wall s"):
        t.add_column(c, justify="right")
    with tempfile.TemporaryDirectory() as work:
        measure("random", {}, "ties_layerwise", {}, 0.0, 8, work)  # warm-up: imports are not search overhead
        for opt, opts, space, kw in CASES:
            dims, over, share, setup, wall = measure(opt, opts, space, kw, args.eval_s, args.evaluations, work)
            label = opt + (f" {next(iter(opts.values()))}" if opts else "")
            t.add_row(label, space + (" (32 layers)" if kw else ""), str(dims), f"{1000 * over:.1f}",
                      f"{100 * share:.2f}%", "ok" if share <= 0.05 else "MISSED", f"{setup:.2f}", f"{wall:.1f}")
    Console().print(t)


if __name__ == "__main__":
    main()
