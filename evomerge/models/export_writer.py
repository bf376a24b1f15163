"""Streaming writer of a standard HF checkpoint folder: ``model-0000X-of-0000N.safetensors`` shards of bounded
size plus ``model.safetensors.index.json``; and copying of config/tokenizer files from a source folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from evomerge.errors import EvomergeError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
          "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
AUX_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "vocab.txt", "merges.txt", "added_tokens.json", "generation_config.json", "chat_template.jinja",
)


def parse_size(size: str | int) -> int:
    """``"2GB"`` / ``"500MiB"`` / ``1000000`` -> bytes."""
    if isinstance(size, int):
        if size <= 0:
            raise EvomergeError(f"shard size must be positive, got {size}")
        return size
    m = _SIZE.match(str(size))
    if not m or m.group(2).upper() not in _UNITS:
        raise EvomergeError(f"cannot read shard size {size!r} (use e.g. 2GB, 500MB, 1GiB)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise EvomergeError(f"shard size must be positive, got {size!r}")
    return value


class ShardedWriter:
    """Add tensors one at a time; a shard is written when adding the next tensor would exceed ``max_bytes``.
    Only the current shard is held in memory. ``finish()`` renames shards to ``-of-N`` and writes the index."""

    def __init__(self, out_dir: Path, max_bytes: int):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._current: dict[str, torch.Tensor] = {}
        self._current_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self._current and self._current_bytes + nbytes > self.max_bytes:
            self._flush()
        self._current[name] = tensor.contiguous()
        self._current_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        if not self._current:
            return
        path = self.out_dir / f"model-{len(self._shards) + 1:05d}.safetensors.partial"
        save_file(self._current, str(path), metadata={"format": "pt"})
        self._shards.append((path, list(self._current)))
        self._current = {}
        self._current_bytes = 0

    def finish(self) -> list[Path]:
        self._flush()
        n = len(self._shards)
        weight_map: dict[str, str] = {}
        final = []
        for i, (path, names) in enumerate(self._shards, start=1):
            target = self.out_dir / f"model-{i:05d}-of-{n:05d}.safetensors"
            path.replace(target)
            final.append(target)
            weight_map.update({name: target.name for name in names})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return final


def copy_model_files(src: Path, out_dir: Path, dtype: Optional[torch.dtype] = None) -> None:
    """Copy config.json (with ``torch_dtype``/``dtype`` set to the export dtype) and tokenizer files."""
    src, out_dir = Path(src), Path(out_dir)
    cfg = json.loads((src / "config.json").read_text())
    if dtype is not None:
        name = str(dtype).removeprefix("torch.")
        for key in ("torch_dtype", "dtype"):
            if key in cfg or key == "torch_dtype":
                cfg[key] = name
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for fname in AUX_FILES:
        if (src / fname).exists():
            shutil.copy2(src / fname, out_dir / fname)
