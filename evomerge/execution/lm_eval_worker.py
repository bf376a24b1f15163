"""The real worker: turn a recipe into a live model and score it with lm-eval (Fitness).

A parameter-space recipe is merged into one live model in place (InMemoryMerger) held by the worker's
evaluation engine (``fitness.backend``: a transformers model, or a vLLM engine reloaded in place; an engine
that fails mid-candidate is restarted and the candidate recorded as failed); a data-flow recipe becomes a
path model over the sources' layers, loaded once and shared (``build_path_model``, no weights copied).
Built once per process: sources, the base model and tokenizer, the lm-eval tasks and the item bank / anchors /
estimator (``Fitness.prepare``). Metrics: one per search task (estimated accuracy), ``mean``, and the model's
size (``num_layers``, ``params_m``: millions of parameters of the exported checkpoint) for size objectives; on
the ``test`` split the task metrics are the full test-split accuracies.
"""

from __future__ import annotations

import time

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.execution.base import WORKERS, CandidateResult, Worker, WorkerSpec
from evomerge.models.safetensors_io import open_checkpoint


@WORKERS.register("lm_eval")
class LMEvalWorker(Worker):

    @classmethod
    def config_class(cls):
        from evomerge.fitness.config import FitnessConfig  # heavy (lm-eval, sklearn): only when used

        return FitnessConfig

    def __init__(self, cfg, spec: WorkerSpec):
        import torch
        from transformers import AutoTokenizer

        from evomerge.engines import ENGINES
        from evomerge.fitness import Fitness
        from evomerge.merge import InMemoryMerger
        from evomerge.models import resolve_model

        torch.manual_seed(spec.seed)
        if not spec.sources:
            raise EvomergeError("the lm_eval worker needs source models")
        self.cfg = cfg
        n_gpus = torch.cuda.device_count() if cfg.device == "auto" else 0
        self.device = torch.device(("cuda" if n_gpus else "cpu") if cfg.device == "auto" else cfg.device)
        self.merger = InMemoryMerger(spec.sources, device=self.device, cache_budget=cfg.cache_budget,
                                     dtype=None if cfg.dtype == "auto" else getattr(torch, cfg.dtype))
        lead = resolve_model(spec.base or spec.sources[0])
        space = spec.build_space()
        # vocabularies that differ, rule union: the tokenizer of the model with the most tokens
        vocab = space.vocab() if space is not None else "base"
        tokenizer_dir = self.merger.tokenizer_folder(spec.base or spec.sources[0], vocab)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        # the live model: the merger's dtype (the sources' unless the config says otherwise)
        self.engine = ENGINES.get(cfg.backend)(lead, tokenizer_dir, self.merger.dtype, self.device, cfg)
        self.model = self.engine.model
        lead_config = open_checkpoint(lead).config
        self.num_layers = int((lead_config.get("text_config") or lead_config).get("num_hidden_layers") or 0)
        self.path_sources = None  # data-flow sources, loaded on the first data-flow recipe
        self.fitness = Fitness.from_config(cfg)
        self.fitness.prepare(self.model, self.tokenizer, self.merger, spec.sources, spec.base, spec.run_dir,
                             space=space)

    @classmethod
    def from_spec(cls, spec: WorkerSpec) -> "LMEvalWorker":
        return cls(spec.fitness, spec)

    @classmethod
    def metrics(cls, fitness_cfg) -> list[str]:
        return list(fitness_cfg.metrics) + ["mean", "num_layers", "params_m"]

    @classmethod
    def partial_split(cls, fitness_cfg) -> bool:
        from evomerge.fitness.estimators import ESTIMATORS

        return not ESTIMATORS.get(fitness_cfg.estimator).full_split

    def evaluate(self, recipe, split: str = "search", request=None) -> CandidateResult:
        from evomerge.recipe.dataflow import DataFlowRecipe

        t0 = time.perf_counter()
        try:
            if isinstance(recipe, DataFlowRecipe):
                if not self.engine.serves_dataflow:
                    raise EvomergeError(f"backend {self.cfg.backend} cannot score data-flow recipes")
                model, (layers, params) = self._path_model(recipe)
            else:
                self.merger.merge_into(recipe, self.model)
                model = self.model
                layers, params = self.num_layers, self.engine.num_parameters()
                if not self.merger.finite:
                    return CandidateResult.failed("merged weights contain NaN/inf",
                                                  {"merge_s": time.perf_counter() - t0})
            t1 = time.perf_counter()
            objectives, raw = self.fitness.score(model, self.tokenizer, split=split, request=request)
        except EvomergeError:
            raise
        except Exception:
            self.engine.restart()  # whatever the engine held mid-candidate is gone: the next one starts clean
            raise
        t2 = time.perf_counter()
        objectives = {k: float(v) for k, v in objectives.items()}
        objectives["mean"] = float(np.mean(list(objectives.values())))
        objectives.update(num_layers=float(layers), params_m=params / 1e6)
        items = {t: {str(i): float(s) for i, s in v.items()} for t, v in raw.scores.items()}
        timings = {"merge_s": t1 - t0, "eval_s": t2 - t1}  # merge_s includes an engine's reload, if any
        reload_s = getattr(self.model, "last_load", {}).get("reload_s")
        if reload_s is not None:
            timings["reload_s"] = reload_s
        return CandidateResult(objectives=objectives, item_results=items, timings=timings,
                               fidelity=dict(self.fitness.last_fidelity) if request is not None else {})

    def _path_model(self, recipe):
        from evomerge.dataflow import SourceModels, build_path_model, dataflow_size

        if self.path_sources is None:
            self.path_sources = SourceModels(device=self.device, dtype=recipe.dtype)
        size = dataflow_size(recipe)
        return build_path_model(recipe, self.path_sources), (size.layers, size.parameters)
