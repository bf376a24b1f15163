"""On-disk cache of endpoint (parent / base model) results, keyed by model folder + content hash + task set."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Optional

from evomerge.fitness.results import ItemResults
from evomerge.fsutil import atomic_write
from evomerge.resources import home

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def model_hash(folder: str | Path) -> str:
    """A fast content hash of an HF folder: config, tokenizer files, and each weight file's size plus its first
    and last MiB (full hashes of multi-GB checkpoints would cost more than evaluating them)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        h.update(p.name.encode())
        size = p.stat().st_size
        h.update(str(size).encode())
        with open(p, "rb") as f:
            if p.suffix in (".json", ".txt", ".model") or size <= 2 * _CHUNK:
                h.update(f.read())
            else:
                h.update(f.read(_CHUNK))
                f.seek(size - _CHUNK)
                h.update(f.read(_CHUNK))
    return h.hexdigest()[:20]


class EndpointCache:
    """``get(model_folder, fingerprint)`` / ``put(...)`` of full-split :class:`ItemResults`."""

    def __init__(self, folder: Optional[str | Path] = None):
        self.folder = Path(folder) if folder is not None else home() / "fitness_cache"

    def _path(self, model_folder: str | Path, fingerprint: Mapping[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps({"model": str(Path(model_folder).resolve()), "hash": model_hash(model_folder),
                                         "tasks": fingerprint}, sort_keys=True, default=str).encode()).hexdigest()
        return self.folder / f"{key[:32]}.json"

    def get(self, model_folder: str | Path, fingerprint: Mapping[str, Any]) -> Optional[ItemResults]:
        if not Path(model_folder).is_dir():
            return None
        p = self._path(model_folder, fingerprint)
        if not p.exists():
            return None
        try:
            return ItemResults.from_dict(json.loads(p.read_text()))
        except (ValueError, KeyError) as exc:  # a torn or foreign file: ignore, it will be rewritten
            log.warning("ignoring unreadable endpoint cache %s: %s", p, exc)
            return None

    def put(self, model_folder: str | Path, fingerprint: Mapping[str, Any], results: ItemResults) -> None:
        if not Path(model_folder).is_dir():
            return
        p = self._path(model_folder, fingerprint)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, json.dumps(results.to_dict()))
