"""Small file-system helpers shared by the run store, the item bank, the caches and the zoo build."""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from evomerge.errors import EvomergeError


#: errors that mean the disk (or the user's quota, or the file size limit) is full
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def write_failed(exc: OSError, path: str | Path, what: str, then: str) -> EvomergeError:
    """One line for a failed write of ``what`` at ``path``, saying what was kept and what to do (``then``)."""
    why = f"no space left ({exc.strerror})" if exc.errno in NO_SPACE else (exc.strerror or type(exc).__name__)
    return EvomergeError(f"cannot write {what} {path}: {why}; {then}")


def write_all(fh, data: bytes) -> None:
    """Write every byte of ``data`` to an unbuffered file (a full disk shows as a short write, then an error)."""
    view = memoryview(data)
    while view:
        n = fh.write(view)
        if not n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def atomic_write(path: str | Path, data: bytes | str, what: str = "file",
                 then: str = "the previous version is kept") -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder (fsynced, then renamed over it): a
    reader sees the old file or the whole new one, never half of it; concurrent writers do not collide. A
    failed write (a full disk) leaves the old file and no temp file, and raises one line (``what``, ``then``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb", buffering=0) as fh:
            write_all(fh, data.encode() if isinstance(data, str) else data)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(exc, path, what, then) from None


def check_output_folder(path: str | Path, what: str = "output folder", allow_full: bool = False) -> Path:
    """``path`` as a folder to write: missing below a writable folder, or an empty folder (any folder with
    ``allow_full``); one EvomergeError line otherwise, before any compute."""
    out = Path(path)
    if out.exists():
        if not out.is_dir():
            raise EvomergeError(f"{what} {out} exists and is not a folder")
        if not allow_full and any(out.iterdir()):
            raise EvomergeError(f"{what} {out} exists and is not empty")
        return out
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise EvomergeError(f"cannot create {what} {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EvomergeError(f"cannot create {what} {out}: {parent} is not writable")
    return out


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block: what several processes
    may build at once (a zoo, an item bank) is built once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | Path, skip: tuple[str, ...] = ("ray",)) -> list[Path]:
    """Delete the temp files (``.NAME.tmp-PID``) that ``atomic_write`` calls killed mid-write left under
    ``folder`` (not in the ``skip`` subfolders); a live writer's temp file is kept. Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(".*.tmp-*"):
        rel = path.relative_to(folder).parts
        if rel[0] in skip or not path.is_file():
            continue
        pid = path.name.rpartition(".tmp-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
