"""Architecture knowledge the merge engine needs, read from a checkpoint's own names and config: which tensors
belong to which block (decoder layer) of the model's block list.

Blocks are the tensors under ``PREFIX.N.`` for the one prefix whose indices are exactly ``0..L-1``, L being the
config's layer count: ``model.layers.N`` (Llama, Qwen, Mistral, Gemma, Phi3, OLMo2, Mixtral), ``transformer.h.N``
(GPT-2), ``gpt_neox.layers.N`` (GPT-NeoX), ``model.decoder.layers.N`` ... whatever the architecture calls it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional

_NUMBERED = re.compile(r"^(?:(.*?)\.)?(\d+)\.")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def config_layers(config: dict) -> Optional[int]:
    """The decoder layer count of a config.json mapping (nested ``text_config`` too), or None."""
    for cfg in (config, config.get("text_config") or {}):
        for key in LAYER_COUNT_KEYS:
            if isinstance(cfg.get(key), int):
                return cfg[key]
    return None


@dataclass(frozen=True)
class BlockLayout:
    """Where a checkpoint's blocks are: ``prefix`` (``model.layers``) and ``num_layers``; ``prefix`` is None for a
    checkpoint without a block list (then every tensor is outside the blocks)."""

    prefix: Optional[str]
    num_layers: int

    def layer_of(self, name: str) -> Optional[int]:
        """Block index of a tensor name, None for tensors outside the blocks (embeddings, final norm, head)."""
        if self.prefix is None:
            return None
        head = self.prefix + "."
        if not name.startswith(head):
            return None
        idx, dot, _ = name[len(head):].partition(".")
        return int(idx) if dot and idx.isdigit() else None


def block_layout(names: Iterable[str], config: dict) -> BlockLayout:
    """The block list of a checkpoint (see the module docstring)."""
    indices: dict[str, set[int]] = defaultdict(set)
    for name in names:
        m = _NUMBERED.match(name)
        if m and m.group(1):
            indices[m.group(1)].add(int(m.group(2)))
    want = config_layers(config)
    full = [p for p, idx in indices.items() if idx == set(range(len(idx)))]
    if want is not None:
        exact = [p for p in full if len(indices[p]) == want]
        if exact:
            return BlockLayout(min(exact, key=len), want)
        return BlockLayout(None, 0)
    if full:
        best = max(full, key=lambda p: (len(indices[p]), -len(p)))
        return BlockLayout(best, len(indices[best]))
    return BlockLayout(None, 0)
