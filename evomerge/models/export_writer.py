"""Streaming writer of a standard HF checkpoint folder: ``model-0000X-of-0000N.safetensors`` shards of bounded
size plus ``model.safetensors.index.json`` (tensor bytes go straight to disk); and copying of config/tokenizer
files from a source folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from evomerge.errors import EvomergeError
from evomerge.fsutil import write_all, write_failed
from evomerge.models.safetensors_io import DTYPE_CODES

if TYPE_CHECKING:
    import torch

AUX_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "vocab.txt", "merges.txt", "added_tokens.json", "generation_config.json", "chat_template.jinja",
)


_ST_CODES = {name: code for code, (name, _) in DTYPE_CODES.items()}  # "float32" -> "F32"


def _st_code(dtype: torch.dtype) -> str:
    return _ST_CODES[str(dtype).removeprefix("torch.")]


class ShardedWriter:
    """Writes a standard sharded HF checkpoint whose tensors (names, shapes, dtypes) are known up front, streaming
    each tensor's bytes to its shard file as it is produced: nothing is held beyond the tensor being written.

    Shards are planned greedily up to ``max_bytes`` (``model-0000i-of-0000N.safetensors``, ``.partial`` until
    ``finish()``), each file's header written first, then the data in the planned order;
    ``model.safetensors.index.json`` lists them."""

    def __init__(self, out_dir: Path, max_bytes: int, layout: list[tuple[str, tuple[int, ...], torch.dtype]]):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        shards: list[list[tuple[str, tuple[int, ...], torch.dtype, int]]] = [[]]
        size = 0
        for name, shape, dtype in layout:
            nbytes = dtype.itemsize
            for d in shape:
                nbytes *= int(d)
            if shards[-1] and size + nbytes > max_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, tuple(shape), dtype, nbytes))
            size += nbytes
        n = len(shards)
        self._plan = shards
        self._paths = [self.out_dir / f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
        self._shard_of = {e[0]: i for i, sh in enumerate(shards) for e in sh}
        self._entry = {e[0]: e for sh in shards for e in sh}
        self._next = [e[0] for sh in shards for e in sh]
        self._pos = 0
        self._file = None
        self._open_shard = -1
        self.total_bytes = sum(e[3] for sh in shards for e in sh)

    def _open(self, i: int) -> None:
        if self._file is not None:
            self._file.close()
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape, dtype, nbytes in self._plan[i]:
            header[name] = {"dtype": _st_code(dtype), "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with self._writing(self._paths[i]):
            self._file = open(self._paths[i].with_suffix(".safetensors.partial"), "wb", buffering=0)
            write_all(self._file, len(raw).to_bytes(8, "little") + raw)
        self._open_shard = i

    @contextlib.contextmanager
    def _writing(self, path: Path):
        """A failed write (a full disk) closes the shard and raises one line: the export stays incomplete (its
        shards ``.partial``, no index), never mistaken for a model."""
        try:
            yield
        except OSError as exc:
            if self._file is not None:
                self._file.close()
                self._file = None
            raise write_failed(exc, path, "export shard", f"{self.out_dir} is incomplete (shards left .partial, "
                               "no index): free space, remove it and export again") from None

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Write the next tensor of the planned order (a CPU tensor of the planned shape and dtype)."""
        if self._pos >= len(self._next) or self._next[self._pos] != name:
            want = self._next[self._pos] if self._pos < len(self._next) else "nothing"
            raise EvomergeError(f"export writer expected {want}, got {name}")
        i = self._shard_of[name]
        _, shape, dtype, _ = self._entry[name]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise EvomergeError(f"export writer: {name} is {list(tensor.shape)} {tensor.dtype}, planned "
                                f"{list(shape)} {dtype}")
        if i != self._open_shard:
            self._open(i)
        flat = tensor.detach().contiguous().reshape(-1)
        if flat.numel():
            import torch

            with self._writing(self._paths[i]):
                write_all(self._file, flat.view(torch.uint8).numpy().data)
        self._pos += 1

    def finish(self) -> list[Path]:
        if self._pos != len(self._next):
            raise EvomergeError(f"export writer: {len(self._next) - self._pos} planned tensor(s) never written")
        if self._file is not None:
            with self._writing(self._paths[self._open_shard]):
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        weight_map: dict[str, str] = {}
        for path, shard in zip(self._paths, self._plan):
            path.with_suffix(".safetensors.partial").replace(path)
            weight_map.update({e[0]: path.name for e in shard})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return list(self._paths)


def copy_model_files(src: Path, out_dir: Path, dtype: Optional[torch.dtype] = None, vocab_size: Optional[int] = None,
                     tokenizer_from: Optional[Path] = None) -> None:
    """Copy config.json (with ``torch_dtype``/``dtype`` set to the export dtype, and ``vocab_size`` when given)
    and the tokenizer files (of ``tokenizer_from``, default ``src``)."""
    src, out_dir = Path(src), Path(out_dir)
    cfg = json.loads((src / "config.json").read_text())
    if dtype is not None:
        name = str(dtype).removeprefix("torch.")
        for key in ("torch_dtype", "dtype"):
            if key in cfg or key == "torch_dtype":
                cfg[key] = name
    if vocab_size is not None:
        text = cfg.get("text_config")
        nested = isinstance(text, dict) and "vocab_size" in text and "vocab_size" not in cfg
        (text if nested else cfg)["vocab_size"] = vocab_size
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tok = Path(tokenizer_from) if tokenizer_from is not None else src
    for fname in AUX_FILES:
        origin = src if fname == "generation_config.json" else tok
        if (origin / fname).exists():
            shutil.copy2(origin / fname, out_dir / fname)
