"""`evomerge plan`: the memory plan of a job before any compute, refusals, and its arithmetic against a measured
worker peak."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from click.testing import CliRunner

from evomerge.cli import _load_verbs, cli
from evomerge.execution.memory_plan import worker_memory
from evomerge.recipe import recipe_from_dict, recipe_to_yaml

_load_verbs()


def run_cli(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_gpu_config_fits_one_80gb_gpu_and_needs_two_24gb_gpus():
    res = run_cli("plan", "gpu_llama_ties", "--gpus", "8", "--gpu-memory", "80GB", "--host-memory", "512GB")
    assert res.exit_code == 0, res.output
    assert "8.03B params" in res.output
    assert "-> 1 GPU(s) of 80 GB" in res.output
    assert "workers that fit on this node (8 GPU(s) of 80 GB): 8" in res.output
    assert "on 24 GB GPUs: 2 GPU(s) per worker" in res.output


def test_a_job_that_cannot_fit_is_refused_in_one_line():
    res = run_cli("plan", "gpu_llama_ties", "--gpus", "1", "--gpu-memory", "16GB")
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: one worker needs") and "this node has 1" in lines[0]


def test_cpu_job_plan_counts_workers_on_host_memory(ci_zoo, tmp_path):
    import yaml

    from evomerge.resources import resolve

    cfg = yaml.safe_load(resolve("experiments", "zoo_demo").read_text())
    cfg["base"] = str(ci_zoo / "base")
    cfg["models"] = [str(ci_zoo / n) for n in ("add", "reverse", "sort")]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    res = run_cli("plan", str(tmp_path / "job.yaml"), "--host-memory", "4GB")
    assert res.exit_code == 0, res.output
    assert "per worker on the host" in res.output and "workers that fit on this node" in res.output
    res = run_cli("plan", str(tmp_path / "job.yaml"), "--host-memory", "1MB")
    assert res.exit_code == 2 and res.output.startswith("error: one worker needs")


_CHILD = r"""
import json, sys, threading, time
def anon():
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon'):
            return int(line.split()[1]) * 1024
import torch
torch.set_num_threads(1)
from transformers import AutoModelForCausalLM
from evomerge.merge import InMemoryMerger
from evomerge.recipe import recipe_from_yaml
r = recipe_from_yaml(sys.argv[1])
import gc
del_me = AutoModelForCausalLM.from_pretrained(r.base)  # imports the modeling code: part of the baseline
del del_me; gc.collect()
base = anon(); peak = [base]; stop = []
def sample():
    while not stop:
        peak[0] = max(peak[0], anon()); time.sleep(0.0005)
t = threading.Thread(target=sample); t.start()
merger = InMemoryMerger(r.sources(), cache_budget=0)
model = AutoModelForCausalLM.from_pretrained(r.base, dtype=merger.dtype)
for _ in range(2):
    merger.merge_into(r, model)
stop.append(1); t.join()
print(json.dumps({"peak": max(peak[0], anon()) - base}))
"""


def test_plan_predicts_the_measured_worker_peak_within_20_percent(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=2048, vocab_size=32000, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    refs = []
    for i in range(3):
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(state[k] + 0.01 * i * torch.randn(p.shape))
        model.save_pretrained(tmp_path / f"m{i}")
        refs.append(str(tmp_path / f"m{i}"))
    recipe = recipe_from_dict({"method": "ties", "base": refs[0],
                               "models": [{"model": r, "params": {"density": 0.5}} for r in refs[1:]]})
    (tmp_path / "r.yaml").write_text(recipe_to_yaml(recipe))
    res = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "r.yaml")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    measured = json.loads(res.stdout.strip().splitlines()[-1])["peak"]
    predicted = worker_memory(recipe, device="cpu", cache_budget=0).host_bytes
    assert abs(predicted - measured) <= 0.2 * measured, (predicted, measured)


def test_union_vocab_plans_the_live_model_with_the_largest_sources_rows(tmp_path):
    """Under ``vocab: union`` the live model has the largest source's rows (66 against the base's 64): the plan
    counts them, in embed_tokens and lm_head (untied), and only then."""
    import yaml

    from evomerge.execution.memory_plan import plan_job
    from evomerge.run.config import load_run_config
    from vocab_models import make_family

    fam = make_family(tmp_path / "fam")
    plans = {}
    for rule in ("base", "union"):
        job = {"name": f"v_{rule}", "base": fam["base"], "models": [fam["ft1"], fam["ft2"]],
               "space": {"preset": "task_arithmetic_global", "vocab": rule},
               "fitness": {"kind": "lm_eval", "tasks": ["zoo_add"], "include_path": ["zoo"], "device": "cpu"},
               "objectives": [{"metric": "mean"}], "optimizer": {"name": "cma"}, "budget": {"evaluations": 8}}
        (tmp_path / f"{rule}.yaml").write_text(yaml.safe_dump(job))
        plans[rule] = plan_job(load_run_config(str(tmp_path / f"{rule}.yaml")), host_bytes=4 * 2**30)
    hidden = 32
    assert plans["union"].worker.model_bytes - plans["base"].worker.model_bytes == 2 * 2 * hidden * 4
    assert plans["union"].worker.eval_bytes > plans["base"].worker.eval_bytes  # logits over 66 tokens, not 64
