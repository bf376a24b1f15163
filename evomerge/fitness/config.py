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

    kind: Literal["lm_eval"] = Field("lm_eval", description="lm_eval: lm-eval tasks scored on a live merged model")
    tasks: list[str] = Field(description="lm-eval task names of the search split (local YAMLs in include_path, or "
                                         "lm-eval's)")
    test_tasks: Optional[list[str]] = Field(None,
                                            description="tasks of the held-out test split (export and the finalists' "
                                                        "report)")
    include_path: list[str] = Field(default_factory=list,
                                    description="folders of local task YAMLs, or names shipped under fitness/ (zoo)")
    batch_size: int = Field(64, ge=1, description="evaluation batch size of the live model")
    num_fewshot: Optional[int] = Field(None, ge=0, description="few-shot examples per prompt (None: each task's own)")
    gen_kwargs: Optional[dict[str, Any]] = Field(None,
                                                 description="generation arguments for generate_until tasks (e.g. "
                                                             "max_gen_toks)")
    apply_chat_template: bool = Field(False, description="wrap prompts in the lead model's chat template")
    system_instruction: Optional[str] = Field(None, description="a system prompt for chat templates")
    metric: Optional[str] = Field(None,
                                  description="per-item metric of the search tasks (None: each task's first; p_gold: "
                                              "graded)")
    test_metric: Optional[str] = Field(None,
                                       description="per-item metric of the test tasks (None: metric, or each task's "
                                                   "first)")
    estimator: str = Field("adaptive",
                           description="how accuracy is estimated from a few items: full, subset_mean, anchor, pirt, "
                                       "gpirt, mpirt, gmpirt, adaptive")
    estimator_params: dict[str, Any] = Field(default_factory=dict, description="options of the estimator")
    anchors: str = Field("kmeans_correct",
                         description="how anchor items are chosen: random, stratified, kmeans_correct, kmeans_irt")
    items_per_task: int = Field(20, ge=1,
                                description="items per task each candidate answers (estimators other than full)")
    irt_dim: int = Field(5, ge=1, description="dimensions of the IRT model of a built item bank")
    bank: Optional[str] = Field(None,
                                description="item bank: online (fitted by the search), build (up front), a folder, or "
                                            "None")
    online: OnlineBankConfig = Field(default_factory=OnlineBankConfig, description="the online item bank's settings")
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig,
                                     description="multi-fidelity racing with the online bank")
    resample: Literal["never", "generation"] = Field("never",
                                                     description="generation: a fresh random item sample per "
                                                                 "generation; never: one sample")
    population: int = Field(30, ge=0,
                            description="random merges evaluated on the full split to build an item bank up front")
    population_space_share: float = Field(
        0.5, ge=0, le=1, description="share of the bank population drawn uniformly from the run's search space "
                                     "(the rest: random linear / task-arithmetic / TIES merges of the sources)")
    cache_endpoints: bool = Field(True, description="reuse the parents' and base's answers across runs (per item)")
    seed: int = Field(0, description="seeds the item samples and the bank (the same for every optimizer seed)")
    # where the worker holds the live model: "auto" = the GPU(s) Ray (or CUDA_VISIBLE_DEVICES) gave it (a model
    # spread over all of them when there are several), else CPU
    device: str = Field("auto",
                        description="where the live model lives: auto (the worker's GPUs, else CPU), cpu, cuda, cuda:N")
    # the live model's dtype ("auto": the sources'); the merge math is float32 whatever it is
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto",
                                                                     description="the live model's dtype (auto: the "
                                                                                 "sources'); the merge math is float32")
    # bytes the merger may keep for task vectors / magnitude histograms / DELLA ranks across candidates:
    # "auto" (a quarter of the memory free at start), 0, "unlimited", or a size such as "8GB"
    cache_budget: Union[int, str] = Field("auto",
                                          description="bytes the merger keeps across candidates: auto, 0, unlimited, "
                                                      "or e.g. 8GB")
    backend: str = Field("hf", description="evaluation engine: hf (transformers) or vllm (weights reloaded in place)")
    vllm: VLLMOptions = Field(default_factory=VLLMOptions, description="the vLLM engine's settings (backend: vllm)")

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
