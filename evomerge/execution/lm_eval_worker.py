"""The real worker: merge a recipe into one live model (InMemoryMerger) and score it with lm-eval (Fitness).

Built once per process: sources loaded once, the base model and tokenizer loaded once, the lm-eval tasks
built once, the item bank / anchors / estimator prepared once (``Fitness.prepare``). Metrics: one per search
task (estimated accuracy) plus ``mean``; on the ``test`` split, the full test-split accuracies.
"""

from __future__ import annotations

import time

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.execution.base import WORKERS, CandidateResult, Worker, WorkerSpec


@WORKERS.register("lm_eval")
class LMEvalWorker(Worker):
    needs_models = True

    @classmethod
    def config_class(cls):
        from evomerge.fitness.config import FitnessConfig  # heavy (lm-eval, sklearn): only when used

        return FitnessConfig

    def __init__(self, cfg, spec: WorkerSpec):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from evomerge.fitness import Fitness
        from evomerge.merge import InMemoryMerger
        from evomerge.models import resolve_model

        torch.manual_seed(spec.seed)
        if not spec.sources:
            raise EvomergeError("the lm_eval worker needs source models")
        self.cfg = cfg
        self.merger = InMemoryMerger(spec.sources)
        lead = resolve_model(spec.base or spec.sources[0])
        self.model = AutoModelForCausalLM.from_pretrained(lead, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(lead)
        self.fitness = Fitness.from_config(cfg)
        self.fitness.prepare(self.model, self.tokenizer, self.merger, spec.sources, spec.base, spec.run_dir)

    @classmethod
    def from_spec(cls, spec: WorkerSpec) -> "LMEvalWorker":
        return cls(cls.config_class().model_validate(spec.fitness), spec)

    @classmethod
    def metrics(cls, fitness_cfg) -> list[str]:
        return list(fitness_cfg.metrics) + ["mean"]

    def evaluate(self, recipe, split: str = "search") -> CandidateResult:
        import torch

        t0 = time.perf_counter()
        self.merger.merge_into(recipe, self.model)
        with torch.no_grad():
            if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
                return CandidateResult.failed("merged weights contain NaN/inf",
                                              {"merge_s": time.perf_counter() - t0})
        t1 = time.perf_counter()
        objectives, raw = self.fitness.score(self.model, self.tokenizer, split=split)
        t2 = time.perf_counter()
        objectives = {k: float(v) for k, v in objectives.items()}
        objectives["mean"] = float(np.mean(list(objectives.values())))
        items = {t: {str(i): float(s) for i, s in v.items()} for t, v in raw.scores.items()}
        return CandidateResult(objectives=objectives, item_results=items,
                               timings={"merge_s": t1 - t0, "eval_s": t2 - t1})
