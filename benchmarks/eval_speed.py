"""Evaluation speed of the two backends (``fitness.backend: hf`` vs ``vllm``), side by side in one run.

    python benchmarks/eval_speed.py [--threads 2] [--size 250m] [--candidates 6] [--write-docs]

Every measurement runs in a fresh subprocess (one engine per process), with the same torch threads:

(a) the zoo: the search worker (``LMEvalWorker``) on the full zoo's three generative search tasks, 100 random
    items each (300 items per candidate), over the same task-arithmetic recipes; per candidate the merge (for
    vLLM: merge streamed into the in-place reload), the reload alone, and the evaluation; items per second and
    seconds per candidate are medians of the candidates after the first. Then the test split (500 items per
    skill, greedy) of one recipe on both backends: the per-task scores and their difference.
(b) a Qwen2-shaped random model (``--size``, bf16; the base and three fine-tunes of ``worker_scale.py``, with a
    64,000-word tokenizer): per candidate a task-arithmetic merge into the live model, then 100 lm-eval
    ``generate_until`` requests of 32 tokens generating 64 each (greedy, HFLM with batch 64 vs the vLLM
    backend's lm-eval model). Engine start time; peak anonymous memory of the worker (RssAnon, sampled every
    millisecond, above the process after imports) against one model's bytes plus the engine's KV cache, and
    against ``evomerge plan``'s figure for the same worker.

``--write-docs`` replaces this script's section of ``docs/benchmarks.md`` with the tables and the method.
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
from worker_scale import _SAMPLER, SIZES, build_set  # noqa: E402  (the RssAnon sampler, the model sets)

VLLM_OPTS = {"max_model_len": 256}  # (b): 32 prompt + 64 new tokens fit; the KV cache follows from it

_ZOO = r"""
import json, random, statistics, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
backend, n = sys.argv[1], int(sys.argv[3])
from evomerge.execution.base import WorkerSpec, build_worker
from evomerge.recipe import MergeRecipe, ModelSource
from evomerge.zoo import ensure_zoo
zoo = ensure_zoo("full")
skills = ["add", "reverse", "sort"]
fit = dict(kind="lm_eval", tasks=[f"zoo_{s}" for s in skills], test_tasks=[f"zoo_{s}_test" for s in skills],
           include_path=["zoo"], estimator="subset_mean", anchors="random", items_per_task=100, population=0,
           backend=backend)
models = [str(zoo / s) for s in skills]
t = time.perf_counter()
w = build_worker(WorkerSpec(fitness=fit, sources=[str(zoo / "base")] + models, base=str(zoo / "base"), models=models))
build_s = time.perf_counter() - t
rng = random.Random(0)
def recipe(ws):
    return MergeRecipe(method="task_arithmetic", base=str(zoo / "base"),
                       models=[ModelSource(model=m, params={"weight": x}) for m, x in zip(models, ws)])
rows = []
for i in range(n):
    r = w.evaluate(recipe([rng.uniform(0.2, 0.8) for _ in models]))
    assert r.status == "ok", r.reason
    rows.append(dict(r.timings, items=sum(len(v) for v in r.item_results.values())))
test = w.evaluate(recipe([0.5, 0.5, 0.5]), split="test").objectives
print(json.dumps({"build_s": build_s, "start_s": getattr(w.engine, "start_s", None), "rows": rows, "test": test}))
"""

_RANDOM = _SAMPLER + r"""
import json, os, statistics, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
device = os.environ.get("EVOMERGE_BENCH_DEVICE", "cpu")  # gpu_check.py runs this child on a GPU
backend, n, folder = sys.argv[1], int(sys.argv[3]), json.loads(sys.argv[4])
vllm_opts = json.loads(sys.argv[5])
import gc
from transformers import AutoModelForCausalLM, AutoTokenizer
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from evomerge.merge import InMemoryMerger
from evomerge.recipe import MergeRecipe, ModelSource
warm = AutoModelForCausalLM.from_pretrained(folder["base"])  # modeling code imported: part of the baseline
del warm; gc.collect()
if backend == "vllm":
    from evomerge.engines.vllm import prepare_environment
    prepare_environment()
    import vllm  # noqa: F401  (its import is a baseline too)
tok = AutoTokenizer.from_pretrained(folder["base"])
peak = Peak()
merger = InMemoryMerger([folder[k] for k in ("base", "ft1", "ft2", "ft3")], cache_budget=0, device=device)
t = time.perf_counter()
if backend == "hf":
    target = AutoModelForCausalLM.from_pretrained(folder["base"], dtype=merger.dtype).to(device).eval()
    lm = HFLM(pretrained=target, tokenizer=tok, batch_size=64)
else:
    from evomerge.engines.vllm import VLLMEngine
    from evomerge.fitness.config import FitnessConfig
    cfg = FitnessConfig.model_validate({"tasks": ["x"], "backend": "vllm", "vllm": vllm_opts, "cache_budget": 0})
    engine = VLLMEngine(folder["base"], folder["base"], merger.dtype, torch.device(device), cfg)
    target = lm = engine.model
start_s = time.perf_counter() - t
import random
rng = random.Random(0)
prompts = ["".join(rng.choice(sys.argv[6]) for _ in range(32)) for _ in range(100)]
assert all(len(tok(p, add_special_tokens=False)["input_ids"]) == 32 for p in prompts)
reqs = [Instance(request_type="generate_until", doc={}, idx=i,
                 arguments=(p, {"until": [], "max_gen_toks": 64, "do_sample": False})) for i, p in enumerate(prompts)]
rows = []
for i in range(n):
    r = MergeRecipe(method="task_arithmetic", base=folder["base"],
                    models=[ModelSource(model=folder[f"ft{j}"], params={"weight": 0.3 + 0.05 * (i + j)}) for j in (1, 2, 3)])
    t0 = time.perf_counter(); merger.merge_into(r, target); t1 = time.perf_counter()
    outs = lm.generate_until(reqs, disable_tqdm=True); t2 = time.perf_counter()
    row = {"merge_s": t1 - t0, "eval_s": t2 - t1, "items": len(reqs)}
    if backend == "vllm":
        row["reload_s"] = target.last_load["reload_s"]
    rows.append(row)
print(json.dumps({"start_s": start_s, "rows": rows, "peak_anon": peak.stop(),
                  "kv_bytes": getattr(engine, "kv_bytes", 0) if backend == "vllm" else 0}))
"""


def run_child(code: str, *args: str, env: dict | None = None) -> dict:
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if res.returncode != 0:
        raise SystemExit(f"child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def add_tokenizer(folder: str, vocab: int) -> None:
    """A tokenizer over the model's whole vocabulary: ids 0-2 special, then one token per letter and digit (what
    prompts are made of), then filler tokens the model may generate. A BPE without merges, the form
    transformers' Qwen2 tokenizer (which the model type selects) is built from."""
    if (Path(folder) / "tokenizer_config.json").exists():
        return
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ids = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: 3 + i for i, c in enumerate(CHARS)}}
    ids.update({f"x{i}": i for i in range(len(ids), vocab)})
    core = Tokenizer(models.BPE(ids, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.save_pretrained(folder)


def median_after_first(rows: list[dict], key: str) -> float:
    import statistics

    return statistics.median(r[key] for r in rows[1:])


def summarize(res: dict) -> dict:
    rows = res["rows"]
    out = {"merge_s": median_after_first(rows, "merge_s"), "eval_s": median_after_first(rows, "eval_s"),
           "items_per_s": median_after_first([dict(r, ips=r["items"] / r["eval_s"]) for r in rows], "ips"),
           "candidate_s": median_after_first([dict(r, c=r["merge_s"] + r["eval_s"]) for r in rows], "c"),
           "start_s": res.get("start_s")}
    if "reload_s" in rows[0]:
        out["reload_s"] = median_after_first(rows, "reload_s")
        out["pure_merge_s"] = out["merge_s"] - out["reload_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="250m")
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--root", default=str(Path.home() / ".cache" / "evomerge" / "bench-models"))
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out: zoo, random")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--from-results", action="store_true",
                    help="print (and write) the tables of the last run's results/eval_speed.json; measure nothing")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console()
    skip = set(filter(None, args.skip.split(",")))
    th, n = str(args.threads), str(args.candidates)
    out: dict = {"threads": args.threads, "candidates": args.candidates, "size": args.size}
    results = HERE / "results"
    if args.from_results:
        out = json.loads((results / "eval_speed.json").read_text())
        args.threads, args.candidates = out["threads"], out["candidates"]
        args.size = out.get("random", {}).get("size", args.size)
        skip = {"zoo", "random"}
    if "zoo" not in skip:
        out["zoo"] = {b: run_child(_ZOO, b, th, n) for b in ("hf", "vllm")}
    if "random" not in skip:
        folder = build_set(Path(args.root), args.size, "bfloat16")
        for f in folder.values():
            add_tokenizer(f, SIZES[args.size]["vocab_size"])
        res = {b: run_child(_RANDOM, b, th, n, json.dumps(folder), json.dumps(VLLM_OPTS), CHARS) for b in ("hf", "vllm")}
        from evomerge.execution.memory_plan import model_facts, worker_memory

        facts = model_facts(folder["base"])
        plan = worker_memory(facts=facts, n_models=3, n_sources=4, batch_size=64, cache_budget=0, backend="vllm",
                             vllm=VLLM_OPTS)
        out["random"] = {"size": args.size, "params": facts.params, "model_bytes": facts.params * 2,
                         "plan_host_bytes": plan.host_bytes, **res}
    if not args.from_results:
        results.mkdir(exist_ok=True)
        (results / "eval_speed.json").write_text(json.dumps(out, indent=1))
    tables = render(out)
    for title, header, rows in tables:
        t = Table(title=title)
        for h in header:
            t.add_column(h)
        for r in rows:
            t.add_row(*r)
        console.print(t)
    if args.write_docs:
        write_docs(tables, args)


def render(out: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    tables = []
    if "zoo" in out:
        hf, vl = (summarize(out["zoo"][b]) for b in ("hf", "vllm"))
        rows = [[name, f"{s['items_per_s']:.0f}", f"{s['candidate_s']:.3f}", f"{s.get('pure_merge_s', s['merge_s']) * 1e3:.1f}",
                 f"{s['reload_s'] * 1e3:.1f} ({s['reload_s'] / s['pure_merge_s']:.2f}x merge)" if "reload_s" in s else "-",
                 f"{s['start_s']:.1f}" if s["start_s"] else "-"]
                for name, s in (("hf", hf), ("vllm", vl))]
        rows.append(["vllm / hf", f"{vl['items_per_s'] / hf['items_per_s']:.2f}x",
                     f"{hf['candidate_s'] / vl['candidate_s']:.2f}x faster", "", "", ""])
        tables.append(("(a) zoo search tasks, 300 items per candidate",
                       ["backend", "items/s", "s/candidate", "merge ms", "reload ms", "engine start s"], rows))
        th, tv = out["zoo"]["hf"]["test"], out["zoo"]["vllm"]["test"]
        tasks = [k for k in th if k.startswith("zoo_")]
        tables.append(("(a) test split, 500 items per skill, greedy (uniform task arithmetic)",
                       ["task", "hf", "vllm", "difference (points)"],
                       [[t, f"{100 * th[t]:.1f}", f"{100 * tv[t]:.1f}", f"{100 * (tv[t] - th[t]):+.1f}"]
                        for t in tasks]))
    if "random" in out:
        r = out["random"]
        hf, vl = (summarize(r[b]) for b in ("hf", "vllm"))
        mb = r["model_bytes"]
        kv = r["vllm"]["kv_bytes"]
        rows = [[name, f"{s['items_per_s']:.2f}", f"{64 * s['items_per_s']:.0f}", f"{s['candidate_s']:.1f}",
                 f"{s.get('pure_merge_s', s['merge_s']):.2f}", f"{s['reload_s']:.2f} ({s['reload_s'] / s['pure_merge_s']:.2f}x merge)"
                 if "reload_s" in s else "-", f"{s['start_s']:.1f}", f"{r[name]['peak_anon'] / mb:.2f}"]
                for name, s in (("hf", hf), ("vllm", vl))]
        rows.append(["vllm / hf", f"{vl['items_per_s'] / hf['items_per_s']:.2f}x",
                     "", f"{hf['candidate_s'] / vl['candidate_s']:.2f}x faster",
                     "", "", "", ""])
        tables.append((f"(b) Qwen2-shaped random model, {r['params'] / 1e6:.0f}M params, bf16: 100 prompts x 64 "
                       "new tokens per candidate", ["backend", "items/s", "tokens/s (64 per item)", "s/candidate", "merge s",
                                                    "reload s", "start s", "peak anon / model"], rows))
        peak = r["vllm"]["peak_anon"]
        tables.append(("(b) vLLM worker memory", ["one model", "KV cache", "peak anon", "peak / (model + KV)",
                                                  "plan", "plan / peak"],
                       [[f"{mb / 1e6:.0f} MB", f"{kv / 1e6:.0f} MB", f"{peak / 1e6:.0f} MB",
                         f"{peak / (mb + kv):.2f}", f"{r['plan_host_bytes'] / 1e6:.0f} MB",
                         f"{r['plan_host_bytes'] / peak:.2f}"]]))
    return tables


def write_docs(tables, args) -> None:
    """This script's section of docs/benchmarks.md, between its markers, replaced."""
    import platform

    lines = ["## Evaluation speed: `hf` vs `vllm` (`benchmarks/eval_speed.py`)", "",
             "Per candidate: *merge* is the merge arithmetic (for `vllm`, the time spent producing the streamed "
             "tensors), *reload* vLLM's in-place reload of them (its layer processing included); *s/candidate* "
             "is merge + reload + evaluation. Medians of the candidates after the first. *peak anon*: the "
             "worker's peak anonymous memory above the process after imports.", "",
             f"Measured by `python benchmarks/eval_speed.py --threads {args.threads} --size {args.size} "
             f"--candidates {args.candidates} --write-docs` on {os.cpu_count()} CPU cores "
             f"({platform.machine()}, no GPU), vLLM's CPU build. Method: the script's docstring.", ""]
    for title, header, rows in tables:
        lines += [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    write_section("eval_speed.py", lines)


if __name__ == "__main__":
    main()
