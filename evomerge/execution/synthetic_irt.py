"""A synthetic worker with items: true 2PL items per task, answers drawn from a recipe's ability (no models).

Task ``k``'s ability is read from the recipe like the ``synthetic`` worker's score ``s_k`` (how close its
weights are to the task's target): ``theta_k = spread * (s_k - 0.5)``. Item ``i`` of task ``k`` loads on
``theta_k`` (discrimination in [0.7, 2.2], a little on the other tasks) with a N(0, 1) difficulty; an answer
is right when a uniform number seeded by (recipe, task, item) falls below the 2PL probability, so a recipe
answers the same item the same way every time. It takes the online bank's requests (``bank: online``,
``fidelity``) and reports the full-split accuracy otherwise: fast tests of banks, racing and resume.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import expit

from evomerge.execution.base import WORKERS, CandidateResult, Worker, WorkerSpec
from evomerge.fitness.online.config import FidelityConfig, OnlineBankConfig


class SyntheticIRTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["synthetic_irt"] = Field("synthetic_irt",
                                           description="synthetic_irt: simulated answers of a known IRT model "
                                                       "(estimator tests)")
    tasks: list[str] = Field(default_factory=lambda: ["a", "b", "c"], min_length=1, description="task names it reports")
    items_per_task: int = Field(200, ge=2, description="items per task of the simulated search split")
    num_layers: int = Field(4, ge=1, description="layers of the imagined model")
    spread: float = Field(8.0, description="how far recipes spread the simulated abilities")
    bank: Optional[Literal["online", "full"]] = Field("online",
                                                      description="online: the search fits its own bank; full: the "
                                                                  "true items' bank")
    # "generation" (with bank: full): every generation answers its own sample of sample_per_task items per task
    resample: Literal["never", "generation"] = Field("never",
                                                     description="generation (with bank: full): a fresh item sample "
                                                                 "per generation")
    sample_per_task: int = Field(20, ge=1, description="items per task of each generation's sample")
    online: OnlineBankConfig = Field(default_factory=OnlineBankConfig, description="the online item bank's settings")
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig,
                                     description="multi-fidelity racing with the online bank")
    seed: int = Field(0, description="seeds the simulated items")
    sleep_s: float = Field(0.0, ge=0, description="seconds each evaluation sleeps")

    @property
    def online_mode(self) -> bool:
        return self.bank == "online"

    @property
    def generation_sample(self) -> Optional[int]:
        return self.sample_per_task if self.resample == "generation" else None

    @model_validator(mode="after")
    def _resample(self):
        if self.resample == "generation" and self.bank == "online":
            raise ValueError("resample: generation replaces the online bank; set bank: full")
        return self


def true_items(cfg: SyntheticIRTConfig) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of every item, task-major: a (tasks * items, tasks), b (tasks * items,)."""
    rng = np.random.default_rng([cfg.seed, 99])
    k, n = len(cfg.tasks), cfg.items_per_task
    a = 0.15 * rng.random((k * n, k))
    for t in range(k):
        a[t * n:(t + 1) * n, t] = rng.uniform(0.7, 2.2, n)
    return a, rng.standard_normal(k * n)


@WORKERS.register("synthetic_irt")
class SyntheticIRTWorker(Worker):
    needs_models = False

    @classmethod
    def config_class(cls):
        return SyntheticIRTConfig

    def __init__(self, cfg: SyntheticIRTConfig, models: Optional[list[str]] = None, base: Optional[str] = None):
        self.cfg = cfg
        self.models = [m for m in (models or []) if m != base]
        self.tensors = [f"model.layers.{i}.{m}.weight" for i in range(cfg.num_layers)
                        for m in ("self_attn.q_proj", "mlp.up_proj")]
        self.a, self.b = true_items(cfg)
        self.n_answered = 0  # items answered by this worker (tests)

    @classmethod
    def from_spec(cls, spec: WorkerSpec) -> "SyntheticIRTWorker":
        return cls(spec.fitness, spec.models, spec.base)

    def theta(self, recipe, split: str = "search") -> np.ndarray:
        """Task ``k`` wants weight 1 on model ``k`` and 0.2 on the others (models absent from the recipe
        count 0): ``theta_k = spread * (exp(-mean squared distance) - 0.5)``."""
        names = self.models or [m.model for m in recipe.models if m.model != recipe.base]
        present = {m.model for m in recipe.models}
        w = np.array([[float(recipe.resolve_params(m, t).get("weight", 1.0)) if m in present else 0.0
                       for m in names] for t in self.tensors])
        shift = 0.05 if split == "test" else 0.0
        out = []
        for k in range(len(self.cfg.tasks)):
            target = np.full(len(names), 0.2 + shift)
            target[k % len(names)] = 1.0 - shift
            out.append(self.cfg.spread * (np.exp(-np.mean(np.sum((w - target) ** 2, axis=1))) - 0.5))
        return np.array(out)

    @classmethod
    def metrics(cls, fitness_cfg) -> list[str]:
        return list(fitness_cfg.tasks) + ["mean"]

    def all_items(self) -> dict[str, list[int]]:
        return {t: list(range(self.cfg.items_per_task)) for t in self.cfg.tasks}

    def answers(self, recipe, items: dict[str, list[int]], split: str = "search") -> dict[str, dict[int, float]]:
        theta = self.theta(recipe, split)
        key = hashlib.sha256(json.dumps(recipe.model_dump(mode="json"), sort_keys=True).encode()).digest()
        n = self.cfg.items_per_task
        out = {}
        for k, t in enumerate(self.cfg.tasks):
            ids = np.asarray(sorted(int(i) for i in items.get(t, [])), dtype=np.int64)
            if not len(ids):
                continue
            p = expit(self.a[k * n + ids] @ theta - self.b[k * n + ids])
            u = np.random.default_rng([int.from_bytes(key[:8], "little"), k, 0 if split == "search" else 1]).random(n)
            out[t] = {int(i): float(u[i] < pi) for i, pi in zip(ids, p)}
            self.n_answered += len(ids)
        return out

    @classmethod
    def partial_split(cls, fitness_cfg) -> bool:
        return fitness_cfg.online_mode or fitness_cfg.generation_sample is not None

    def evaluate(self, recipe, split: str = "search", request=None) -> CandidateResult:
        t0 = time.perf_counter()
        if self.cfg.sleep_s:
            time.sleep(self.cfg.sleep_s)
        fidelity = {}
        if request is not None and split == "search":
            from evomerge.fitness.online.request import answer_request

            vals, scores, fidelity = answer_request(request, lambda items: self.answers(recipe, items),
                                                    self.all_items)
        else:
            scores = self.answers(recipe, self.all_items(), split)
            vals = {t: float(np.mean(list(v.values()))) for t, v in scores.items()}
        objectives = dict(vals)
        objectives["mean"] = float(np.mean(list(vals.values())))
        return CandidateResult(objectives=objectives,
                               item_results={t: {str(i): s for i, s in v.items()} for t, v in scores.items()},
                               timings={"eval_s": time.perf_counter() - t0}, fidelity=fidelity)
