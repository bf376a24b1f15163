"""The engine interface and its registry (``fitness.backend`` names one)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Optional

from evomerge.registry import Registry

ENGINES: Registry = Registry("evaluation backend", entry_point_group="evomerge.engines",
                             modules=["evomerge.engines.hf", "evomerge.engines.vllm"])


class Engine(ABC):
    """One worker's live model.

    ``model`` is what the merger writes each candidate into (``InMemoryMerger.merge_into``: an ``nn.Module``,
    or a weight sink with ``load_weights(named_tensors)`` and ``dtype``) and what the evaluator scores (an
    ``nn.Module`` it wraps in HFLM, or an lm-eval ``LM`` used as it is). Built once per worker, kept for the
    run."""

    #: whether data-flow recipes (layer paths over the sources) can be scored on this engine
    serves_dataflow: ClassVar[bool] = False
    model: Any

    @classmethod
    def check(cls, fitness, space, refs: list[str], lead: str) -> Optional[str]:
        """Compute-free checks of a job on this engine (``evomerge check``, before anything is written): raise
        one EvomergeError line for what it cannot serve; return a line for the check report (or None).
        ``refs``: the job's model folders on this machine (headers readable); ``lead``: the live model's."""
        return None

    @abstractmethod
    def num_parameters(self) -> int:
        """Parameters of the model last loaded (for the ``params_m`` metric)."""

    def restart(self) -> None:
        """Bring the engine back after a failure during a candidate (default: nothing to do)."""

    def close(self) -> None:
        """Release the engine."""
