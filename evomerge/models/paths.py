"""Resolve a model reference to something ``from_pretrained`` takes.

- ``zoo://VARIANT/NAME`` -> the tiny zoo's folder (built on first use, see :mod:`evomerge.zoo`);
  ``zoo://VARIANT@SEED/NAME`` -> the zoo built from training seed SEED (default 0);
- an existing local folder -> its absolute path;
- anything else that looks like ``org/name[@revision]`` -> a hub name, resolved through the Hugging Face cache
  (fetched on first use; see :mod:`evomerge.models.hub`).
"""

from __future__ import annotations

from pathlib import Path

from evomerge.errors import EvomergeError
from evomerge.models.hub import hub_folder, hub_ref, is_hub_name

ZOO_SCHEME = "zoo://"


def resolve_model(ref: str) -> str:
    """The local folder a model reference points to; raises EvomergeError if it cannot be had."""
    if ref.startswith(ZOO_SCHEME):
        from evomerge.zoo import ensure_zoo  # lazy: the zoo pulls in training code
        from evomerge.zoo.settings import parse_zoo_ref

        variant, seed, name = parse_zoo_ref(ref)
        path = ensure_zoo(variant, seed=seed) / name
        if not (path / "config.json").exists():
            known = sorted(p.name for p in path.parent.iterdir() if (p / "config.json").exists())
            raise EvomergeError(f"zoo model {name!r} not in zoo {variant!r} (known: {', '.join(known)})")
        return str(path)
    p = Path(ref).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise EvomergeError(f"model folder {p} has no config.json")
        return str(p.resolve())
    if not is_hub_name(ref):
        raise EvomergeError(f"model folder not found: {ref}")
    return str(hub_folder(ref))


def portable_ref(ref: str) -> str:
    """What another tool (mergekit) reads for ``ref``: a hub name as it is (``org/name@commit``: mergekit and
    transformers fetch it themselves), any other reference as its local folder."""
    return ref if hub_ref(ref) is not None else resolve_model(ref)
