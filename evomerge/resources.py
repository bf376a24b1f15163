"""Find the ready-made definitions shipped with evomerge (search_spaces/, fitness/, experiments/).

In a wheel they live in ``evomerge/_shipped/<kind>``; in a source checkout or editable install they are the
top-level folders of the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from evomerge.errors import EvomergeError

KINDS = ("search_spaces", "fitness", "experiments")
_PKG = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path:
    """The folder holding the shipped definitions of one kind."""
    if kind not in KINDS:
        raise EvomergeError(f"unknown resource kind {kind!r} (known: {', '.join(KINDS)})")
    for cand in (_PKG / "_shipped" / kind, _PKG.parent / kind):
        if cand.is_dir():
            return cand
    raise EvomergeError(f"shipped folder {kind!r} not found next to the evomerge package")


def resolve(kind: str, name_or_path: str | os.PathLike, suffixes: tuple[str, ...] = (".yaml", ".yml")) -> Path:
    """A path that exists as given, or a shipped definition by name (with or without suffix)."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    base = shipped_dir(kind)
    for cand in [base / str(name_or_path)] + [base / f"{name_or_path}{s}" for s in suffixes]:
        if cand.exists():
            return cand
    if suffixes:
        known = sorted({q.stem for q in base.rglob("*") if q.suffix in suffixes})
    else:  # folders (lm-eval task folders)
        known = sorted(q.name for q in base.iterdir() if q.is_dir() and not q.name.startswith((".", "_")))
    label = {"search_spaces": "search space", "fitness": "fitness folder", "experiments": "experiment"}[kind]
    raise EvomergeError(f"{label} {str(name_or_path)!r} is neither a path nor a shipped name "
                        f"(shipped: {', '.join(known) or 'none'})")


def home() -> Path:
    """evomerge's cache folder (zoo builds, endpoint caches): $EVOMERGE_HOME or ~/.cache/evomerge."""
    return Path(os.environ.get("EVOMERGE_HOME", Path.home() / ".cache" / "evomerge")).expanduser()
