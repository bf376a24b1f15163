"""The Ray executor: a pool of long-lived actors, each building its ``Worker`` once, fed steady-state.

Every actor builds the Worker from the run's :class:`WorkerSpec` once (sources, model, evaluator; the spec is
put in the object store once and the sources are read from their shared paths), then merges + evaluates
candidates in place. The driver hands a candidate to an actor as soon as the actor is free, so no worker idles
while candidates wait, and yields results in completion order. ``map`` also accepts a lazy iterator: it pulls
the next task only when a worker is free, which is what a steady-state (partial-tell) driver needs.

Faults: an actor that dies, or runs a candidate past ``timeout_s``, is killed and replaced, and the candidate
is retried up to ``max_retries`` times, then returned as a failed result with the reason. The driver's ledger
and checkpoint stay the source of truth; the executor keeps no state worth saving.

Local Ray (no ``address``): started with its temp dir at ``RUN_DIR/ray``, dashboard off, auth disabled, usage
stats off. Unix socket paths are limited to 107 bytes, so a long run dir is reached through a short symlink in
the system temp dir (removed on close); every file Ray writes still lands under ``RUN_DIR/ray``.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Iterator, Optional

from evomerge.errors import EvomergeError
from evomerge.execution.base import EXECUTORS, WORKERS, CandidateResult, Executor, WorkerSpec
from evomerge.execution.ray_cluster import RayConnection, RayOptions, first_line, hub_env, parse_options
from evomerge.execution.ray_nodes import check_models_on_nodes, model_refs

log = logging.getLogger(__name__)


class _EvalActor:
    """Runs in the actor process: builds the Worker once, then evaluates recipes in place."""

    def __init__(self, spec: WorkerSpec, torch_threads: int):
        self.build_error = ""
        try:
            import torch

            torch.set_num_threads(torch_threads)
        except ImportError:
            pass
        try:
            from evomerge.execution.base import build_worker

            self.worker = build_worker(spec)
        except Exception as exc:  # reported by ready(), so the driver can raise one clear line
            self.build_error = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def ready(self) -> tuple[int, str]:
        return os.getpid(), self.build_error

    def where(self) -> tuple[str, list[str]]:
        """(Ray node id, GPU ids) of this actor: where the cluster placed it."""
        import ray

        return ray.get_runtime_context().get_node_id(), [str(g) for g in ray.get_gpu_ids()]

    def evaluate(self, recipe, split: str, request: Any = None) -> tuple[CandidateResult, float]:
        from evomerge.execution.base import safe_evaluate

        t0 = time.perf_counter()
        res = safe_evaluate(self.worker, recipe, split=split, request=request)
        return res, time.perf_counter() - t0


@functools.lru_cache(maxsize=None)
def _remote_actor_class():
    import ray

    return ray.remote(max_restarts=0, max_task_retries=0)(_EvalActor)


@dataclass
class _Slot:
    """One actor and what it is doing."""

    index: int
    actor: Any
    ready_ref: Any = None
    started: float = field(default_factory=time.monotonic)
    ready_at: Optional[float] = None  # monotonic time the Worker was built (utilisation counts from here)
    pid: int = 0


@dataclass
class _Task:
    key: Hashable
    recipe: Any
    request: Any = None  # the online bank's FitnessRequest, if any
    attempts: int = 0
    reasons: list[str] = field(default_factory=list)


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Evaluate candidates on a pool of Ray actors (see the module docstring)."""

    Options = RayOptions

    @classmethod
    def validate_options(cls, options: dict[str, Any]) -> None:
        """Check the options without starting Ray (called by ``validate_run``)."""
        parse_options(options)

    def __init__(self, spec: WorkerSpec, run_dir: Optional[os.PathLike] = None, **options: Any):
        super().__init__(spec, run_dir=Path(run_dir) if run_dir is not None else None, **options)
        self.opts = parse_options(options)
        self._slots: dict[int, _Slot] = {}
        self._next_index = 0
        self._spec_ref = None
        self._closed = False
        self.name_prefix = f"evomerge-{os.getpid()}-{id(self):x}"
        #: stats of the last ``map``: candidates, wall_s, busy_s, utilisation, overhead_s_per_candidate,
        #: retries, replaced, workers
        self.last_stats: dict[str, float] = {}
        self._ray = RayConnection(self.opts, self.run_dir)
        try:
            self.num_workers = self._ray.num_workers()
            import ray

            if self.opts.address and WORKERS.get(spec.fitness.kind).needs_models:
                check_models_on_nodes(model_refs(spec), self._ray.host_nodes(), hub_env(self.opts),
                                      self.opts.start_timeout_s)

            self._spec_ref = ray.put(spec)  # shipped once; every actor (and replacement) reads the same object
            for _ in range(self.num_workers):
                self._spawn()
        except BaseException:
            self.close()
            raise

    # ---- the pool -------------------------------------------------------------------------------------------

    def _spawn(self) -> _Slot:
        o = self.opts
        threads = o.torch_threads or max(1, math.ceil(o.num_cpus))
        idx = self._next_index
        self._next_index += 1
        actor = _remote_actor_class().options(
            num_cpus=o.num_cpus, num_gpus=o.num_gpus, name=f"{self.name_prefix}-worker-{idx}",
            runtime_env={"env_vars": env} if (env := hub_env(o)) else None,
        ).remote(self._spec_ref, threads)
        slot = _Slot(idx, actor, ready_ref=actor.ready.remote())
        self._slots[idx] = slot
        return slot

    def _kill(self, slot: _Slot) -> None:
        import ray

        self._slots.pop(slot.index, None)
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception as exc:  # already gone
            log.debug("kill of worker %d: %s", slot.index, exc)

    def wait_ready(self) -> None:
        """Block until every actor has built its Worker (else one clear error), e.g. before timing."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        for slot in list(self._slots.values()):
            if slot.ready_ref is None:
                continue
            left = self.opts.start_timeout_s - (time.monotonic() - slot.started)
            try:
                slot.pid, err = ray.get(slot.ready_ref, timeout=max(0.0, left))
            except GetTimeoutError:
                raise EvomergeError(self._start_timeout_message(slot)) from None
            except RayActorError as exc:
                raise EvomergeError(f"ray worker {slot.index} died while starting: {first_line(exc)}") from None
            if err:
                raise EvomergeError(f"ray worker could not build its evaluator: {err}")
            slot.ready_ref, slot.ready_at = None, time.monotonic()

    def _start_timeout_message(self, slot: _Slot) -> str:
        return (f"ray worker {slot.index} was not placed and built within start_timeout_s="
                f"{self.opts.start_timeout_s:g} s (per worker: num_cpus={self.opts.num_cpus:g}, "
                f"num_gpus={self.opts.num_gpus:g})")

    def worker_names(self) -> list[str]:
        """Ray actor names of the live workers (``ray.get_actor(name)``), e.g. to inspect or kill one."""
        return [f"{self.name_prefix}-worker-{i}" for i in sorted(self._slots)]

    def map(self, tasks: Iterable[tuple[Hashable, Any]], split: str = "search") -> Iterator[tuple[Hashable, CandidateResult]]:
        """Evaluate ``(key, recipe)`` pairs on the pool; yield ``(key, result)`` as each completes.

        ``tasks`` may be a lazy iterator: the next pair is pulled only when a worker is free."""
        import ray
        from ray.exceptions import RayActorError

        if self._closed:
            raise EvomergeError("ray executor is closed")
        source = iter(tasks)
        retry: collections.deque[_Task] = collections.deque()
        idle: list[_Slot] = [s for s in self._slots.values() if s.ready_ref is None]
        starting = {s.ready_ref: s for s in self._slots.values() if s.ready_ref is not None}
        running: dict[Any, tuple[_Slot, _Task, float]] = {}
        exhausted = False
        t0, t_mono = time.perf_counter(), time.monotonic()
        busy = overhead = dead_capacity = 0.0
        n_done = n_retries = n_replaced = 0

        def next_task() -> Optional[_Task]:
            nonlocal exhausted
            if retry:
                return retry.popleft()
            if exhausted:
                return None
            try:
                key, recipe, *request = next(source)
            except StopIteration:
                exhausted = True
                return None
            return _Task(key, recipe, request[0] if request else None)

        def capacity(slot: _Slot, end: float) -> float:
            return max(0.0, end - max(t_mono, slot.ready_at)) if slot.ready_at is not None else 0.0

        def replace(slot: _Slot) -> None:
            nonlocal n_replaced, dead_capacity
            dead_capacity += capacity(slot, time.monotonic())
            self._kill(slot)
            if len(self._slots) >= self._ray.capacity():  # a node was lost: go on with the workers left
                log.warning("ray executor: worker %d lost and the cluster has no room for another; going on with "
                            "%d worker(s)", slot.index, len(self._slots))
                return
            new = self._spawn()
            starting[new.ready_ref] = new
            n_replaced += 1

        def give_up_or_retry(task: _Task, reason: str):
            nonlocal n_retries
            task.attempts += 1
            task.reasons.append(reason)
            if task.attempts > self.opts.max_retries:
                log.warning("candidate %s failed after %d attempt(s): %s", task.key, task.attempts, reason)
                return CandidateResult.failed(f"{reason} (attempt {task.attempts} of {self.opts.max_retries + 1})",
                                              {"ray_attempts": float(task.attempts)})
            log.warning("candidate %s: %s; retrying (attempt %d)", task.key, reason, task.attempts + 1)
            n_retries += 1
            retry.append(task)
            return None

        try:
            while True:
                while idle:
                    task = next_task()
                    if task is None:
                        break
                    slot = idle.pop()
                    ref = slot.actor.evaluate.remote(task.recipe, split, task.request)
                    running[ref] = (slot, task, time.monotonic())
                if not running and (exhausted and not retry):
                    break
                if not running and not starting:
                    raise EvomergeError("ray executor: no worker left to run the remaining candidates")
                now = time.monotonic()
                deadlines = [s.started + self.opts.start_timeout_s for s in starting.values()]
                if self.opts.timeout_s is not None:
                    deadlines += [t + self.opts.timeout_s for _, _, t in running.values()]
                wait_s = max(0.0, min(deadlines) - now) if deadlines else None
                done, _ = ray.wait(list(running) + list(starting), num_returns=1, timeout=wait_s)
                for ref in done:
                    if ref in starting:
                        slot = starting.pop(ref)
                        try:
                            slot.pid, err = ray.get(ref)
                        except RayActorError as exc:
                            raise EvomergeError(f"ray worker {slot.index} died while starting: "
                                                f"{first_line(exc)}") from None
                        if err:
                            raise EvomergeError(f"ray worker could not build its evaluator: {err}")
                        slot.ready_ref, slot.ready_at = None, time.monotonic()
                        idle.append(slot)
                        continue
                    slot, task, t_sent = running.pop(ref)
                    try:
                        res, eval_s = ray.get(ref)
                    except RayActorError as exc:
                        replace(slot)
                        res = give_up_or_retry(task, f"ray worker died: {first_line(exc)}")
                        if res is None:
                            continue
                    else:
                        idle.append(slot)
                        busy += eval_s
                        overhead += max(0.0, time.monotonic() - t_sent - eval_s)
                        res.timings["ray_attempts"] = float(task.attempts + 1)
                    n_done += 1
                    yield task.key, res
                now = time.monotonic()
                for ref, slot in list(starting.items()):
                    if now - slot.started > self.opts.start_timeout_s:
                        if not (running or idle):
                            raise EvomergeError(self._start_timeout_message(slot))
                        starting.pop(ref)  # a replacement the cluster cannot place: the others go on
                        log.warning("%s; going on with %d worker(s)", self._start_timeout_message(slot),
                                    len(self._slots) - 1)
                        self._kill(slot)
                if self.opts.timeout_s is not None:
                    for ref, (slot, task, t_sent) in list(running.items()):
                        if now - t_sent > self.opts.timeout_s:
                            running.pop(ref)
                            replace(slot)
                            res = give_up_or_retry(task, f"timed out after {self.opts.timeout_s:g} s")
                            if res is not None:
                                n_done += 1
                                yield task.key, res
        finally:
            for ref, (slot, _, _) in running.items():  # abandoned mid-candidate (generator closed): free them
                replace(slot)
            wall, end = time.perf_counter() - t0, time.monotonic()
            n = max(1, self.num_workers)
            # worker-seconds available: each actor from when its Worker was built (or map started) to the end
            cap = dead_capacity + sum(capacity(s, end) for s in self._slots.values())
            self.last_stats = {
                "candidates": float(n_done), "wall_s": wall, "busy_s": busy,
                "utilisation": busy / cap if cap > 0 else 0.0,
                "overhead_s_per_candidate": overhead / max(1, n_done),
                "retries": float(n_retries), "replaced": float(n_replaced), "workers": float(n)}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            import ray

            if ray.is_initialized():
                for slot in list(self._slots.values()):
                    self._kill(slot)
        finally:
            self._slots.clear()
            if getattr(self, "_ray", None) is not None:
                self._ray.close()
