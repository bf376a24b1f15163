"""A Hugging Face hub cache built from local model folders, in the layout ``huggingface_hub`` writes:
``models--ORG--NAME/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/main}``."""

from __future__ import annotations

import hashlib
import os
from fnmatch import fnmatch
from pathlib import Path
from typing import Optional


def seed_hub_cache(cache: Path, repo_id: str, folder: Path, commit: Optional[str] = None,
                   only: Optional[list[str]] = None, set_main: bool = True) -> str:
    """Put ``folder``'s files into ``cache`` as ``repo_id`` at ``commit`` (derived from the files when None);
    ``only``: glob patterns of the files to include. Moves ``refs/main`` there unless ``set_main`` is False.
    Returns the commit."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file()
                   and (only is None or any(fnmatch(p.name, pat) for pat in only)))
    if commit is None:
        h = hashlib.sha1(repo_id.encode())
        for p in files:
            h.update(p.name.encode() + hashlib.sha256(p.read_bytes()).digest())
        commit = h.hexdigest()
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for p in files:
        data = p.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / p.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, snap))
    if set_main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    return commit
