"""Merge threads that help and never hurt: one candidate merged into a live model at 1 and 2 threads, quiet and
beside a competing CPU load, side by side in one run.

    python benchmarks/merge_threads.py [--size 60m] [--dtypes float32,bfloat16] [--load 2] [--write-docs]

The model sets are ``benchmarks/worker_scale.py``'s (a Qwen2-shaped base and three fine-tunes, built once under
--root). Each measurement runs in a fresh subprocess: ``InMemoryMerger.merge_into`` of worker_scale's per-layer
recipe (task arithmetic, TIES, DARE-TIES), 5 merges, the median wall time of the last 4 and the CPU seconds per
merge. Three ways to run at most 2 threads:

- ``1 thread``: torch on one thread;
- ``2 torch threads``: torch's own intra-op threads on every op (what evomerge did before merge threads:
  ``InMemoryMerger(threads=1)`` with ``torch.set_num_threads(2)``);
- ``2 merge threads``: tensors merged side by side, each on a thread running torch on one thread
  (``InMemoryMerger(threads=2)``, the default on 2 threads).

*loaded*: the same, while ``--load`` processes each spin a core (a shared node, or other workers on it). The
speed-up columns are the 1-thread time over each 2-thread time in the same condition; above 1 helps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from docs_section import write_section  # noqa: E402
from worker_scale import build_set, recipes, run_child, SIZES  # noqa: E402

SETTINGS = {"1 thread": (1, 1), "2 torch threads": (2, 1), "2 merge threads": (2, 2)}  # (torch, merge threads)

_CHILD = r"""
import json, statistics, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
from transformers import AutoModelForCausalLM
from evomerge.merge import InMemoryMerger
from evomerge.recipe import recipe_from_yaml
r = recipe_from_yaml(sys.argv[1])
merger = InMemoryMerger(r.sources(), threads=int(sys.argv[3]))
model = AutoModelForCausalLM.from_pretrained(r.base, dtype=merger.dtype).eval()
wall, cpu = [], []
for _ in range(5):
    t, c = time.perf_counter(), time.process_time()
    merger.merge_into(r, model)
    wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
print(json.dumps({"wall": statistics.median(wall[1:]), "cpu": statistics.median(cpu[1:])}))
"""


def spin(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def measure(recipe_path: str, setting: str) -> dict:
    torch_threads, merge_threads = SETTINGS[setting]
    return run_child(_CHILD, recipe_path, str(torch_threads), str(merge_threads))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="60m", choices=sorted(SIZES))
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--methods", default="task_arithmetic,ties,dare_ties")
    ap.add_argument("--load", type=int, default=2, help="busy processes beside the loaded measurements")
    ap.add_argument("--root", default=str(Path.home() / ".cache" / "evomerge" / "bench-models"))
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    rows, raw = [], []
    for dtype in args.dtypes.split(","):
        models = build_set(Path(args.root), args.size, dtype)
        all_recipes = recipes(models, SIZES[args.size]["num_hidden_layers"])
        for method in args.methods.split(","):
            path = Path(args.root) / f"{args.size}-{dtype}-{method}.yaml"
            path.write_text(all_recipes[method])
            res = {}
            for cond in ("quiet", "loaded"):
                procs = spin(args.load) if cond == "loaded" else []
                try:
                    for setting in SETTINGS:
                        res[cond, setting] = measure(str(path), setting)
                finally:
                    for p in procs:
                        p.kill()
                        p.wait()
            raw.append({"method": method, "dtype": dtype, **{f"{c}/{s}": v for (c, s), v in res.items()}})
            for cond in ("quiet", "loaded"):
                one = res[cond, "1 thread"]["wall"]
                cells = [method, dtype, cond]
                cells += [f"{res[cond, s]['wall']:.2f} s ({res[cond, s]['cpu']:.1f})" for s in SETTINGS]
                cells += [f"{one / res[cond, s]['wall']:.2f}x" for s in list(SETTINGS)[1:]]
                rows.append(cells)
                print(" | ".join(cells), flush=True)
    header = ["method", "dtype", "box", *SETTINGS, *(f"speed-up, {s}" for s in list(SETTINGS)[1:])]
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"seconds per merge (CPU s), {args.size}; loaded: {args.load} busy processes")
    for h in header:
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(*r)
    Console(width=160).print(t)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "merge_threads.json").write_text(json.dumps({"args": vars(args), "rows": raw}, indent=1))
    if args.write_docs:
        write_docs(header, rows, args)


def write_docs(header, rows, args) -> None:
    """This script's section of docs/benchmarks.md, between its markers, replaced."""
    import platform

    lines = ["## Merge threads, quiet and under load (`benchmarks/merge_threads.py`)", "",
             "Seconds per candidate merged into a live model (median of 4 after the first; CPU seconds in "
             "brackets) at one thread, at two torch intra-op threads (evomerge before merge threads), and at two "
             "merge threads (tensors side by side, torch on one thread each: the default now); quiet, and beside "
             f"{args.load} processes that each spin a core. Speed-up: the 1-thread time over the 2-thread time in "
             "the same condition.", "",
             f"Measured by `python benchmarks/merge_threads.py --size {args.size} --dtypes {args.dtypes} --load "
             f"{args.load} --write-docs` on {os.cpu_count()} CPU cores ({platform.machine()}, no GPU).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    write_section("merge_threads.py", lines)


if __name__ == "__main__":
    main()
