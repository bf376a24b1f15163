"""How close each merge method comes to the memory-bandwidth bound, in float32 and bfloat16, at 1 and 2 threads,
on a quiet box and beside a competing CPU load, and how it compares with mergekit; side by side in one run.

    python benchmarks/merge_bandwidth.py [--size 250m] [--dtypes float32,bfloat16] [--methods ...] [--load 2]
                                         [--write-docs]

The model sets are ``benchmarks/worker_scale.py``'s (a Qwen2-shaped base and three fine-tunes, built once under
--root). Every measurement is a fresh subprocess:

- ``merge``: ``InMemoryMerger.merge_into`` of a per-layer recipe of the method into a live model, 4 merges, the
  median wall time of the last 3 (the first one compiles nothing on a warm numba cache but fills caches);
  ``1 thread``: torch and the merge on one thread; ``2 threads``: the default on 2 cores (2 merge threads);
- ``loaded``: the same while ``--load`` processes each spin a core;
- ``bound``: bytes a merge must move (base and 3 sources read in their dtype, the model written) over the copy
  bandwidth measured in the same run (one thread, a large float32 copy);
- ``mergekit``: ``run_merge`` in-process on the same recipe (``to_mergekit_yaml``), one thread: wall and CPU s;
- ``export``: ``export_recipe`` (what ``evomerge merge`` runs), one thread: CPU s, against mergekit's CPU s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from merge_threads import spin  # noqa: E402
from docs_section import write_section  # noqa: E402
from worker_scale import _BANDWIDTH, build_set, run_child, SIZES  # noqa: E402

METHODS = ("task_arithmetic", "linear", "ties", "breadcrumbs_ties", "dare_ties", "dare_linear", "della")
SETTINGS = {"1 thread": 1, "2 threads": 2}

_MERGE = r"""
import json, statistics, sys, time
import torch
threads = int(sys.argv[2])
torch.set_num_threads(threads)
from transformers import AutoModelForCausalLM
from evomerge.merge import InMemoryMerger
from evomerge.recipe import recipe_from_yaml
r = recipe_from_yaml(sys.argv[1])
merger = InMemoryMerger(r.sources(), threads=threads)
model = AutoModelForCausalLM.from_pretrained(r.base or r.models[0].model, dtype=merger.dtype).eval()
wall, cpu = [], []
for _ in range(4):
    t, c = time.perf_counter(), time.process_time()
    merger.merge_into(r, model)
    wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
print(json.dumps({"wall": statistics.median(wall[1:]), "cpu": statistics.median(cpu[1:]), "first": wall[0]}))
"""

_MERGEKIT = r"""
import json, sys, time, yaml
import torch
torch.set_num_threads(1)
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
cfg = MergeConfiguration.model_validate(yaml.safe_load(open(sys.argv[1]).read()))
t, c = time.perf_counter(), time.process_time()
run_merge(cfg, sys.argv[2], MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False))
print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c}))
"""

_EXPORT = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from evomerge.merge import export_recipe
from evomerge.recipe import recipe_from_yaml
recipe = recipe_from_yaml(sys.argv[1])
t, c = time.perf_counter(), time.process_time()
export_recipe(recipe, sys.argv[2], threads=1)
print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c}))
"""


def recipe_yaml(method: str, models: dict[str, str], layers: int) -> str:
    """A per-layer recipe of ``method`` over the set's three fine-tunes (``worker_scale``'s layout)."""
    from evomerge.recipe import recipe_from_dict, recipe_to_yaml

    half = layers // 2
    extra = {"linear": {}, "task_arithmetic": {}, "breadcrumbs_ties": {"density": 0.5, "gamma": 0.02},
             "della": {"density": 0.5, "epsilon": 0.1}}.get(method, {"density": 0.5})
    ms = [{"model": models[f"ft{i}"], "params": {"weight": w, **extra}} for i, w in ((1, 0.5), (2, 0.3), (3, 0.4))]
    return recipe_to_yaml(recipe_from_dict({
        "method": method, "models": ms, "base": None if method == "linear" else models["base"],
        "overrides": [{"layers": [0, half], "modules": ["mlp"], "params": {"weight": 0.8}},
                      {"layers": [half, layers], "params": {"weight": 0.45}}]}))


def measure_merge(path: Path, threads: int) -> dict:
    return run_child(_MERGE, str(path), str(threads))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="250m", choices=sorted(SIZES))
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--load", type=int, default=2, help="busy processes beside the loaded measurements")
    ap.add_argument("--no-mergekit", action="store_true")
    ap.add_argument("--root", default=str(Path.home() / ".cache" / "evomerge" / "bench-models"))
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()

    from rich.console import Console

    from evomerge.merge import to_mergekit_yaml
    from evomerge.models.safetensors_io import LazyCheckpoint
    from evomerge.recipe import recipe_from_yaml

    console = Console()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    bw = run_child(_BANDWIDTH, "1")["bytes_per_s"]
    console.print(f"copy bandwidth (float32, 1 thread): {bw / 1e9:.1f} GB/s")
    rows = []
    for dtype in args.dtypes.split(","):
        models = build_set(root, args.size, dtype)
        model_bytes = LazyCheckpoint(models["base"]).total_bytes()
        for method in args.methods.split(","):
            path = root / f"{args.size}-{dtype}-bw-{method}.yaml"
            path.write_text(recipe_yaml(method, models, SIZES[args.size]["num_hidden_layers"]))
            reads = 3 if method == "linear" else 4
            row = {"dtype": dtype, "method": method, "bound": (reads + 1) * model_bytes / bw}
            for label, threads in SETTINGS.items():
                row[label] = measure_merge(path, threads)
            procs = spin(args.load)
            try:
                for label, threads in SETTINGS.items():
                    row[f"{label} loaded"] = measure_merge(path, threads)
            finally:
                for p in procs:
                    p.kill()
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                row["export"] = run_child(_EXPORT, str(path), str(Path(tmp) / "ours"))
                if not args.no_mergekit:
                    mk = Path(tmp) / "mk.yaml"
                    mk.write_text(to_mergekit_yaml(recipe_from_yaml(path)))
                    row["mergekit"] = run_child(_MERGEKIT, str(mk), str(Path(tmp) / "mk_out"))
            console.print(f"{dtype} {method}: {json.dumps(row)}")
            rows.append(row)
    (root / f"merge_bandwidth-{args.size}.json").write_text(json.dumps({"bandwidth": bw, "rows": rows}, indent=1))
    table = markdown(args.size, bw, rows, args.load)
    print(table)
    if args.write_docs:
        write_docs(table)


def markdown(size: str, bw: float, rows: list[dict], load: int) -> str:
    head = ("| dtype | method | bound s | 1 thread s | time / bound | 2 threads s | 2 / 1 thread "
            "| loaded: 1 thread s | loaded: 2 threads s | loaded 2 / 1 | mergekit s | speed-up vs mergekit "
            "| export CPU s / mergekit CPU s |")
    lines = [f"{size}, copy bandwidth {bw / 1e9:.1f} GB/s (1 thread); loaded = {load} busy processes beside",
             "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        one, two = r["1 thread"]["wall"], r["2 threads"]["wall"]
        lone, ltwo = r["1 thread loaded"]["wall"], r["2 threads loaded"]["wall"]
        mk = r.get("mergekit")
        lines.append(
            f"| {r['dtype']} | {r['method']} | {r['bound']:.3f} | {one:.3f} | {one / r['bound']:.1f}x | {two:.3f} | "
            f"{one / two:.2f}x | {lone:.3f} | {ltwo:.3f} | {lone / ltwo:.2f}x | "
            + (f"{mk['wall']:.1f} | {mk['wall'] / one:.1f}x | {r['export']['cpu']:.1f} / {mk['cpu']:.1f} = "
               f"{r['export']['cpu'] / mk['cpu']:.2f}x |" if mk else "- | - | - |"))
    return "\n".join(lines)


def write_docs(table: str) -> None:
    write_section("merge_bandwidth.py", [table])


if __name__ == "__main__":
    main()
