"""Lazy reading of an HF checkpoint folder's safetensors: names, shapes and dtypes from the headers, tensors
one at a time, at most one shard file open at a time."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator, Optional

import torch
from safetensors import safe_open

from evomerge.errors import EvomergeError
from evomerge.models.paths import resolve_model

log = logging.getLogger(__name__)
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class LazyCheckpoint:
    """One model folder. ``names()`` / ``shape(name)`` read only headers; ``get(name)`` loads one tensor."""

    def __init__(self, ref: str):
        self.ref = ref
        path = Path(resolve_model(ref))
        if not path.is_dir():
            raise EvomergeError(f"model {ref!r} is not a local folder (download it first): {path}")
        self.path = path
        self.weight_map = _weight_map(path, ref)  # tensor name -> shard file name
        self._open_name: Optional[str] = None
        self._open = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._dtypes: dict[str, str] = {}
        for shard in dict.fromkeys(self.weight_map.values()):
            with safe_open(str(path / shard), framework="pt") as f:
                for name in f.keys():
                    sl = f.get_slice(name)
                    self._shapes[name] = tuple(sl.get_shape())
                    self._dtypes[name] = sl.get_dtype()

    @property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def names(self) -> list[str]:
        return list(self.weight_map)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def dtype_name(self, name: str) -> str:
        return self._dtypes[name]

    def get(self, name: str, dtype: Optional[torch.dtype] = None, device="cpu") -> torch.Tensor:
        """Load one tensor; keeps only its shard open (switching shards closes the previous one)."""
        shard = self.weight_map.get(name)
        if shard is None:
            raise EvomergeError(f"tensor {name} not found in {self.ref}")
        if self._open_name != shard:
            self.close()
            self._open = safe_open(str(self.path / shard), framework="pt", device="cpu")
            self._open_name = shard
        t = self._open.get_tensor(name)
        if dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        return t.to(device) if str(device) != "cpu" else t

    def iter_tensors(self, dtype=None, device="cpu") -> Iterator[tuple[str, torch.Tensor]]:
        """All tensors, shard by shard."""
        for name in sorted(self.weight_map, key=lambda n: (self.weight_map[n], n)):
            yield name, self.get(name, dtype, device)

    def close(self) -> None:
        self._open = None
        self._open_name = None


def _weight_map(path: Path, ref: str) -> dict[str, str]:
    index = path / INDEX_NAME
    if index.exists():
        try:
            return dict(json.loads(index.read_text())["weight_map"])
        except (ValueError, KeyError) as exc:
            raise EvomergeError(f"broken {INDEX_NAME} in {path}: {exc}") from None
    if (path / SINGLE_NAME).exists():
        with safe_open(str(path / SINGLE_NAME), framework="pt") as f:
            return {name: SINGLE_NAME for name in f.keys()}
    shards = sorted(path.glob("*.safetensors"))
    if len(shards) == 1:
        with safe_open(str(shards[0]), framework="pt") as f:
            return {name: shards[0].name for name in f.keys()}
    raise EvomergeError(f"model {ref!r} has no safetensors weights in {path}")
