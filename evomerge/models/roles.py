"""Module roles: ``attention``, ``mlp``, ``norm``, ``embedding``, ``head``, as tensor-name filters that hold for every
supported architecture. A search space's module groups name roles (``modules: [[attention], [mlp]]``); each
role stands for the dotted name segments its modules have in Llama, Qwen, Mistral, Gemma, Phi, OLMo, Mixtral
(``self_attn``, ``mlp``, ``block_sparse_moe``), GPT-2 (``attn``, ``mlp``, ``ln_1``), GPT-NeoX (``attention``,
``mlp``) and Falcon (``self_attention``). Dotted segments keep a role exact where a plain substring is not:
NeoX's ``post_attention_layernorm`` is a norm, not attention.

Filters match as substrings of tensor names (as mergekit's ``filter`` does), so recipes stay plain data.
"""

from __future__ import annotations

from typing import Iterable

ROLE_FILTERS: dict[str, tuple[str, ...]] = {
    "attention": (".self_attn.", ".attn.", ".attention.", ".self_attention."),
    "mlp": (".mlp.", ".feed_forward.", ".block_sparse_moe.", ".ffn."),
    "norm": ("norm.", ".ln_"),
    "embedding": ("embed_tokens.", ".wte.", ".wpe.", "embed_in.", "word_embeddings."),
    "head": ("lm_head.", "embed_out."),
}


def expand_modules(entries: Iterable[str]) -> list[str]:
    """Name filters of a module group: each role replaced by its filters, other entries kept as they are."""
    out: list[str] = []
    for e in entries:
        out += ROLE_FILTERS.get(e, (e,))
    return list(dict.fromkeys(out))


def module_label(filters: Iterable[str]) -> str:
    """A module group's filters named back by role where they are one (``attention``; else the filters)."""
    left = list(dict.fromkeys(filters))
    parts = []
    for role, fs in ROLE_FILTERS.items():
        if set(fs) <= set(left):
            parts.append(role)
            left = [f for f in left if f not in fs]
    return "+".join(parts + [f.strip(".") for f in left])


def matching(filters: Iterable[str], names: Iterable[str]) -> list[str]:
    """The names any of ``filters`` matches."""
    filters = list(filters)
    return [n for n in names if any(f in n for f in filters)]


def check_module_entries(entries: Iterable[str], names: list[str], model: str) -> None:
    """Refuse (one line) an entry of a module group (a role or a literal filter) that matches no tensor of
    ``model`` (``names``): its tensors would silently keep the model-level parameters."""
    from evomerge.errors import ConfigError

    for e in entries:
        if not matching(expand_modules([e]), names):
            what = f"role {e!r}" if e in ROLE_FILTERS else f"module filter {e!r}"
            layer_segments = sorted({n.split(".")[-2] for n in names if n.count(".") >= 2})[:8]
            raise ConfigError(f"{what} matches no tensor of {model} (its tensors are named like "
                              f"{', '.join(layer_segments)}); name a role ({', '.join(ROLE_FILTERS)}) or a filter "
                              "its names contain")
