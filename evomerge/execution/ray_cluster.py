"""Getting a Ray to run on, for the Ray executor: typed options, connect or start locally, resource checks.

Every failure is one clear :class:`EvomergeError` line, raised before any actor is created (an actor asking
more than any node has would otherwise wait forever).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evomerge.errors import ConfigError, EvomergeError

log = logging.getLogger(__name__)
# Ray's session dir name + "/sockets/plasma_store" take ~62 bytes of the 107 allowed for a Unix socket path
MAX_TEMP_DIR_LEN = 44


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
    hf_hub_cache: Optional[str] = Field(None, description="where actors keep hub models (a path on every node; "
                                                          "a shared filesystem fetches each model once); "
                                                          "default: each node's own Hugging Face cache")

    @model_validator(mode="after")
    def _check(self):
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ValueError(f"num_gpus {self.num_gpus}: above 1 it must be a whole number of GPUs")
        return self


#: the driver's Hugging Face settings that actors on other nodes follow too (tokens stay on each node)
HUB_ENV = ("HF_HUB_OFFLINE", "HF_ENDPOINT")


def hub_env(opts: RayOptions) -> dict[str, str]:
    """Environment of each actor for resolving hub models: the driver's offline mode and endpoint, and
    ``hf_hub_cache`` when named. Every node resolves the run's pinned commits into that cache."""
    env = {k: os.environ[k] for k in HUB_ENV if os.environ.get(k)}
    if opts.hf_hub_cache:
        env["HF_HUB_CACHE"] = opts.hf_hub_cache
    return env


def parse_options(options: dict[str, Any]) -> RayOptions:
    try:
        return RayOptions.model_validate(options)
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid ray executor options: {msg}") from None


def first_line(exc: BaseException) -> str:
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(exc).__name__


class RayConnection:
    """Connect to ``opts.address``, reuse a session this process already has, or start a local Ray with its
    temp dir in ``RUN_DIR/ray`` (through a short symlink when the path is too long for Unix sockets)."""

    def __init__(self, opts: RayOptions, run_dir: Optional[Path]):
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.opts = opts
        self.owned = False  # did we call ray.init (then close() shuts it down)
        self.link: Optional[Path] = None
        if opts.address:
            check_reachable(opts.address, opts.connect_timeout_s)
            if ray.is_initialized():
                raise EvomergeError("ray executor: this process is already connected to a Ray cluster; "
                                    "leave executor.options.address unset to use it")
            try:
                ray.init(address=opts.address, log_to_driver=opts.log_to_driver, logging_level=logging.WARNING)
            except Exception as exc:
                raise EvomergeError(f"cannot connect to Ray at {opts.address}: {first_line(exc)}") from None
            self.owned = True  # our connection; the cluster itself stays up
            return
        if ray.is_initialized():  # a session started by the caller (tests, notebooks): use it, leave it up
            return
        if run_dir is None:
            raise EvomergeError("ray executor: no run directory to put the local Ray temp dir in")
        temp_dir = (Path(run_dir) / "ray").resolve()
        temp_dir.mkdir(parents=True, exist_ok=True)
        ray_dir = temp_dir
        if len(str(temp_dir)) > MAX_TEMP_DIR_LEN:
            digest = hashlib.sha256(str(temp_dir).encode()).hexdigest()[:10]
            self.link = Path(tempfile.gettempdir()) / f"evomerge-ray-{digest}"
            if self.link.is_symlink() and self.link.resolve() != temp_dir:
                self.link.unlink()
            if not self.link.is_symlink():
                self.link.symlink_to(temp_dir, target_is_directory=True)
            ray_dir = self.link
        try:
            ray.init(num_cpus=opts.local_num_cpus, num_gpus=opts.local_num_gpus, _temp_dir=str(ray_dir),
                     include_dashboard=False, log_to_driver=opts.log_to_driver, logging_level=logging.WARNING)
        except Exception as exc:
            self._remove_link()
            raise EvomergeError(f"cannot start a local Ray in {temp_dir}: {first_line(exc)}") from None
        self.owned = True

    def num_workers(self) -> int:
        """Actors to run; one clear error if one actor cannot fit on any node (it would wait forever)."""
        import ray

        o = self.opts
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        need = self.need()
        for res, amount in need.items():
            if amount <= 0:
                continue
            biggest = max((n.get(res, 0.0) for n in nodes), default=0.0)
            if amount > biggest + 1e-9:
                where = "the local machine" if not o.address else f"any node of the cluster at {o.address}"
                raise EvomergeError(f"ray executor: each worker asks num_{res.lower()}s={amount:g} but "
                                    f"{where} has at most {biggest:g} {res}(s)")
        fit = self.capacity()
        if o.num_workers is not None:
            if o.num_workers > fit:
                log.warning("ray executor: %d workers asked but the cluster fits %d now; the rest wait for "
                            "resources (start_timeout_s=%g)", o.num_workers, fit, o.start_timeout_s)
            return o.num_workers
        return max(1, fit)

    def need(self) -> dict[str, float]:
        """Resources of one actor."""
        return {"CPU": self.opts.num_cpus, "GPU": self.opts.num_gpus}

    def host_nodes(self) -> list[dict[str, Any]]:
        """The alive nodes (``ray.nodes()`` entries) with room for at least one actor."""
        import ray

        need = self.need()
        return [n for n in ray.nodes() if n.get("Alive")
                and all(n.get("Resources", {}).get(r, 0.0) + 1e-9 >= a for r, a in need.items() if a > 0)]

    def capacity(self) -> int:
        """Actors that fit on the alive nodes now (a node lost mid-run lowers it)."""
        need = self.need()
        return sum(min(math.floor(n.get("Resources", {}).get(r, 0.0) / a + 1e-9) for r, a in need.items() if a > 0)
                   for n in self.host_nodes())

    def close(self) -> None:
        import ray

        try:
            if self.owned and ray.is_initialized():
                ray.shutdown()
        finally:
            self.owned = False
            self._remove_link()

    def _remove_link(self) -> None:
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()
        self.link = None


def check_reachable(address: str, timeout_s: float) -> None:
    """A TCP connect to a ``HOST:PORT`` / ``ray://HOST:PORT`` address, so a dead address fails fast."""
    if address == "auto" or address.startswith("local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ConfigError(f"ray address {address!r} is not 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise EvomergeError(f"Ray cluster at {address} is unreachable ({exc.strerror or exc}; "
                            f"waited up to {timeout_s:g} s)") from None
