"""A cheap, deterministic stand-in for merge + evaluate, computed from the recipe alone (no models).

Task ``k`` prefers model ``k mod N`` at weight 1.0 and the others at 0.2 on every tensor; its score is
``exp(-mean squared distance)`` of the recipe's resolved per-tensor weights from that target, in (0, 1]. It
exercises the whole search machinery (decode, overrides, ledger, resume) in milliseconds, and is what the
kill/resume tests and the overhead benchmark use. ``fail_above`` / ``nan_above`` turn large weights into an
exception / a NaN metric, to exercise failure handling; ``sleep_s`` simulates evaluation time (``sleep_spread_s``: uneven, per recipe).
"""

from __future__ import annotations

import math
import time
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evomerge.execution.base import WORKERS, CandidateResult, Worker, WorkerSpec


class SyntheticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["synthetic"] = Field("synthetic",
                                       description="synthetic: a cheap closed-form score of the recipe (tests, "
                                                   "benchmarks)")
    tasks: list[str] = Field(default_factory=lambda: ["a", "b"], min_length=1, description="task names it reports")
    num_layers: int = Field(4, ge=1, description="layers of the imagined model")
    sleep_s: float = Field(0.0, ge=0, description="seconds each evaluation sleeps (a stand-in for real cost)")
    sleep_spread_s: float = Field(0.0, ge=0, description="extra sleep in [0, this), set by the recipe: uneven costs")
    fail_above: Optional[float] = Field(None,
                                        description="fail candidates whose score is above this (failure handling "
                                                    "tests)")
    nan_above: Optional[float] = Field(None, description="report NaN above this score (non-finite fitness tests)")
    test_shift: float = Field(0.05, description="offset of the test split's scores from the search split's")


@WORKERS.register("synthetic")
class SyntheticWorker(Worker):

    @classmethod
    def config_class(cls):
        return SyntheticConfig
    needs_models = False  # computed from the recipe; model references are only names here

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        self.tensors = [f"model.layers.{i}.{m}.weight" for i in range(cfg.num_layers) for m in ("self_attn.q_proj", "mlp.up_proj")]
        self.tensors += ["model.embed_tokens.weight", "lm_head.weight"]

    @classmethod
    def from_spec(cls, spec: WorkerSpec) -> "SyntheticWorker":
        return cls(spec.fitness)

    @classmethod
    def metrics(cls, fitness_cfg) -> list[str]:
        return list(fitness_cfg.tasks) + ["mean"]

    def evaluate(self, recipe, split: str = "search") -> CandidateResult:
        t0 = time.perf_counter()
        models = [m.model for m in recipe.models if m.model != recipe.base]
        w = np.array([[float(recipe.resolve_params(m, t).get("weight", 1.0)) for m in models] for t in self.tensors])
        if self.cfg.fail_above is not None and w.max() > self.cfg.fail_above:
            raise RuntimeError(f"synthetic merge failure: weight {w.max():.3f} > {self.cfg.fail_above}")
        if self.cfg.sleep_s or self.cfg.sleep_spread_s:
            time.sleep(self.cfg.sleep_s + self.cfg.sleep_spread_s * float(abs(w.sum()) * 997 % 1.0))
        t1 = time.perf_counter()
        shift = self.cfg.test_shift if split == "test" else 0.0
        scores = {}
        for k, task in enumerate(self.cfg.tasks):
            target = np.full(len(models), 0.2 + shift)
            target[k % len(models)] = 1.0 - shift
            scores[task] = float(math.exp(-np.mean(np.sum((w - target) ** 2, axis=1))))
        if self.cfg.nan_above is not None and w.max() > self.cfg.nan_above:
            scores[self.cfg.tasks[0]] = float("nan")
        objectives = dict(scores)
        objectives["mean"] = float(np.mean(list(scores.values())))
        return CandidateResult(objectives=objectives, item_results={t: {"0": s} for t, s in scores.items()},
                               timings={"merge_s": t1 - t0, "eval_s": time.perf_counter() - t1})
