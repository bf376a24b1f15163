"""Execution contracts: ``CandidateResult``, the ``Worker`` (recipe -> result) and the ``Executor`` interface.

A Worker is built once per process from a picklable :class:`WorkerSpec` (so a Ray actor can build its own)
and maps a recipe to a :class:`CandidateResult`. Executors run recipes on workers and yield results as they
complete; every per-candidate failure is a result with ``status="failed"`` and a reason, never an exception.

Writing an executor (the Ray one plugs in here)::

    @EXECUTORS.register("ray")
    class RayExecutor(Executor):
        def map(self, tasks):          # tasks: list of (key, recipe)
            ...                         # yield (key, CandidateResult) in completion order
        def close(self): ...
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Hashable, Iterator, Literal, Optional, Sequence

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny

from evomerge.errors import EvomergeError
from evomerge.registry import Registry

log = logging.getLogger(__name__)

EXECUTORS: Registry = Registry("executor", entry_point_group="evomerge.executors",
                               modules=["evomerge.execution.local", "evomerge.execution.ray_executor"])
WORKERS: Registry = Registry("fitness kind", entry_point_group="evomerge.workers",
                             modules=["evomerge.execution.synthetic", "evomerge.execution.synthetic_irt",
                                     "evomerge.execution.lm_eval_worker"])


@dataclass
class CandidateResult:
    """What one evaluated recipe gives: metric values, per-item scores, timings and status."""

    objectives: dict[str, float] = field(default_factory=dict)
    item_results: dict[str, dict[str, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    status: Literal["ok", "failed"] = "ok"
    reason: str = ""
    fidelity: dict[str, Any] = field(default_factory=dict)  # online bank: items, std error, racing level

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def failed(cls, reason: str, timings: Optional[dict[str, float]] = None) -> "CandidateResult":
        return cls(status="failed", reason=reason.splitlines()[0][:500] if reason else "failed",
                   timings=timings or {})


def fitness_from_data(value: Any) -> BaseModel:
    """A job's ``fitness`` section as the typed config of its worker kind (``kind``), validated once, here."""
    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, dict) or "kind" not in value:
        raise ValueError("fitness needs a kind (lm_eval or synthetic)")
    try:
        worker_cls = WORKERS.get(str(value["kind"]))
    except EvomergeError as exc:
        raise ValueError(str(exc)) from None
    return worker_cls.config_class().model_validate(value)


#: the ``fitness`` field of a job config and of a worker spec: typed by its ``kind`` (a worker plugin's config)
FitnessSection = Annotated[SerializeAsAny[BaseModel], BeforeValidator(fitness_from_data)]


class WorkerSpec(BaseModel):
    """Everything a process needs to build its Worker (picklable, sent to remote executors)."""

    model_config = ConfigDict(extra="forbid")
    fitness: FitnessSection
    sources: list[str] = Field(default_factory=list)
    base: Optional[str] = None
    seed: int = 0
    run_dir: Optional[str] = None  # where the worker may keep run-level artifacts (item bank)
    space: Optional[Any] = None    # the run's search space config (name, path or mapping) with ``models``
    models: list[str] = Field(default_factory=list)

    def build_space(self):
        """The run's search space (None if the spec has none)."""
        if self.space is None:
            return None
        from evomerge.spaces import build_space

        return build_space(self.space, base=self.base, models=self.models)


class Worker(ABC):
    """Merge + evaluate + estimate one recipe; built once per process."""

    #: whether the worker reads the job's models (False: references are only names, e.g. synthetic fitness)
    needs_models: bool = True

    @classmethod
    def config_class(cls) -> type[BaseModel]:
        """The fitness config class of this worker kind (``kind`` literal + options); imported lazily so that
        listing worker kinds stays cheap."""
        raise NotImplementedError

    @classmethod
    def metrics(cls, fitness_cfg: BaseModel) -> list[str]:
        """Names of the metrics ``evaluate`` reports (objectives must be among them)."""
        raise NotImplementedError

    @classmethod
    def partial_split(cls, fitness_cfg: BaseModel) -> bool:
        """True when told values come from part of the search split and ``evaluate`` takes a ``request``
        naming items: the run's finalists are then re-scored on fresh items (``run/finalists.py``)."""
        return False

    @abstractmethod
    def evaluate(self, recipe, split: str = "search") -> CandidateResult:
        """Evaluate one recipe on the ``search`` or ``test`` split; may raise (the caller records failures).

        Workers that support the online item bank also take ``request=`` (a ``FitnessRequest``: which items,
        or the bank and racing threshold); executors pass it only when a task carries one."""


def build_worker(spec: WorkerSpec) -> Worker:
    return WORKERS.get(spec.fitness.kind).from_spec(spec)


def safe_evaluate(worker: Worker, recipe, split: str = "search", request: Any = None) -> CandidateResult:
    """``worker.evaluate`` with every exception and non-finite metric turned into a failed result."""
    t0 = time.perf_counter()
    try:
        res = (worker.evaluate(recipe, split=split) if request is None
               else worker.evaluate(recipe, split=split, request=request))
    except Exception as exc:  # a bad candidate must not stop the run
        log.warning("candidate failed: %s: %s", type(exc).__name__, exc)
        return CandidateResult.failed(f"{type(exc).__name__}: {exc}", {"total_s": time.perf_counter() - t0})
    bad = [k for k, v in res.objectives.items() if not math.isfinite(v)]
    if res.status == "ok" and bad:
        return CandidateResult.failed(f"non-finite metric(s) {', '.join(bad)}", res.timings)
    return res


class Executor(ABC):
    """Runs recipes on Workers; results stream back in completion order."""

    def __init__(self, spec: WorkerSpec, run_dir: Optional[Any] = None, **options: Any):
        self.spec = spec
        self.run_dir = run_dir  # the run directory (the Ray executor puts its temp dir in RUN_DIR/ray)
        self.options = options

    @abstractmethod
    def map(self, tasks: Sequence[tuple[Hashable, Any]], split: str = "search") -> Iterator[tuple[Hashable, CandidateResult]]:
        """Evaluate ``(key, recipe)`` pairs (or ``(key, recipe, request)``: see ``safe_evaluate``); yield
        ``(key, result)`` as each completes."""

    def close(self) -> None:
        """Release workers (processes, actors)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
