"""Atomic, checksummed checkpoints of plain data: ``checkpoints/ckpt-NNNNNN.npz`` + ``.sha256``, the latest two
kept.

Format: one numpy ``.npz`` (a zip of ``.npy`` arrays, read with ``allow_pickle=False``): ``__state__`` holds the
state as JSON text (UTF-8 bytes), and every numpy array or ``bytes`` value of the state is an entry of its own
that the JSON names (``{"__ndarray__": "a3"}``, ``{"__bytes__": "a4"}``); tuples and dicts with non-string keys
are tagged too, so a state reads back as it was written (numpy scalars come back as Python numbers).
Optimizers whose state is plain data (random search, optuna) write no pickle at all. pycma and nevergrad can
only give their state as a pickle: it is one ``bytes`` entry, and the optimizer unpickles it through
:func:`evomerge.safe_pickle.safe_loads`, which refuses anything but optimizer-state types (no code runs).

Write: temp file -> fsync -> rename (then the checksum file the same way, then fsync the folder). Read: the
newest checkpoint whose bytes match its checksum; a corrupt or half-written latest one falls back to the one
before, with a warning. The checksum catches corruption, not tampering. ``ckpt-NNNNNN.pkl`` files of earlier
versions are still read (through the allow-list) and count in the retention.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from evomerge.errors import EvomergeError
from evomerge.fsutil import atomic_write

if TYPE_CHECKING:  # numpy is imported when a checkpoint is written or read (not by every CLI verb)
    import numpy as np

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d{6,})\.(npz|pkl)$")
KEEP = 2
_TAGS = ("__ndarray__", "__bytes__", "__tuple__", "__items__")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _list(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(out, key=lambda sp: (sp[0], sp[1].suffix == ".npz"))


# ---- plain data <-> JSON + arrays ----------------------------------------------------------------------------

def encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``obj`` as JSON-able data; its arrays and bytes go to ``arrays`` (named ``a0``, ``a1``, ...)."""
    import numpy as np

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)):
        return int(obj) if isinstance(obj, int) else float(obj)
    if isinstance(obj, np.generic) and not isinstance(obj, np.void):
        return encode(obj.item(), arrays)
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise EvomergeError("checkpoint state holds a numpy array of Python objects, which is not plain data")
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__ndarray__": key}
    if isinstance(obj, (bytes, bytearray)):
        key = f"a{len(arrays)}"
        arrays[key] = np.frombuffer(bytes(obj), dtype=np.uint8)
        return {"__bytes__": key}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(x, arrays) for x in obj]}
    if isinstance(obj, list):
        return [encode(x, arrays) for x in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k in _TAGS for k in obj):
            return {k: encode(v, arrays) for k, v in obj.items()}
        return {"__items__": [[encode(k, arrays), encode(v, arrays)] for k, v in obj.items()]}
    raise EvomergeError(f"checkpoint state holds a {type(obj).__module__}.{type(obj).__name__}, which is not "
                        "plain data (JSON types, numpy arrays, bytes)")


def decode(obj: Any, arrays) -> Any:
    import numpy as np

    if isinstance(obj, list):
        return [decode(x, arrays) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, val), = obj.items()
        if tag == "__ndarray__":
            return np.array(arrays[val])
        if tag == "__bytes__":
            return np.asarray(arrays[val], dtype=np.uint8).tobytes()
        if tag == "__tuple__":
            return tuple(decode(x, arrays) for x in val)
        if tag == "__items__":
            return {_hashable(decode(k, arrays)): decode(v, arrays) for k, v in val}
    return {k: decode(v, arrays) for k, v in obj.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def dumps(state: dict[str, Any]) -> bytes:
    """The checkpoint file's bytes for ``state``."""
    import numpy as np

    arrays: dict[str, np.ndarray] = {}
    text = json.dumps(encode(state, arrays), sort_keys=True, separators=(",", ":"))
    buf = io.BytesIO()
    np.savez(buf, __state__=np.frombuffer(text.encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def loads(data: bytes, what: str = "checkpoint") -> dict[str, Any]:
    """The state of a checkpoint file's bytes (``allow_pickle=False``: nothing in it can run code)."""
    import numpy as np

    if not data.startswith(b"PK\x03\x04"):
        raise EvomergeError(f"{what} is not an .npz archive (a zip of numpy arrays); refusing to read it")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        state = json.loads(arrays.pop("__state__").tobytes().decode())
        return decode(state, arrays)
    except EvomergeError:
        raise
    except Exception as exc:
        raise EvomergeError(f"{what} cannot be read: {type(exc).__name__}: {exc}") from None


# ---- files ---------------------------------------------------------------------------------------------------

def save_checkpoint(folder: str | os.PathLike, step: int, state: dict[str, Any]) -> Path:
    """Write checkpoint number ``step`` atomically and prune all but the latest ``KEEP``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = dumps(state)
    path = folder / f"ckpt-{step:06d}.npz"
    kept = (f"the previous checkpoint and the ledger are kept: free space, then `evomerge resume "
            f"{folder.parent}`")
    atomic_write(path, data, "checkpoint", kept)
    try:
        atomic_write(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest(), "checkpoint checksum", kept)
    except EvomergeError:
        path.unlink(missing_ok=True)  # a checkpoint without its checksum is never read back
        raise
    _fsync_dir(folder)
    for _, old in _list(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
        if not any(p.exists() for p in (old.with_suffix(".npz"), old.with_suffix(".pkl"))):
            old.with_suffix(".sha256").unlink(missing_ok=True)
    return path


def _read_verified(path: Path) -> Optional[dict[str, Any]]:
    sha = path.with_suffix(".sha256")
    try:
        data = path.read_bytes()
        want = sha.read_text().strip()
    except OSError as exc:
        log.warning("checkpoint %s unreadable: %s", path.name, exc)
        return None
    if hashlib.sha256(data).hexdigest() != want:
        log.warning("checkpoint %s fails its checksum; falling back to the previous one", path.name)
        return None
    # checksum matched: a failure now is a version mismatch or a tampered file, not corruption (one line)
    if path.suffix == ".pkl":  # an earlier evomerge's checkpoint
        from evomerge.safe_pickle import safe_loads

        return safe_loads(data, f"checkpoint {path}")
    return loads(data, f"checkpoint {path}")


def load_latest_checkpoint(folder: str | os.PathLike) -> Optional[tuple[int, dict[str, Any]]]:
    """(step, state) of the newest intact checkpoint, or None when there is none."""
    found = _list(Path(folder))
    for step, path in reversed(found):
        state = _read_verified(path)
        if state is not None:
            return step, state
    if found:
        raise EvomergeError(f"every checkpoint in {folder} is corrupt; cannot resume")
    return None
