"""The fitness section of a job config (pydantic, validated once at the edge)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge.engines.vllm_options import VLLMOptions
from evomerge.fitness.online.config import FidelityConfig, OnlineBankConfig


def _registered(registry, name: str, what: str) -> str:
    """``name`` if ``registry`` holds it, else a validation error listing the names it knows."""
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r} (known: {', '.join(registry.names())})")
    return name


class FitnessConfig(BaseModel):
    """Which lm-eval tasks, how to run them, and how to estimate accuracy from a few items.

    ``include_path``: folders of local task YAMLs, or names of folders shipped under ``fitness/`` (``zoo``).
    ``estimator``: a name in ``ESTIMATORS`` (``full`` evaluates the whole split; the others evaluate
    ``items_per_task`` anchors chosen by ``anchors``). ``bank``: ``online`` (the default for ``adaptive``): no
    up-front bank; the search fits its own from the base, the parents (on ``online.pool_per_task`` items per
    task) and every candidate's answers, refitted each generation, with multi-fidelity racing
    (``fidelity``; see ``fitness/online/``). ``build`` (the default for the other IRT estimators): built up
    front from the base, the parents and ``population`` random merges on the full split (a
    ``population_space_share`` of them random points of the run's search space) and saved under the run
    directory. A folder: an existing item bank, used as it is. Unset with an estimator that reads no bank
    (``subset_mean``, ``anchor``) and ``anchors: random``: no bank at all (nothing is evaluated up front).
    ``resample``: ``generation`` (with ``estimator: subset_mean``, ``anchors: random``): every generation
    answers its own seeded random sample of ``items_per_task`` items per task, shared by its candidates (steady
    state: every ``population`` results), so values are paired within a generation and no fixed sample is
    climbed across generations; ``never``: one sample for the whole run.
    ``metric``: the search tasks' per-item metric (default: each task's first); ``p_gold`` scores
    loglikelihood / multiple_choice tasks by the probability of the gold answer (graded, so a few items
    separate close candidates). ``test_metric``: the test tasks' (default: ``metric``, or each test task's
    first metric when ``metric`` is ``p_gold``, a search-side score).
    ``device`` / ``dtype``: where and in which precision the worker keeps the live model (``auto``: CUDA when
    the worker sees a GPU).
    ``backend``: the evaluation engine each worker keeps for the run (``evomerge.engines``): ``hf``
    (transformers, every recipe kind) or ``vllm`` (one vLLM engine per worker, each candidate reloaded into it
    in place; its settings in ``vllm``).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["lm_eval"] = "lm_eval"
    tasks: list[str]
    test_tasks: Optional[list[str]] = None
    include_path: list[str] = Field(default_factory=list)
    batch_size: int = Field(64, ge=1)
    num_fewshot: Optional[int] = Field(None, ge=0)
    gen_kwargs: Optional[dict[str, Any]] = None
    apply_chat_template: bool = False
    system_instruction: Optional[str] = None
    metric: Optional[str] = None
    test_metric: Optional[str] = None
    estimator: str = "adaptive"
    estimator_params: dict[str, Any] = Field(default_factory=dict)
    anchors: str = "kmeans_correct"
    items_per_task: int = Field(20, ge=1)
    irt_dim: int = Field(5, ge=1)
    bank: Optional[str] = None  # None: online for adaptive, build for the other IRT estimators
    online: OnlineBankConfig = Field(default_factory=OnlineBankConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    resample: Literal["never", "generation"] = "never"
    population: int = Field(30, ge=0)
    population_space_share: float = Field(
        0.5, ge=0, le=1, description="share of the bank population drawn uniformly from the run's search space "
                                     "(the rest: random linear / task-arithmetic / TIES merges of the sources)")
    cache_endpoints: bool = True
    seed: int = 0
    # where the worker holds the live model: "auto" = the GPU(s) Ray (or CUDA_VISIBLE_DEVICES) gave it (a model
    # spread over all of them when there are several), else CPU
    device: str = "auto"
    # the live model's dtype ("auto": the sources'); the merge math is float32 whatever it is
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # bytes the merger may keep for task vectors / magnitude histograms / DELLA ranks across candidates:
    # "auto" (a quarter of the memory free at start), 0, "unlimited", or a size such as "8GB"
    cache_budget: Union[int, str] = "auto"
    backend: str = "hf"
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v):
        if not v:
            raise ValueError("at least one task")
        if len(set(v)) != len(v):
            raise ValueError(f"tasks listed twice: {v}")
        return v

    @field_validator("estimator")
    @classmethod
    def _estimator(cls, v):
        from evomerge.fitness.estimators import ESTIMATORS

        return _registered(ESTIMATORS, v, "estimator")

    @field_validator("backend")
    @classmethod
    def _backend(cls, v):
        from evomerge.engines import ENGINES

        return _registered(ENGINES, v, "backend")

    @field_validator("anchors")
    @classmethod
    def _anchors(cls, v):
        from evomerge.fitness.anchors import ANCHOR_METHODS

        return _registered(ANCHOR_METHODS, v, "anchor method")

    @model_validator(mode="after")
    def _test(self):
        from evomerge.errors import EvomergeError
        from evomerge.fitness.estimators import ESTIMATORS
        from evomerge.fitness.evaluator import P_GOLD

        if self.test_tasks is not None and len(self.test_tasks) != len(self.tasks):
            raise ValueError("test_tasks must pair one-to-one with tasks")
        if self.resample == "generation" and (self.estimator, self.anchors) != ("subset_mean", "random"):
            raise ValueError("resample: generation draws random items for each generation; it needs estimator "
                             f"subset_mean and anchors random, not {self.estimator!r} / {self.anchors!r}")
        if self.bank == "online" and self.estimator != "adaptive":
            raise ValueError(f"bank: online works with estimator adaptive, not {self.estimator!r} "
                             "(use bank: build or a bank folder)")
        if self.metric == P_GOLD and ESTIMATORS.get(self.estimator).needs_bank:
            raise ValueError(f"metric p_gold gives graded scores, and estimator {self.estimator!r} fits an IRT "
                             "model to 0/1 answers: use estimator subset_mean or full")
        try:  # estimator params that decide the item budget fail here, not in a worker
            ESTIMATORS.get(self.estimator).first_round(self.items_per_task, dict(self.estimator_params))
        except (EvomergeError, TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def test_metric_or_default(self) -> Optional[str]:
        """The test tasks' per-item metric (None: each test task's first)."""
        from evomerge.fitness.evaluator import P_GOLD

        return self.test_metric or (None if self.metric == P_GOLD else self.metric)

    @property
    def online_mode(self) -> bool:
        """True when the search fits its own item bank online (``bank: online``, or unset with adaptive)."""
        return self.bank == "online" or (self.bank is None and self.estimator == "adaptive")

    @property
    def generation_sample(self) -> Optional[int]:
        """Items per task drawn anew for every generation (``resample: generation``), else None."""
        return self.items_per_task if self.resample == "generation" else None

    @property
    def metrics(self) -> list[str]:
        """Objective names this fitness reports: one per search task."""
        return list(self.tasks)
