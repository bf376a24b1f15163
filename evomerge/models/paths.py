"""Resolve a model reference to something ``from_pretrained`` takes.

- ``zoo://VARIANT/NAME`` -> the tiny zoo's folder (built on first use, see :mod:`evomerge.zoo`);
- an existing local folder -> its absolute path;
- anything else that looks like ``org/name`` -> a hub name, passed through unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

from evomerge.errors import EvomergeError

ZOO_SCHEME = "zoo://"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_model(ref: str) -> str:
    """The folder (or hub name) a model reference points to; raises EvomergeError if it cannot exist."""
    if ref.startswith(ZOO_SCHEME):
        from evomerge.zoo import ensure_zoo  # lazy: the zoo pulls in training code

        variant, _, name = ref[len(ZOO_SCHEME):].partition("/")
        if not variant or not name:
            raise EvomergeError(f"zoo reference {ref!r} must look like zoo://VARIANT/NAME")
        path = ensure_zoo(variant) / name
        if not (path / "config.json").exists():
            known = sorted(p.name for p in path.parent.iterdir() if (p / "config.json").exists())
            raise EvomergeError(f"zoo model {name!r} not in zoo {variant!r} (known: {', '.join(known)})")
        return str(path)
    p = Path(ref).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise EvomergeError(f"model folder {p} has no config.json")
        return str(p.resolve())
    if ref.startswith((".", "/", "~")) or not _HUB_NAME.match(ref):
        raise EvomergeError(f"model folder not found: {ref}")
    return ref
