"""Append-only JSON-lines ledger of evaluated candidates, fsynced per record, tolerant of a torn last line.

A process killed mid-write can leave a partial last line; ``Ledger.open`` cuts it off (the candidate it held
was never complete, so it is evaluated again) and every complete record is kept.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from evomerge.errors import EvomergeError
from evomerge.fsutil import write_all, write_failed

log = logging.getLogger(__name__)


class Ledger:
    """``ledger.jsonl`` of a run directory: ``append(record)`` durably, ``records()`` to read back."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records: list[dict[str, Any]] = []
        self._repair_and_load()

    def _repair_and_load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1  # bytes after the last newline belong to a torn write
        recs = []
        for i, line in enumerate(data[:good_end].splitlines()):
            if not line.strip():
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                raise EvomergeError(f"ledger {self.path} line {i + 1} is corrupt (not a torn tail); "
                                    "repair or remove it") from None
        if good_end < len(data):
            log.warning("ledger %s: dropping a torn last record (%d bytes)", self.path, len(data) - good_end)
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        self._records = recs

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write one record durably (JSON-native values only: no tuples, no NaN); returns it."""
        line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "ab", buffering=0) as fh:
                write_all(fh, line)
                os.fsync(fh.fileno())
        except OSError as exc:  # a full disk: cut the partial record off, so the next append starts clean
            try:
                os.truncate(self.path, size)
            except OSError:
                pass  # a torn tail is cut off when the ledger is opened again
            raise write_failed(exc, self.path, "ledger", "every earlier record is kept: free space, then "
                               f"`evomerge resume {self.path.parent}`") from None
        self._records.append(record)  # JSON-native already (json.dumps above would have refused otherwise)
        return record

    def records(self) -> list[dict[str, Any]]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._records))


def same_point(a, b) -> bool:
    """Points compared as the ledger stores them (JSON)."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))
