"""GPU acceptance run: every CUDA path of evomerge in one command, one table, in minutes.

    python benchmarks/gpu_check.py                          # on a GPU machine (~1B Llama-shaped set, < 8 min)
    python benchmarks/gpu_check.py --device cpu --small     # the dry run the test suite runs (under a minute)

It builds its own models (random init from a Llama config: base + 3 fine-tunes, bf16, ~1.1B parameters; with
``--small`` a few million) and the tiny zoo, then runs each step below, printing the elapsed time per step. A
step that fails is one row of the table (its error) and the next step runs.

1. versions: torch, CUDA, driver, GPU name and count.
2. merge on the device: ``InMemoryMerger`` on the device into a live ``from_pretrained`` model, TIES and task
   arithmetic, median of 5 after the first; time / (bytes read + written / the device's copy bandwidth, measured
   here); the worker's peak device memory (``max_memory_allocated``) / one model (target <= 1.3) and the host's
   peak anonymous memory (RssAnon, sampled every millisecond).
3. plan: ``evomerge plan``'s figure for the same worker (merge part) against the measured peak (within 20%).
4. scored == exported on the device: the in-memory merged model and the exported checkpoint loaded back, every
   parameter and the logits, bit for bit, float32 and bfloat16.
5. two GPUs (when there are): one candidate spread over 2 GPUs (``device_map``) gives the same bits as on one;
   each GPU's own peak.
6. a 12-candidate zoo search with ``device`` set (HF backend; vLLM too where installed): seconds per candidate,
   merge and evaluation.
7. HF vs vLLM on the set (100 prompts of 32 tokens, 64 new tokens each, greedy): items per second (target vLLM
   >= 3x HF on a GPU) and the in-place reload per candidate.

``--out FILE`` also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FULL = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
            intermediate_size=5632, vocab_size=32000)  # TinyLlama-1.1B's shape
SMALL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
             intermediate_size=256, vocab_size=512)  # head size 64: vLLM's CPU kernels take it


@dataclass
class Row:
    step: str
    metric: str
    value: str
    target: str = ""
    ok: Optional[bool] = None


@dataclass
class Ctx:
    device: str
    small: bool
    root: Path
    models: dict[str, str]
    bandwidth: float = 0.0
    peak: dict[str, float] = None  # measured in the merge step, read by the plan step


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_models(root: Path, small: bool) -> dict[str, str]:
    """Base + 3 fine-tunes (small random deltas) in bf16 with a tokenizer; built once under ``root``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from eval_speed import add_tokenizer

    names = ["base", "ft1", "ft2", "ft3"]
    out = {n: str(root / n) for n in names}
    if all((root / n / "tokenizer_config.json").exists() for n in names):
        return out
    shape = SMALL if small else FULL
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**shape, max_position_embeddings=512, tie_word_embeddings=False,
                                         pad_token_id=0, bos_token_id=1, eos_token_id=2)).to(torch.bfloat16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for i, name in enumerate(names):
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(state[k] + (0.002 * torch.randn(p.shape, generator=g)).to(p.dtype) * (i > 0))
        model.save_pretrained(root / name, max_shard_size="2GB")
        add_tokenizer(out[name], shape["vocab_size"])
    return out


def _recipe(ctx: Ctx, method: str, dtype: str = "bfloat16"):
    from evomerge.recipe import recipe_from_dict

    extra = {"density": 0.5} if method == "ties" else {}
    layers = (SMALL if ctx.small else FULL)["num_hidden_layers"]
    return recipe_from_dict({"method": method, "base": ctx.models["base"], "dtype": dtype, "models": [
        {"model": ctx.models[f"ft{i}"], "params": {"weight": w, **extra}} for i, w in ((1, 0.5), (2, 0.3), (3, 0.4))],
        "overrides": [{"layers": [0, layers // 2], "modules": ["mlp"], "params": {"weight": 0.8}}]})


def _model_bytes(folder: str) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def step_versions(ctx: Ctx) -> list[Row]:
    import torch

    rows = [Row("versions", "torch", torch.__version__)]
    if ctx.device.startswith("cuda"):
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip().splitlines()
        rows += [Row("versions", "CUDA", str(torch.version.cuda)), Row("versions", "driver", driver[0] if driver else "?"),
                 Row("versions", "GPU", f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}")]
    else:
        rows.append(Row("versions", "device", "cpu (dry run)"))
    return rows


def step_merge(ctx: Ctx) -> list[Row]:
    import torch
    from transformers import AutoModelForCausalLM

    from evomerge.merge import InMemoryMerger
    from worker_scale import _SAMPLER

    scope: dict[str, Any] = {}
    exec(_SAMPLER, scope)  # noqa: S102 (the benchmarks' own RssAnon sampler)
    dev = ctx.device
    n = 64 * 2**20 if dev.startswith("cuda") else 8 * 2**20
    a, b = torch.rand(n, device=dev), torch.empty(n, device=dev)
    times = []
    for _ in range(10):
        _sync(dev); t = time.perf_counter(); b.copy_(a); _sync(dev); times.append(time.perf_counter() - t)
    ctx.bandwidth = 2 * n * 4 / min(times)
    del a, b
    model_bytes = _model_bytes(ctx.models["base"])
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    host = scope["Peak"]()
    merger = InMemoryMerger([ctx.models[k] for k in ("base", "ft1", "ft2", "ft3")], device=dev)
    model = AutoModelForCausalLM.from_pretrained(ctx.models["base"], dtype=merger.dtype).to(dev).eval()
    rows = [Row("merge", "copy bandwidth", f"{ctx.bandwidth / 1e9:.0f} GB/s")]
    for method in ("ties", "task_arithmetic"):
        recipe, runs = _recipe(ctx, method), []
        for _ in range(6):
            _sync(dev); t = time.perf_counter(); merger.merge_into(recipe, model); _sync(dev)
            runs.append(time.perf_counter() - t)
        s = statistics.median(runs[1:])
        bound = 5 * model_bytes / ctx.bandwidth  # 3 sources + base read, the live model written (bf16)
        rows += [Row("merge", f"{method} s/candidate", f"{s:.3f}"),
                 Row("merge", f"{method} time / bandwidth bound", f"{s / bound:.1f}x")]
    host_peak = host.stop()
    if dev.startswith("cuda"):
        dev_peak = torch.cuda.max_memory_allocated() - base_alloc
        rows.append(Row("merge", "device peak / one model", f"{dev_peak / model_bytes:.2f}", "<= 1.3",
                        dev_peak / model_bytes <= 1.3))
    else:
        dev_peak = host_peak  # the live model lives in host memory
    rows.append(Row("merge", "host peak anon", f"{host_peak / 1e9:.3f} GB"))
    ctx.peak = {"worker": dev_peak, "cache": merger.cache.used, "model_bytes": model_bytes}
    return rows


def step_plan(ctx: Ctx) -> list[Row]:
    from evomerge.execution.memory_plan import model_facts, worker_memory

    if not ctx.peak:
        raise RuntimeError("needs the merge step's peak")
    on_gpu = ctx.device.startswith("cuda")
    w = worker_memory(_recipe(ctx, "ties"), device="cuda" if on_gpu else "cpu", cache_budget=ctx.peak["cache"],
                      live_dtype="bfloat16", facts=model_facts(ctx.models["base"]), n_models=3, n_sources=4)
    planned = (w.device_bytes if on_gpu else w.host_bytes) - w.eval_bytes
    ratio = planned / max(1, ctx.peak["worker"])
    # at a few million parameters fixed scratch (MBs) dominates: the target holds for the ~1B set
    return [Row("plan", "planned / measured worker peak (merge part)", f"{ratio:.2f}", "0.8-1.2 at ~1B",
                None if ctx.small else 0.8 <= ratio <= 1.2)]


def step_scored_equals_exported(ctx: Ctx) -> list[Row]:
    import torch
    from transformers import AutoModelForCausalLM

    from evomerge.merge import InMemoryMerger, export_recipe

    rows = []
    ids = torch.arange(1, 33).unsqueeze(0).to(ctx.device)
    for dtype in ("float32", "bfloat16"):
        recipe = _recipe(ctx, "ties", dtype)
        merger = InMemoryMerger(recipe.sources(), device=ctx.device, dtype=getattr(torch, dtype))
        live = AutoModelForCausalLM.from_pretrained(ctx.models["base"], dtype=getattr(torch, dtype)).to(ctx.device)
        merger.merge_into(recipe, live)
        out = Path(tempfile.mkdtemp(dir=ctx.root))
        export_recipe(recipe, out / "m", device=ctx.device)
        back = AutoModelForCausalLM.from_pretrained(out / "m", dtype=getattr(torch, dtype)).to(ctx.device)
        a, b = live.state_dict(), back.state_dict()
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        with torch.no_grad():
            logits = torch.equal(live(ids).logits, back(ids).logits)
        rows += [Row("scored == exported", f"{dtype}: every parameter", str(same), "True", same),
                 Row("scored == exported", f"{dtype}: logits", str(logits), "True", logits)]
        del live, back, merger
    return rows


def step_two_gpus(ctx: Ctx) -> list[Row]:
    import torch
    from transformers import AutoModelForCausalLM

    from evomerge.merge import InMemoryMerger

    if not ctx.device.startswith("cuda") or torch.cuda.device_count() < 2:
        return [Row("two GPUs", "skipped", "needs 2 GPUs")]
    recipe = _recipe(ctx, "ties")
    one = AutoModelForCausalLM.from_pretrained(ctx.models["base"], dtype=torch.bfloat16).to("cuda:0")
    InMemoryMerger(recipe.sources(), device="cuda:0").merge_into(recipe, one)
    ref = {k: v.cpu() for k, v in one.state_dict().items()}
    del one
    torch.cuda.empty_cache()
    for i in range(2):
        torch.cuda.reset_peak_memory_stats(i)
    half = int(_model_bytes(ctx.models["base"]) * 0.6)
    two = AutoModelForCausalLM.from_pretrained(ctx.models["base"], dtype=torch.bfloat16, device_map="auto",
                                               max_memory={0: half, 1: 4 * half})
    InMemoryMerger(recipe.sources(), device="cuda:0").merge_into(recipe, two)
    same = all(torch.equal(ref[k], v.cpu()) for k, v in two.state_dict().items())
    peaks = [torch.cuda.max_memory_allocated(i) / 1e9 for i in range(2)]
    gpus = sorted({str(p.device) for p in two.parameters()})
    return [Row("two GPUs", "spread over", ", ".join(gpus), "cuda:0, cuda:1", len(gpus) == 2),
            Row("two GPUs", "same bits as one GPU", str(same), "True", same),
            Row("two GPUs", "peak per GPU", " / ".join(f"{p:.2f} GB" for p in peaks))]


def _zoo_search(ctx: Ctx, backend: str, n: int) -> Row:
    from evomerge.run import run_config_from_dict, run_search
    from evomerge.run.ledger import Ledger
    from evomerge.zoo import ensure_zoo

    variant = "ci_vllm"
    ensure_zoo(variant)
    cfg = {"name": f"gpu-check-{backend}", "base": f"zoo://{variant}/base",
           "models": [f"zoo://{variant}/{s}" for s in ("add", "reverse", "sort")],
           "space": {"preset": "task_arithmetic_layerwise"},
           "fitness": {"kind": "lm_eval", "tasks": ["zoo_add", "zoo_reverse", "zoo_sort"], "include_path": ["zoo"],
                       "estimator": "subset_mean", "anchors": "random", "items_per_task": 20, "population": 0,
                       "device": ctx.device, "backend": backend, "gen_kwargs": {"max_gen_toks": 8}},
           "objectives": [{"metric": "mean"}], "optimizer": {"name": "cma", "population": 4},
           "budget": {"evaluations": n}, "finalists": {"top": 0, "recommended": False}}
    run_dir = Path(tempfile.mkdtemp(dir=ctx.root)) / "run"
    run_search(run_config_from_dict(cfg), run_dir)
    recs = [r for r in Ledger(run_dir / "ledger.jsonl") if r["status"] == "ok"]
    merge = statistics.median(r["timings"]["merge_s"] for r in recs[1:])
    ev = statistics.median(r["timings"]["eval_s"] for r in recs[1:])
    return Row("zoo search", f"{backend}: {len(recs)}/{n} ok, s/candidate merge + eval", f"{merge:.3f} + {ev:.3f}",
               f"{n} ok", len(recs) == n)


def step_zoo_search(ctx: Ctx) -> list[Row]:
    rows = [_zoo_search(ctx, "hf", 12)]
    if _has_vllm():
        rows.append(_zoo_search(ctx, "vllm", 4 if ctx.small else 12))
    return rows


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def step_hf_vs_vllm(ctx: Ctx) -> list[Row]:
    from eval_speed import _RANDOM, CHARS, run_child  # the same child the CPU benchmark times

    if not _has_vllm():
        return [Row("hf vs vllm", "skipped", "vllm not installed")]
    folder = json.dumps(ctx.models)
    opts = json.dumps({"max_model_len": 256} if not ctx.device.startswith("cuda")
                      else {"max_model_len": 256, "gpu_memory_utilization": 0.5})
    env = {"EVOMERGE_BENCH_DEVICE": ctx.device}
    res = {b: run_child(_RANDOM, b, "2", "3", folder, opts, CHARS, env=env) for b in ("hf", "vllm")}
    ips = {b: statistics.median(r["items"] / r["eval_s"] for r in res[b]["rows"][1:]) for b in res}
    reload = statistics.median(r["reload_s"] for r in res["vllm"]["rows"][1:])
    ratio = ips["vllm"] / ips["hf"]
    on_gpu = ctx.device.startswith("cuda")
    return [Row("hf vs vllm", "items/s hf / vllm", f"{ips['hf']:.1f} / {ips['vllm']:.1f}"),
            Row("hf vs vllm", "vllm / hf", f"{ratio:.2f}x", ">= 3x on a GPU", ratio >= 3 if on_gpu else None),
            Row("hf vs vllm", "in-place reload s/candidate", f"{reload:.3f}")]


STEPS: list[tuple[str, Callable[[Ctx], list[Row]]]] = [
    ("versions", step_versions), ("merge", step_merge), ("plan", step_plan),
    ("scored == exported", step_scored_equals_exported), ("two GPUs", step_two_gpus),
    ("zoo search", step_zoo_search), ("hf vs vllm", step_hf_vs_vllm),
]


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="a few million parameters (the CPU dry run)")
    ap.add_argument("--root", type=Path, default=None, help="where the models are built (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--skip", default="", help="comma-separated steps to leave out")
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device here; run on a GPU machine, or --device cpu --small for the dry run")
        return 2
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    root = args.root or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    t_all = time.perf_counter()
    t = time.perf_counter()
    ctx = Ctx(args.device, args.small, root, build_models(root / "set", args.small))
    print(f"[{time.perf_counter() - t:6.1f} s] models built in {root / 'set'}", flush=True)
    rows: list[Row] = []
    skip = set(filter(None, args.skip.split(",")))
    for name, fn in STEPS:
        if name in skip:
            continue
        t = time.perf_counter()
        try:
            got = fn(ctx)
        except (Exception, SystemExit) as exc:  # one row, and on to the next step
            got = [Row(name, "FAILED", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}", ok=False)]
            traceback.print_exc(file=sys.stderr)
        rows += got
        print(f"[{time.perf_counter() - t:6.1f} s] {name}", flush=True)
    print(f"total {time.perf_counter() - t_all:.1f} s")
    print("| step | metric | value | target | met |\n|---|---|---|---|---|")
    for r in rows:
        met = "" if r.ok is None else ("yes" if r.ok else "**no**")
        print(f"| {r.step} | {r.metric} | {r.value} | {r.target} | {met} |")
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 1 if any(r.metric == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
