"""Memory-mapped reading of an HF checkpoint folder's safetensors.

Headers are parsed and checked here (length, JSON, offsets that cover the file exactly), so a truncated or
garbled file is one clear error before any tensor is read. Tensors are zero-copy, read-only views of a private
file mapping: their pages live in the OS page cache, shared by every process on the node that maps the same
file, and never count as a process's anonymous memory.
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from evomerge.errors import EvomergeError
from evomerge.models.paths import resolve_model

log = logging.getLogger(__name__)
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_MAX_HEADER = 100 * 2**20
#: safetensors dtype code -> (torch dtype name, bytes per element); headers are checked without torch, which
#: is imported only when a tensor is read (``evomerge check`` reads headers alone)
DTYPE_CODES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}
if TYPE_CHECKING:
    import torch


def torch_dtype(code: str) -> "torch.dtype":
    """The torch dtype of a safetensors dtype code (imports torch)."""
    import torch

    return getattr(torch, DTYPE_CODES[code][0])


def read_header(path: Path) -> tuple[dict[str, dict], int]:
    """``(tensors, data_start)`` of one safetensors file: name -> {dtype, shape, data_offsets}. Raises
    EvomergeError naming the file when the header is not valid or the offsets do not cover the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise ValueError(f"header length {n} does not fit in a file of {size} bytes")
            meta = json.loads(f.read(n))
    except OSError as exc:
        raise EvomergeError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvomergeError(f"broken safetensors file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(meta, dict):
        raise EvomergeError(f"broken safetensors file {path}: header is not a JSON object")
    meta.pop("__metadata__", None)
    data_start, data_len = 8 + n, size - 8 - n
    spans = []
    for name, info in meta.items():
        try:
            itemsize = DTYPE_CODES[info["dtype"]][1]
            shape = [int(d) for d in info["shape"]]
            lo, hi = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise EvomergeError(f"broken safetensors file {path}: bad entry for tensor {name}") from None
        numel = 1
        for d in shape:
            numel *= d
        if hi - lo != numel * itemsize or lo < 0:
            raise EvomergeError(f"broken safetensors file {path}: tensor {name} has {hi - lo} bytes for "
                                f"shape {shape} {info['dtype']}")
        spans.append((lo, hi))
    spans.sort()
    end = 0
    for lo, hi in spans:
        if lo != end:
            raise EvomergeError(f"broken safetensors file {path}: tensor data overlaps or leaves a gap at byte {lo}")
        end = hi
    if end != data_len:
        raise EvomergeError(f"broken safetensors file {path}: tensor data covers {end} of {data_len} bytes "
                            "(truncated or padded file)")
    return meta, data_start


class MappedFile:
    """One safetensors file mapped privately and read-only; ``tensor(name)`` is a zero-copy view. ``meta``
    given: the file's header alone (a hub model checked before its weights are fetched), no tensor data."""

    def __init__(self, path: Path, meta: Optional[dict[str, dict]] = None):
        self.path = Path(path)
        if meta is None:
            self.meta, self._start = read_header(self.path)
        else:
            self.meta, self._start = meta, None
        self._map: Optional[mmap.mmap] = None

    def tensor(self, name: str) -> torch.Tensor:
        import torch

        if self._start is None:
            raise EvomergeError(f"{self.path.parent} holds only the headers of {self.path.name} (read for check "
                                "and plan); the weights are fetched when a run or merge needs them")
        info = self.meta[name]
        dtype = torch_dtype(info["dtype"])
        shape = tuple(info["shape"])
        lo, hi = info["data_offsets"]
        if hi == lo:
            return torch.empty(shape, dtype=dtype)
        if self._map is None:
            with open(self.path, "rb") as f:
                # ACCESS_COPY: a private mapping, so torch may wrap it (it wants a writable buffer); pages are
                # shared with the page cache until written, and nothing here writes to them.
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flat = torch.frombuffer(self._map, dtype=dtype, count=(hi - lo) // dtype.itemsize,
                                    offset=self._start + lo)
        return flat.view(shape)

    def close(self) -> None:
        self._map = None  # tensors still viewing the map keep it alive until they go


class LazyCheckpoint:
    """One model folder. ``names()`` / ``shape(name)`` read only headers (checked when the folder is opened);
    ``get(name)`` is a read-only memory-mapped view (or a converted copy when ``dtype``/``device`` differ)."""

    def __init__(self, ref: str):
        self.ref = ref
        path = Path(resolve_model(ref))
        self.path = path
        self.config = _read_config(path)
        headers = _headers_only(path, ref)
        self.weight_map = _weight_map(path, ref) if headers is None else \
            {name: shard for shard, tensors in headers.items() for name in tensors}
        self._files: dict[str, MappedFile] = {}
        for shard in dict.fromkeys(self.weight_map.values()):
            if headers is not None:
                self._files[shard] = MappedFile(path / shard, headers[shard])
                continue
            if not (path / shard).is_file():
                raise EvomergeError(f"model {ref!r}: shard {shard} named in {INDEX_NAME} is missing")
            self._files[shard] = MappedFile(path / shard)
        for name, shard in self.weight_map.items():
            if name not in self._files[shard].meta:
                raise EvomergeError(f"model {ref!r}: {INDEX_NAME} puts {name} in {shard}, which lacks it")

    def names(self) -> list[str]:
        return list(self.weight_map)

    def ordered_names(self) -> list[str]:
        """Tensor names in storage order (shard by shard), the order that reads the files sequentially."""
        return sorted(self.weight_map, key=lambda n: (self.weight_map[n], self._files[self.weight_map[n]]
                                                      .meta[n]["data_offsets"][0]))

    def _info(self, name: str) -> dict:
        shard = self.weight_map.get(name)
        if shard is None:
            raise EvomergeError(f"tensor {name} not found in {self.ref}")
        return self._files[shard].meta[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._info(name)["shape"])

    def dtype(self, name: str) -> torch.dtype:
        return torch_dtype(self._info(name)["dtype"])

    def dtype_name(self, name: str) -> str:
        """The stored dtype as torch names it (``"bfloat16"``), read from the header without torch."""
        return DTYPE_CODES[self._info(name)["dtype"]][0]

    def nbytes(self, name: str) -> int:
        lo, hi = self._info(name)["data_offsets"]
        return hi - lo

    def total_bytes(self) -> int:
        return sum(self.nbytes(n) for n in self.weight_map)

    def view(self, name: str) -> torch.Tensor:
        """The stored tensor as a zero-copy view of the mapped file (do not write to it)."""
        self._info(name)
        return self._files[self.weight_map[name]].tensor(name)

    def get(self, name: str, dtype: Optional[torch.dtype] = None, device="cpu") -> torch.Tensor:
        """One tensor; a view of the mapped file when no conversion is asked for."""
        t = self.view(name)
        if dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        return t.to(device) if str(device) != "cpu" else t

    def iter_tensors(self, dtype=None, device="cpu") -> Iterator[tuple[str, torch.Tensor]]:
        """All tensors, in storage order."""
        for name in self.ordered_names():
            yield name, self.get(name, dtype, device)

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def _read_config(path: Path) -> dict:
    cfg_path = path / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except OSError as exc:
        raise EvomergeError(f"cannot read {cfg_path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise EvomergeError(f"{cfg_path} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise EvomergeError(f"{cfg_path} is not a JSON object")
    return cfg


def _headers_only(path: Path, ref: str) -> Optional[dict[str, dict[str, dict]]]:
    """``{shard: header}`` of a header-only folder (:data:`evomerge.models.hub.HEADERS_FILE`), else None."""
    from evomerge.models.hub import HEADERS_FILE

    if not (path / HEADERS_FILE).is_file():
        return None
    try:
        headers = json.loads((path / HEADERS_FILE).read_text())
        for tensors in headers.values():
            for info in tensors.values():
                DTYPE_CODES[info["dtype"]], list(info["shape"]), list(info["data_offsets"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise EvomergeError(f"model {ref!r}: broken {HEADERS_FILE} in {path}; delete that folder") from None
    return headers


def _weight_map(path: Path, ref: str) -> dict[str, str]:
    index = path / INDEX_NAME
    if index.exists():
        try:
            wm = json.loads(index.read_text())["weight_map"]
            if not isinstance(wm, dict) or not all(isinstance(v, str) and "/" not in v for v in wm.values()):
                raise ValueError("weight_map must map tensor names to shard file names")
            return dict(wm)
        except (ValueError, KeyError, TypeError) as exc:
            raise EvomergeError(f"broken {INDEX_NAME} in {path}: {exc}") from None
    shards = [path / SINGLE_NAME] if (path / SINGLE_NAME).exists() else sorted(path.glob("*.safetensors"))
    if len(shards) == 1:
        meta, _ = read_header(shards[0])
        return {name: shards[0].name for name in meta}
    if not shards:
        raise EvomergeError(f"model {ref!r} has no safetensors weights in {path}")
    raise EvomergeError(f"model {ref!r} has {len(shards)} safetensors files but no {INDEX_NAME}")


_OPEN: dict[str, LazyCheckpoint] = {}


def open_checkpoint(ref: str) -> LazyCheckpoint:
    """The process's one opened copy of a model folder (mapped once, shared by every merger and path model)."""
    key = str(Path(resolve_model(ref)).resolve()) if not ref.startswith("zoo://") else resolve_model(ref)
    ck = _OPEN.get(key)
    if ck is None:
        ck = _OPEN[key] = LazyCheckpoint(ref)
    return ck
