"""Checks that a set of checkpoints can be merged tensor by tensor: same architecture, names and shapes."""

from __future__ import annotations

from evomerge.errors import EvomergeError
from evomerge.models.safetensors_io import LazyCheckpoint
from evomerge.recipe import layer_index


def num_layers(ckpt: LazyCheckpoint) -> int:
    """Decoder layer count: ``num_hidden_layers`` of the config, else counted from tensor names."""
    cfg = ckpt.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    idx = [layer_index(n) for n in ckpt.names()]
    return max((i for i in idx if i is not None), default=-1) + 1


def check_compatible(ckpts: list[LazyCheckpoint]) -> None:
    """Raise EvomergeError (one line) unless all checkpoints share architecture, tensor names and shapes."""
    ref = ckpts[0]
    arch = ref.config.get("architectures")
    names = set(ref.names())
    for other in ckpts[1:]:
        other_arch = other.config.get("architectures")
        if arch and other_arch and arch != other_arch:
            raise EvomergeError(f"architectures differ: {ref.ref} is {arch}, {other.ref} is {other_arch}")
        other_names = set(other.names())
        if other_names != names:
            missing = sorted(names - other_names)
            extra = sorted(other_names - names)
            what = f"lacks {missing[0]}" if missing else f"has extra tensor {extra[0]}"
            more = len(missing) + len(extra) - 1
            raise EvomergeError(f"{other.ref} {what} compared to {ref.ref}" + (f" (+{more} more)" if more else ""))
        for name in ref.names():
            if ref.shape(name) != other.shape(name):
                raise EvomergeError(
                    f"shape mismatch for {name}: {ref.ref} has {list(ref.shape(name))}, "
                    f"{other.ref} has {list(other.shape(name))}"
                )
