"""Merge speed and export memory, side by side in one run on the same recipe and models.

    python benchmarks/merge_speed.py [--hidden 256] [--layers 8] [--candidates 5] [--models DIR]

Rows: our in-memory merge per candidate (``InMemoryMerger.merge_into`` a live model), our streaming export,
mergekit's in-process ``run_merge`` and the ``mergekit-yaml`` CLI (both on the YAML ``to_mergekit_yaml``
writes). Export peak memory is the child process's peak RSS above its RSS after imports (VmHWM reset via
/proc/self/clear_refs; includes the pages of the open, mmapped source shards, which the kernel can drop) and
its anonymous RSS sampled after every tensor, next to the "one tensor per source + one output shard" budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_CHILD = r"""
import json, sys, time
from pathlib import Path
def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
from evomerge.merge import export_recipe
from evomerge.recipe import recipe_from_yaml
import torch
torch.set_num_threads(1)
recipe = recipe_from_yaml(sys.argv[1])
open('/proc/self/clear_refs', 'w').write('5')
before, anon0 = rss('VmRSS'), rss('RssAnon')
peak_anon = [anon0]
def sample(done, total, name):
    peak_anon[0] = max(peak_anon[0], rss('RssAnon'))
t = time.perf_counter()
export_recipe(recipe, sys.argv[2], shard_size=sys.argv[3], progress=sample)
print(json.dumps({"seconds": time.perf_counter() - t, "peak_extra": rss('VmHWM') - before,
                  "anon_extra": peak_anon[0] - anon0}))
"""


def make_models(root: Path, hidden: int, layers: int) -> dict[str, str]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=int(hidden * 2.6875),
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                      num_key_value_heads=max(1, hidden // 128), tie_word_embeddings=False)
    torch.manual_seed(0)
    base = LlamaForCausalLM(cfg)
    base.save_pretrained(root / "base", max_shard_size="20MB")
    state = {k: v.clone() for k, v in base.state_dict().items()}
    out = {"base": str(root / "base")}
    for i, name in enumerate(["e1", "e2", "e3"], start=1):
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for k, p in base.named_parameters():
                p.copy_(state[k] + 0.01 * torch.randn(p.shape, generator=g))
        base.save_pretrained(root / name, max_shard_size="20MB")
        out[name] = str(root / name)
    return out


def recipe_for(models: dict[str, str], layers: int):
    from evomerge.recipe import recipe_from_dict

    return recipe_from_dict({
        "method": "ties", "base": models["base"],
        "models": [{"model": models["e1"], "params": {"weight": 0.5, "density": 0.6}},
                   {"model": models["e2"], "params": {"weight": 0.3, "density": 0.5}},
                   {"model": models["e3"], "params": {"weight": 0.4, "density": 0.7}}],
        "overrides": [{"layers": [0, layers // 2], "modules": ["mlp"], "params": {"weight": 0.8}},
                      {"layers": [layers // 2, layers], "params": {"density": 0.4}}]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--shard-size", default="10MB")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every row (fair comparison)")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    from evomerge.merge import InMemoryMerger, to_mergekit_yaml
    from evomerge.models import LazyCheckpoint
    from evomerge.recipe import recipe_to_yaml

    work = Path(tempfile.mkdtemp(prefix="merge-bench-"))
    try:
        models = make_models(work / "models", args.hidden, args.layers)
        recipe = recipe_for(models, args.layers)
        ck = LazyCheckpoint(models["base"])
        n_params = sum(int(torch.Size(ck.shape(n)).numel()) for n in ck.names())
        largest = max(int(torch.Size(ck.shape(n)).numel()) * 4 for n in ck.names())
        rows = []

        # ours, in memory
        t = time.perf_counter()
        merger = InMemoryMerger(list(models.values()))
        load_s = time.perf_counter() - t
        model = AutoModelForCausalLM.from_pretrained(models["base"])
        t = time.perf_counter()
        merger.merge_into(recipe, model)  # first call builds the task-vector / magnitude-order caches
        first_s = time.perf_counter() - t
        times = []
        for i in range(args.candidates):
            r = recipe.model_copy(deep=True)
            r.models[0].params["weight"] = 0.5 + 0.05 * i
            t = time.perf_counter()
            merger.merge_into(r, model)
            times.append(time.perf_counter() - t)
        ours_mem = sorted(times)[len(times) // 2]
        rows.append(("evomerge in-memory merge_into (per candidate, median)", ours_mem,
                     f"first call {first_s:.2f}s (caches), load {load_s:.2f}s"))

        # ours, streaming export (child process, for a clean peak-RSS reading)
        (work / "recipe.yaml").write_text(recipe_to_yaml(recipe))
        res = subprocess.run([sys.executable, "-c", _CHILD, str(work / "recipe.yaml"), str(work / "ours"),
                              args.shard_size], capture_output=True, text=True, check=True)
        exp = json.loads(res.stdout.strip().splitlines()[-1])
        from evomerge.machine import parse_size

        budget = largest * (len(models) + 3) + parse_size(args.shard_size)
        rows.append(("evomerge export_recipe (streaming, to disk)", exp["seconds"],
                     f"peak RSS +{exp['peak_extra'] / 1e6:.1f} MB incl. mmapped shard pages; anonymous "
                     f"+{exp['anon_extra'] / 1e6:.1f} MB (budget ~{budget / 1e6:.1f} MB = largest tensor x "
                     f"(sources+3) + shard; one model = {n_params * 4 / 1e6:.1f} MB)"))

        # mergekit in-process
        mk_yaml = to_mergekit_yaml(recipe)
        (work / "mk.yaml").write_text(mk_yaml)
        import yaml

        t = time.perf_counter()
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        import_s = time.perf_counter() - t
        cfg = MergeConfiguration.model_validate(yaml.safe_load(mk_yaml))
        opts = MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False, num_threads=args.threads)
        mk_times = []
        for i in range(2):
            out = work / f"mk{i}"
            t = time.perf_counter()
            run_merge(cfg, str(out), opts)
            mk_times.append(time.perf_counter() - t)
        mk_s = min(mk_times)
        rows.append(("mergekit run_merge (in-process, per merge)", mk_s, f"import {import_s:.1f}s not counted"))

        # mergekit CLI
        exe = shutil.which("mergekit-yaml") or str(Path(sys.executable).parent / "mergekit-yaml")
        t = time.perf_counter()
        subprocess.run([exe, str(work / "mk.yaml"), str(work / "mkcli"), "--no-copy-tokenizer"],
                       capture_output=True, check=True)
        rows.append(("mergekit-yaml CLI (wall, incl. start-up)", time.perf_counter() - t, ""))

        # sanity: everyone produced the same tensors
        from safetensors.torch import load_file

        def load(p):
            d = {}
            for f in sorted(Path(p).glob("*.safetensors")):
                d.update(load_file(str(f)))
            return d

        a, b = load(work / "ours"), load(work / "mk0")
        diff = max((a[k] - b[k]).abs().max().item() for k in a)

        table = Table(title=f"merge speed: ties, 3 experts + base, {n_params / 1e6:.1f}M params/model, "
                            f"{args.layers} layers, per-layer overrides, {args.threads} thread(s)")
        table.add_column("path")
        table.add_column("seconds", justify="right")
        table.add_column("vs in-memory", justify="right")
        table.add_column("notes")
        for name, sec, note in rows:
            table.add_row(name, f"{sec:.3f}", f"{sec / ours_mem:.1f}x", note)
        Console().print(table)
        print(f"in-memory speed-up over mergekit run_merge: {mk_s / ours_mem:.1f}x (target >= 10x); "
              f"max |export - mergekit| = {diff:.2e}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
