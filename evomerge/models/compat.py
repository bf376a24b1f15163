"""Checks that a set of checkpoints can be merged tensor by tensor: same architecture, names and shapes."""

from __future__ import annotations

from evomerge.errors import EvomergeError
from evomerge.models.safetensors_io import LazyCheckpoint
from evomerge.models.arch import BlockLayout, block_layout
from evomerge.models.vocab import check_tokenizers, check_vocab_rows, vocab_tensors


def layout_of(ckpt: LazyCheckpoint) -> BlockLayout:
    """The checkpoint's block list (see :mod:`evomerge.models.arch`)."""
    return block_layout(ckpt.names(), ckpt.config)


def check_compatible(ckpts: list[LazyCheckpoint], vocab: str = "base") -> None:
    """Raise EvomergeError (one line) unless all checkpoints share architecture, tensor names and shapes, up to
    vocabularies the ``vocab`` rule can merge (``evomerge.models.vocab``; the first checkpoint is the lead)."""
    ref = ckpts[0]
    for ck in ckpts:
        check_vocab_rows(ck)
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
    names, rows = vocab_tensors(ckpts)  # shapes agree, or differ only in vocabulary rows
    # token ids must mean the same tokens whether or not the row counts differ (two tokenizers of one size can
    # still number their tokens differently); a folder without tokenizer files goes unsaid unless rows differ
    check_tokenizers(ckpts, limit=rows[0] if names and vocab == "base" else None, warn_missing=bool(names))
