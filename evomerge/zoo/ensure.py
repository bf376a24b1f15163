"""``ensure_zoo``: a built zoo variant from evomerge's cache, built on first use. The training code (torch,
transformers) is imported only when a build is needed; a built zoo is found from its manifest alone."""

from __future__ import annotations

from pathlib import Path

from evomerge.fsutil import file_lock
from evomerge.zoo.settings import read_manifest, zoo_path


def ensure_zoo(variant: str = "ci", seed: int = 0, progress: bool = False,
               cache_dir: str | Path | None = None) -> Path:
    """The folder of a built zoo variant in evomerge's cache, building it on first use."""
    path = zoo_path(variant, seed, cache_dir)
    if (m := read_manifest(path)) is not None and m.get("hash") == path.name.rsplit("-", 1)[1]:
        return path
    with file_lock(path.parent / f".{path.name}.lock"):  # concurrent test sessions / workers build it once
        from evomerge.zoo.build import build_zoo  # torch + transformers: only to build

        return build_zoo(path, variant=variant, seed=seed, progress=progress)
