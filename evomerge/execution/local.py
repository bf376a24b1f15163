"""The in-process executor: one Worker, built on first use, evaluating recipes one after the other."""

from __future__ import annotations

from evomerge.execution.base import EXECUTORS, Executor, Worker, build_worker, safe_evaluate


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    def __init__(self, spec, **options):
        super().__init__(spec, **options)
        self._worker: Worker | None = None

    @property
    def worker(self) -> Worker:
        if self._worker is None:
            self._worker = build_worker(self.spec)
        return self._worker

    def map(self, tasks, split="search"):
        for key, recipe, *request in tasks:  # (key, recipe[, request])
            yield key, safe_evaluate(self.worker, recipe, split=split, request=request[0] if request else None)

    def close(self):
        self._worker = None
