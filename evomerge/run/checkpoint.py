"""Atomic, checksummed checkpoints: ``checkpoints/ckpt-NNNNNN.pkl`` + ``.sha256``, the latest two kept.

Write: temp file -> fsync -> rename (then the checksum file the same way, then fsync the folder). Read: the
newest checkpoint whose bytes match its checksum; a corrupt or half-written latest one falls back to the one
before, with a warning. The checksum catches corruption, not tampering: files are unpickled through
:func:`evomerge.safe_pickle.safe_loads`, which refuses anything but optimizer-state types (no code runs).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Optional

from evomerge.errors import EvomergeError
from evomerge.fsutil import atomic_write
from evomerge.safe_pickle import safe_loads

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d{6,})\.pkl$")
KEEP = 2


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
    return sorted(out)


def save_checkpoint(folder: str | os.PathLike, step: int, state: dict[str, Any]) -> Path:
    """Write checkpoint number ``step`` atomically and prune all but the latest ``KEEP``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    path = folder / f"ckpt-{step:06d}.pkl"
    atomic_write(path, data)
    atomic_write(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest())
    _fsync_dir(folder)
    for _, old in _list(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
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
    return safe_loads(data, f"checkpoint {path}")


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
