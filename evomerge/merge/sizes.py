"""Sizes the merge engine and the memory plan share, without torch (``evomerge plan`` and ``check`` use them):
the scratch chunk, the cache budget and the host's free memory."""

from __future__ import annotations

from typing import Optional

from evomerge.machine import host_available_bytes, parse_size

CHUNK_ELEMS = 1 << 19  # elements per scratch chunk (2 MB in float32: cache-friendly, small next to any model)
AUTO_CACHE_SHARE = 0.25  # "auto" cache budget: this share of the memory free when the merger starts
AUTO_CACHE_FLOOR = 32 * 2**20  # ... capped at half a model, but never below this (small models)


def cache_budget_bytes(budget: Optional[int | str], device="cpu") -> Optional[int]:
    """``None`` / ``"unlimited"``: no limit; ``"auto"``: a share of free memory (the device's on a GPU, else
    the host's MemAvailable; the merger also caps it at half a model); an int or ``"4GB"``: that many bytes."""
    if budget is None or budget == "unlimited":
        return None
    if budget == "auto":
        if str(device).startswith("cuda"):
            import torch

            free, _ = torch.cuda.mem_get_info(device)
        else:
            free = host_available_bytes()
        return int(free * AUTO_CACHE_SHARE)
    return 0 if budget == 0 else parse_size(budget, "cache_budget")
