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
import hashlib
import logging
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Iterator, Optional
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evomerge.errors import ConfigError, EvomergeError
from evomerge.execution.base import EXECUTORS, CandidateResult, Executor, WorkerSpec

log = logging.getLogger(__name__)
# Ray's session dir name + "/sockets/plasma_store" take ~62 bytes of the 107 allowed for a Unix socket path
_MAX_TEMP_DIR_LEN = 44


class RayOptions(BaseModel):
    """``executor.options`` of ``name: ray`` (validated once, before Ray starts)."""

    model_config = ConfigDict(extra="forbid")
    address: Optional[str] = Field(None, description="existing cluster: 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    num_workers: Optional[int] = Field(None, ge=1, description="actors (default: as many as the resources allow)")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor: a fraction (<1) or a whole number (>=1)")
    torch_threads: Optional[int] = Field(None, ge=1, description="torch threads per actor (default ceil(num_cpus))")
    timeout_s: Optional[float] = Field(None, gt=0, description="per-candidate timeout; the actor is replaced")
    max_retries: int = Field(2, ge=0, description="retries of a candidate whose actor died or timed out")
    start_timeout_s: float = Field(600.0, gt=0, description="how long an actor may take to be placed and built")
    connect_timeout_s: float = Field(15.0, gt=0, description="reachability check of address")
    local_num_cpus: Optional[int] = Field(None, ge=1, description="CPUs of a locally started Ray (default: all)")
    local_num_gpus: Optional[int] = Field(None, ge=0, description="GPUs of a locally started Ray (default: detected)")
    log_to_driver: bool = Field(False, description="echo actor logs on the driver (they are in RUN_DIR/ray anyway)")

    @model_validator(mode="after")
    def _check(self):
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ValueError(f"num_gpus {self.num_gpus}: above 1 it must be a whole number of GPUs")
        return self


def parse_options(options: dict[str, Any]) -> RayOptions:
    try:
        return RayOptions.model_validate(options)
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid ray executor options: {msg}") from None


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

    def evaluate(self, recipe, split: str) -> tuple[CandidateResult, float]:
        from evomerge.execution.base import safe_evaluate

        t0 = time.perf_counter()
        res = safe_evaluate(self.worker, recipe, split=split)
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
        self._owns_ray = False
        self._link: Optional[Path] = None
        self._slots: dict[int, _Slot] = {}
        self._next_index = 0
        self._spec_ref = None
        self._closed = False
        self.name_prefix = f"evomerge-{os.getpid()}-{id(self):x}"
        #: stats of the last ``map``: wall_s, busy_s, utilisation, overhead_s, retries, replaced
        self.last_stats: dict[str, float] = {}
        self._connect()
        try:
            self.num_workers = self._check_resources()
            import ray

            self._spec_ref = ray.put(spec)  # shipped once; every actor (and replacement) reads the same object
            for _ in range(self.num_workers):
                self._spawn()
        except BaseException:
            self.close()
            raise

    # ---- connecting ----------------------------------------------------------------------------------------

    def _connect(self) -> None:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        o = self.opts
        if o.address:
            _check_reachable(o.address, o.connect_timeout_s)
            if ray.is_initialized():
                raise EvomergeError("ray executor: this process is already connected to a Ray cluster; "
                                    "leave executor.options.address unset to use it")
            try:
                ray.init(address=o.address, include_dashboard=False, log_to_driver=o.log_to_driver,
                         logging_level=logging.WARNING)
            except Exception as exc:
                raise EvomergeError(f"cannot connect to Ray at {o.address}: {_first_line(exc)}") from None
            self._owns_ray = True  # our connection (the cluster itself stays up on shutdown)
            return
        if ray.is_initialized():  # a session started by the caller (tests, notebooks): use it, leave it up
            return
        if self.run_dir is None:
            raise EvomergeError("ray executor: no run directory to put the local Ray temp dir in")
        temp_dir = (self.run_dir / "ray").resolve()
        temp_dir.mkdir(parents=True, exist_ok=True)
        ray_dir = temp_dir
        if len(str(temp_dir)) > _MAX_TEMP_DIR_LEN:
            digest = hashlib.sha256(str(temp_dir).encode()).hexdigest()[:10]
            self._link = Path(tempfile.gettempdir()) / f"evomerge-ray-{digest}"
            if self._link.is_symlink() and self._link.resolve() != temp_dir:
                self._link.unlink()
            if not self._link.is_symlink():
                self._link.symlink_to(temp_dir, target_is_directory=True)
            ray_dir = self._link
        try:
            ray.init(num_cpus=o.local_num_cpus, num_gpus=o.local_num_gpus, _temp_dir=str(ray_dir),
                     include_dashboard=False, log_to_driver=o.log_to_driver, logging_level=logging.WARNING)
        except Exception as exc:
            self._remove_link()
            raise EvomergeError(f"cannot start a local Ray in {temp_dir}: {_first_line(exc)}") from None
        self._owns_ray = True

    def _check_resources(self) -> int:
        """Number of actors to run; one clear error if one actor cannot fit on any node (it would hang)."""
        import ray

        o = self.opts
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        need = {"CPU": o.num_cpus, "GPU": o.num_gpus}
        for res, amount in need.items():
            if amount <= 0:
                continue
            biggest = max((n.get(res, 0.0) for n in nodes), default=0.0)
            if amount > biggest + 1e-9:
                where = "the local machine" if not o.address else f"any node of the cluster at {o.address}"
                raise EvomergeError(f"ray executor: each worker asks num_{res.lower()}s={amount:g} but "
                                    f"{where} has at most {biggest:g} {res}(s)")
        fit = sum(min(math.floor(n.get(r, 0.0) / a + 1e-9) for r, a in need.items() if a > 0) for n in nodes)
        if o.num_workers is not None:
            if o.num_workers > fit:
                log.warning("ray executor: %d workers asked but the cluster fits %d now; the rest wait for "
                            "resources (start_timeout_s=%g)", o.num_workers, fit, o.start_timeout_s)
            return o.num_workers
        return max(1, fit)

    # ---- the pool -------------------------------------------------------------------------------------------

    def _spawn(self) -> _Slot:
        o = self.opts
        threads = o.torch_threads or max(1, math.ceil(o.num_cpus))
        idx = self._next_index
        self._next_index += 1
        actor = _remote_actor_class().options(
            num_cpus=o.num_cpus, num_gpus=o.num_gpus, name=f"{self.name_prefix}-worker-{idx}",
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

    def worker_names(self) -> list[str]:
        """Ray actor names of the live workers (``ray.get_actor(name)``), e.g. to inspect or kill one."""
        return [f"{self.name_prefix}-worker-{i}" for i in sorted(self._slots)]

    def map(self, tasks: Iterable[tuple[Hashable, Any]], split: str = "search") -> Iterator[tuple[Hashable, CandidateResult]]:
        """Evaluate ``(key, recipe)`` pairs on the pool; yield ``(key, result)`` as each completes.

        ``tasks`` may be a lazy iterator: the next pair is pulled only when a worker is free."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

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
                key, recipe = next(source)
            except StopIteration:
                exhausted = True
                return None
            return _Task(key, recipe)

        def capacity(slot: _Slot, end: float) -> float:
            return max(0.0, end - max(t_mono, slot.ready_at)) if slot.ready_at is not None else 0.0

        def replace(slot: _Slot) -> None:
            nonlocal n_replaced, dead_capacity
            dead_capacity += capacity(slot, time.monotonic())
            self._kill(slot)
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
                    ref = slot.actor.evaluate.remote(task.recipe, split)
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
                                                f"{_first_line(exc)}") from None
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
                        res = give_up_or_retry(task, f"ray worker died: {_first_line(exc)}")
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
                        raise EvomergeError(f"ray worker {slot.index} was not placed and built within "
                                            f"start_timeout_s={self.opts.start_timeout_s:g} s (resources: "
                                            f"num_cpus={self.opts.num_cpus:g}, num_gpus={self.opts.num_gpus:g})")
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
                if self._owns_ray:
                    ray.shutdown()
        finally:
            self._slots.clear()
            self._remove_link()

    def _remove_link(self) -> None:
        if self._link is not None and self._link.is_symlink():
            self._link.unlink()
        self._link = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(exc).__name__


def _check_reachable(address: str, timeout_s: float) -> None:
    """A TCP connect to a ``HOST:PORT`` / ``ray://HOST:PORT`` address, so a dead address fails fast."""
    if address == "auto" or address.startswith("local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or port is None:
        raise ConfigError(f"ray address {address!r} is not 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise EvomergeError(f"Ray cluster at {address} is unreachable ({exc.strerror or exc}; "
                            f"waited up to {timeout_s:g} s)") from None
