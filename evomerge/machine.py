"""Sizes and what this machine has, without torch: byte sizes as users write them, free host memory, visible
GPUs (the memory plan, ``check`` and the merge engine all read them)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from evomerge.errors import EvomergeError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
          "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: str | int, what: str = "shard size") -> int:
    """``"2GB"`` / ``"500MiB"`` / ``1000000`` -> bytes; ``what`` names the setting in the error."""
    if isinstance(size, int):
        if size <= 0:
            raise EvomergeError(f"{what} must be positive, got {size}")
        return size
    m = _SIZE.match(str(size))
    if not m or m.group(2).upper() not in _UNITS:
        raise EvomergeError(f"cannot read {what} {size!r} (use e.g. 2GB, 500MB, 1GiB)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise EvomergeError(f"{what} must be positive, got {size!r}")
    return value


def host_available_bytes() -> int:
    """MemAvailable of /proc/meminfo (bytes), or total physical memory where that file is missing."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def visible_gpus() -> int:
    """GPUs this process could use (CUDA_VISIBLE_DEVICES, else ``nvidia-smi -L``), without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())
