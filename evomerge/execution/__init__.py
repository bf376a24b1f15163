"""Execution: ``Worker`` (merge + evaluate + estimate one recipe) and executors (registry): local, ray."""

from evomerge.execution.base import (EXECUTORS, WORKERS, CandidateResult, Executor, Worker, WorkerSpec, build_worker,
                                     safe_evaluate)

__all__ = ["EXECUTORS", "WORKERS", "CandidateResult", "Executor", "Worker", "WorkerSpec", "build_worker",
           "safe_evaluate"]
