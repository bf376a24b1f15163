"""A search worker at real sizes: memory, merge time and export memory, side by side with mergekit in one run.

    python benchmarks/worker_scale.py [--sizes 60m,250m] [--dtypes float32,bfloat16] [--threads 2]

Builds (once, under --root) a Qwen2-shaped base and three fine-tunes (base + small random deltas) per size and
dtype, saved with ``save_pretrained``. Every measurement runs in a fresh subprocess with the same torch threads:

- worker: ``InMemoryMerger`` + the live model (``from_pretrained``), a per-layer TIES recipe (and task arithmetic,
  DARE-TIES) merged into it 6 times: first-merge time, median of the next 5; peak **anonymous** memory (RssAnon
  sampled every millisecond by a thread) above the process's anonymous memory after imports (a model loaded
  and freed once, so that transformers' modeling code is imported), divided by one
  model's bytes. Memory-mapped source pages are file-backed (page cache, shared by the node's workers) and count
  in RssFile, not RssAnon: that is how page cache is told apart. Cache budget 0, the default (auto) and
  unlimited (TIES only for 0 and unlimited);
- mergekit: ``run_merge`` in-process on the same recipe (``to_mergekit_yaml``): wall time and peak anonymous
  memory (its export);
- export: ``export_recipe`` (what ``evomerge merge`` runs): wall time and peak anonymous memory;
- machine limit: memory copy bandwidth measured in the same run (a large float32 copy), and per-candidate time /
  (bytes the method must read and write / bandwidth): sources + base read in their dtype, the live model written;
- plan: ``evomerge.execution.memory_plan``'s predicted worker memory for the same setting, vs the measured peak.
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

SIZES = {  # Qwen2-shaped: GQA, tied embeddings, SwiGLU
    "60m": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                intermediate_size=2816, vocab_size=32000),
    "250m": dict(hidden_size=1024, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=2,
                 intermediate_size=3200, vocab_size=64000),
}

_SAMPLER = r"""
import threading, time
def _anon():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('RssAnon'):
                return int(line.split()[1]) * 1024
class Peak:
    def __init__(self):
        self.base = _anon(); self.peak = self.base; self._stop = False
        self.t = threading.Thread(target=self._run, daemon=True); self.t.start()
    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, _anon()); time.sleep(0.001)
    def stop(self):
        self._stop = True; self.t.join(); self.peak = max(self.peak, _anon()); return self.peak - self.base
"""

_WORKER = _SAMPLER + r"""
import json, statistics, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from transformers import AutoModelForCausalLM
from evomerge.merge import InMemoryMerger
from evomerge.recipe import recipe_from_yaml
recipes = [recipe_from_yaml(p) for p in json.loads(sys.argv[1])]
budget = json.loads(sys.argv[2])
import gc
warm = AutoModelForCausalLM.from_pretrained(recipes[0].base)  # imports the modeling code: part of the baseline
del warm; gc.collect()
peak = Peak()
merger = InMemoryMerger(recipes[0].sources(), cache_budget=budget)
model = AutoModelForCausalLM.from_pretrained(recipes[0].base, dtype=merger.dtype).eval()
out = {"load_s": 0.0, "rows": []}
for r in recipes:
    times = []
    for _ in range(6):
        t = time.perf_counter(); merger.merge_into(r, model); times.append(time.perf_counter() - t)
    out["rows"].append({"method": r.method, "first_s": times[0], "median_s": statistics.median(times[1:])})
out["peak_anon"] = peak.stop()
out["cache_used"] = merger.cache.used
out["workspace"] = sum(w.nbytes() for w in merger._workspaces.values())
print(json.dumps(out))
"""

_MERGEKIT = _SAMPLER + r"""
import json, sys, time, yaml
import torch
torch.set_num_threads(int(sys.argv[3]))
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
cfg = MergeConfiguration.model_validate(yaml.safe_load(open(sys.argv[1]).read()))
peak = Peak()
t = time.perf_counter()
run_merge(cfg, sys.argv[2], MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False))
print(json.dumps({"seconds": time.perf_counter() - t, "peak_anon": peak.stop()}))
"""

_EXPORT = _SAMPLER + r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from evomerge.merge import export_recipe
from evomerge.recipe import recipe_from_yaml
recipe = recipe_from_yaml(sys.argv[1])
peak = Peak()
t = time.perf_counter()
export_recipe(recipe, sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "peak_anon": peak.stop()}))
"""

_BANDWIDTH = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
n = 64 * 2**20
a = torch.rand(n); b = torch.empty(n); b.copy_(a)
best = min((lambda t: (b.copy_(a), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(10))
print(json.dumps({"bytes_per_s": 2 * n * 4 / best}))
"""


def build_set(root: Path, size: str, dtype: str) -> dict[str, str]:
    """Base + 3 fine-tunes (base plus small deltas) of one size in one dtype; built once."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = root / f"{size}-{dtype}"
    names = ["base", "ft1", "ft2", "ft3"]
    out = {n: str(folder / n) for n in names}
    if all((folder / n / "config.json").exists() for n in names):
        return out
    cfg = Qwen2Config(**SIZES[size], tie_word_embeddings=True, max_position_embeddings=2048)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.save_pretrained(folder / "base", max_shard_size="400MB")
    for i, name in enumerate(names[1:], start=1):
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(state[k] + 0.002 * torch.randn(p.shape, generator=g).to(p.dtype))
        model.save_pretrained(folder / name, max_shard_size="400MB")
    return out


def recipes(models: dict[str, str], layers: int) -> dict[str, str]:
    """YAML of the three recipes: per-layer TIES, task arithmetic, DARE-TIES."""
    from evomerge.recipe import recipe_from_dict, recipe_to_yaml

    half = layers // 2
    common = {"base": models["base"], "overrides": [
        {"layers": [0, half], "modules": ["mlp"], "params": {"weight": 0.8}},
        {"layers": [half, layers], "params": {"weight": 0.45}}]}
    out = {}
    for method, extra in (("ties", {"density": 0.5}), ("task_arithmetic", {}), ("dare_ties", {"density": 0.5})):
        ms = [{"model": models[f"ft{i}"], "params": {"weight": w, **extra}} for i, w in ((1, 0.5), (2, 0.3), (3, 0.4))]
        out[method] = recipe_to_yaml(recipe_from_dict({"method": method, "models": ms, **common}))
    return out


def run_child(code: str, *args: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="60m,250m")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "evomerge-worker-scale"))
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args()

    from rich.console import Console

    from evomerge.merge import to_mergekit_yaml
    from evomerge.models.safetensors_io import LazyCheckpoint
    from evomerge.execution.memory_plan import worker_memory
    from evomerge.recipe import recipe_from_yaml

    console = Console()
    root = Path(args.root)
    threads = str(args.threads)
    bw = run_child(_BANDWIDTH, threads)["bytes_per_s"]
    console.print(f"copy bandwidth (float32, {threads} threads): {bw / 1e9:.1f} GB/s (read + write bytes / s)")
    results = []
    for size in args.sizes.split(","):
        for dtype in args.dtypes.split(","):
            models = build_set(root, size, dtype)
            ck = LazyCheckpoint(models["base"])
            model_bytes = ck.total_bytes()
            ys = recipes(models, SIZES[size]["num_hidden_layers"])
            paths = {}
            for m, y in ys.items():
                paths[m] = root / f"{size}-{dtype}-{m}.yaml"
                paths[m].write_text(y)
            row = {"size": size, "dtype": dtype, "model_bytes": model_bytes,
                   "params_m": sum(int(torch_numel(ck.shape(n))) for n in ck.names()) / 1e6}
            every = json.dumps([str(paths[m]) for m in ("ties", "task_arithmetic", "dare_ties")])
            for label, budget in (("budget0", 0), ("auto", "auto"), ("unlimited", "unlimited")):
                order = every if label == "auto" else json.dumps([str(paths["ties"])])
                row[label] = run_child(_WORKER, order, json.dumps(budget), threads)
                console.print(f"{size} {dtype} worker {label}: {row[label]}")
            row["plan"] = worker_memory(recipe_from_yaml(paths["ties"]), device="cpu", cache_budget=0).as_dict()
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                mk = Path(tmp) / "mk.yaml"
                mk.write_text(to_mergekit_yaml(recipe_from_yaml(paths["ties"])))
                row["mergekit"] = run_child(_MERGEKIT, str(mk), str(Path(tmp) / "mk_out"), threads)
                row["export"] = run_child(_EXPORT, str(paths["ties"]), str(Path(tmp) / "ours"), threads)
            console.print(f"{size} {dtype} mergekit {row['mergekit']} export {row['export']}")
            results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps({"bandwidth": bw, "rows": results}, indent=2))
    print_tables(console, bw, results)


def torch_numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def print_tables(console, bw: float, results: list[dict]) -> None:
    from rich.table import Table

    t = Table(title="search worker at real size (per-layer TIES unless noted; times median of 5 after the first)")
    for c in ("set", "params", "model", "worker peak anon / model (budget 0 / auto / unlimited)",
              "plan / measured (budget 0)", "TIES merge s (b0 / auto / unl.)", "first merge s",
              "mergekit run_merge s", "speed-up vs mergekit", "export peak anon vs mergekit"):
        t.add_column(c, justify="right")
    for r in results:
        mb = r["model_bytes"]
        ties = {k: r[k]["rows"][0] for k in ("budget0", "auto", "unlimited")}
        t.add_row(f"{r['size']} {r['dtype']}", f"{r['params_m']:.0f}M", f"{mb / 1e9:.2f} GB",
                  " / ".join(f"{r[k]['peak_anon'] / mb:.2f}" for k in ("budget0", "auto", "unlimited")),
                  f"{r['plan']['host_bytes'] / r['budget0']['peak_anon']:.2f}",
                  " / ".join(f"{ties[k]['median_s']:.2f}" for k in ties),
                  f"{ties['auto']['first_s']:.2f}",
                  f"{r['mergekit']['seconds']:.1f}",
                  f"{r['mergekit']['seconds'] / ties['auto']['median_s']:.1f}x",
                  f"{r['export']['peak_anon'] / 1e6:.0f} / {r['mergekit']['peak_anon'] / 1e6:.0f} MB = "
                  f"{r['export']['peak_anon'] / max(r['mergekit']['peak_anon'], 1):.2f}x")
    console.print(t)
    t2 = Table(title=f"how close a merge comes to the machine (copy bandwidth {bw / 1e9:.1f} GB/s, default budget)")
    for c in ("set", "method", "merge s", "bytes read + written", "bound s", "time / bound"):
        t2.add_column(c, justify="right")
    for r in results:
        mb = r["model_bytes"]
        for row in r["auto"]["rows"]:
            moved = 4 * mb + mb  # base + 3 sources read, the live model written
            bound = moved / bw
            t2.add_row(f"{r['size']} {r['dtype']}", row["method"], f"{row['median_s']:.2f}",
                       f"{moved / 1e9:.2f} GB", f"{bound:.2f}", f"{row['median_s'] / bound:.1f}x")
    console.print(t2)


if __name__ == "__main__":
    main()
