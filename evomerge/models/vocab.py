"""Vocabularies that differ: which tensors are indexed by token, which rows each model has, which tokenizer the
merged model gets, and the checks that refuse what cannot be merged row by row.

A fine-tune that added tokens has more embedding rows than its base (32002 vs 32000). The token-indexed
("vocab") tensors are found from the checkpoints, never by name: the tensors whose shapes differ between the
models only in the first dimension, where that dimension is each model's ``vocab_size`` (``embed_tokens`` /
``lm_head``, GPT-2 ``wte``, GPT-NeoX ``embed_in`` / ``embed_out``, tied or not). The rules (``vocab`` of a
recipe), with *lead* = the recipe's base (the first model for methods without a base):

- ``base``: the merged model has the lead's rows and tokenizer; rows other models add are dropped;
- ``union``: it has as many rows as the largest model; rows beyond the lead's are not merged by the method but
  taken from the model that has them (the float32 mean of their rows when several models have them), and the
  tokenizer is the one of the model with the most tokens.

Rows below the lead's count are merged by the method as before; a model with fewer rows than the lead takes
the lead's row where it has none (a zero task vector: it leaves that token as the base has it). Tokens are
never renumbered: when rows differ, the tokenizers must agree on every token id they share (below the lead's
row count for ``base``, everywhere for ``union``), else the merge is refused in one line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from evomerge.errors import EvomergeError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
RULES = ("base", "union")


def config_vocab_size(config: dict) -> Optional[int]:
    """``vocab_size`` of a config.json mapping (a nested ``text_config`` too), or None."""
    for cfg in (config, config.get("text_config") or {}):
        if isinstance(cfg.get("vocab_size"), int):
            return cfg["vocab_size"]
    return None


@lru_cache(maxsize=64)
def _token_table(folder: str, mtime: float) -> Optional[dict[int, str]]:
    path = Path(folder)
    table: dict[int, str] = {}
    try:
        if (path / "tokenizer.json").is_file():
            data = json.loads((path / "tokenizer.json").read_text())
            vocab = (data.get("model") or {}).get("vocab")
            if isinstance(vocab, dict):
                table.update({int(i): str(t) for t, i in vocab.items()})
            elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], id = position
                table.update({i: str(p[0]) for i, p in enumerate(vocab)})
            for t in data.get("added_tokens") or []:
                table[int(t["id"])] = str(t["content"])
        elif (path / "vocab.json").is_file():
            table.update({int(i): str(t) for t, i in json.loads((path / "vocab.json").read_text()).items()})
        if (path / "added_tokens.json").is_file():
            table.update({int(i): str(t) for t, i in json.loads((path / "added_tokens.json").read_text()).items()})
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise EvomergeError(f"cannot read the tokenizer of {folder}: {type(exc).__name__}: {exc}") from None
    return table or None


def token_table(folder: str | Path) -> Optional[dict[int, str]]:
    """Token id -> token string of a model folder's tokenizer (``tokenizer.json``, else ``vocab.json``, plus
    ``added_tokens.json``); None when the folder has none of them."""
    p = Path(folder)
    stamp = max((f.stat().st_mtime for f in (p / "tokenizer.json", p / "vocab.json", p / "added_tokens.json")
                 if f.is_file()), default=0.0)
    return _token_table(str(p.resolve()), stamp)


#: the last two name parts of the token-indexed tensors of the architectures evomerge knows (input and output
#: embeddings, tied or not)
TOKEN_TABLES = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_in.weight", "embed_out.weight",
                "word_embeddings.weight")


def check_vocab_rows(ckpt) -> None:
    """The checkpoint's token-indexed tensors have ``vocab_size`` rows, as its config.json says: transformers
    refuses to load a model where they differ, so a merge of it would be written and then be unloadable."""
    size = config_vocab_size(ckpt.config)
    if size is None:
        return
    for name in ckpt.names():
        if ".".join(name.split(".")[-2:]) in TOKEN_TABLES and ckpt.shape(name)[0] != size:
            raise EvomergeError(f"{ckpt.ref}: config.json says vocab_size {size}, but {name} has "
                                f"{ckpt.shape(name)[0]} rows (transformers cannot load such a model)")


def vocab_tensors(ckpts: list) -> tuple[list[str], list[int]]:
    """(token-indexed tensor names, rows of each checkpoint) of checkpoints whose names already agree. Empty when
    every shape agrees; raises EvomergeError (one line) for any other shape difference."""
    ref = ckpts[0]
    vocab: list[str] = []
    for name in ref.names():
        shapes = [tuple(c.shape(name)) for c in ckpts]
        if all(s == shapes[0] for s in shapes):
            continue
        other, other_shape = next((c, s) for c, s in zip(ckpts, shapes) if s != shapes[0])
        sizes = [config_vocab_size(c.config) for c in ckpts]
        token_indexed = all(len(s) == len(shapes[0]) and len(s) > 0 and s[1:] == shapes[0][1:] and s[0] == v
                            for s, v in zip(shapes, sizes))
        if not token_indexed:
            rows_only = len(other_shape) == len(shapes[0]) and other_shape[1:] == shapes[0][1:]
            why = " (only the first dimension differs, but not as the configs' vocab_size)" if rows_only else ""
            raise EvomergeError(f"shape mismatch for {name}: {ref.ref} has {list(shapes[0])}, {other.ref} has "
                                f"{list(other_shape)}{why}")
        vocab.append(name)
    return vocab, ([config_vocab_size(c.config) for c in ckpts] if vocab else [])


def check_tokenizers(ckpts: list, limit: Optional[int] = None, warn_missing: bool = True) -> None:
    """Every two tokenizers agree on the token ids they share (ids below ``limit`` only, when given); a model
    folder without tokenizer files is not compared (``warn_missing``: and says so). Checked once per set of
    folders (merge plans ask per candidate)."""
    _check_tables(tuple((ck.ref, str(ck.path)) for ck in ckpts), limit, warn_missing)


@lru_cache(maxsize=64)
def _check_tables(folders: tuple[tuple[str, str], ...], limit: Optional[int], warn_missing: bool = True) -> None:
    seen: dict[int, tuple[str, str]] = {}  # id -> (token, the model that has it first)
    for ref, path in folders:
        table = token_table(path)
        if table is None:
            if warn_missing:
                log.warning("%s has no tokenizer files: its token ids are assumed to be the others'", ref)
            continue
        for i, tok in table.items():
            if limit is not None and i >= limit:
                continue
            first = seen.setdefault(i, (tok, ref))
            if first[0] != tok:
                raise EvomergeError(
                    f"tokenizers disagree on token id {i}: {first[1]} has {first[0]!r}, {ref} has {tok!r} "
                    "(vocabularies that differ are merged by token id; evomerge does not renumber tokens)")


@dataclass
class VocabMap:
    """How the token-indexed tensors of one merge are laid out: ``lead_rows`` rows merged by the method (models
    with fewer rows take the lead's rows), then ``out_rows - lead_rows`` rows taken from the models that have
    them (``extra``: ``(r0, r1, models)`` runs of rows held by the same models)."""

    rule: str
    lead: str
    lead_rows: int
    out_rows: int
    rows: dict[str, int]
    tensors: frozenset[str]
    tokenizer_ref: str
    extra: list[tuple[int, int, tuple[str, ...]]] = field(default_factory=list)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.out_rows,) + tuple(shape[1:])


def build_vocab_map(ckpts: dict, lead: str, models: list[str], rule: str) -> Optional[VocabMap]:
    """The vocab layout of merging ``models`` onto ``lead`` (refs of ``ckpts``) under ``rule``; None when every
    model has the lead's rows. Raises EvomergeError (one line) for vocabularies that cannot be merged."""
    if rule not in RULES:
        raise EvomergeError(f"unknown vocab rule {rule!r} (use one of {', '.join(RULES)})")
    refs = list(dict.fromkeys([lead] + list(models)))
    cks = [ckpts[r] for r in refs]
    names, counts = vocab_tensors(cks)
    if not names:
        return None
    rows = dict(zip(refs, counts))
    lead_rows = rows[lead]
    check_tokenizers(cks, limit=lead_rows if rule == "base" else None)
    out_rows = max(rows.values()) if rule == "union" else lead_rows
    extra: list[tuple[int, int, tuple[str, ...]]] = []
    bounds = sorted({lead_rows, out_rows} | {n for n in rows.values() if lead_rows < n < out_rows})
    for r0, r1 in zip(bounds, bounds[1:]):
        extra.append((r0, r1, tuple(m for m in refs if rows[m] >= r1)))
    tok = lead
    if rule == "union":  # the largest tokenizer holds every other one (they agree on every shared id)
        sizes = {r: (len(token_table(ckpts[r].path) or {}), rows[r]) for r in refs}
        tok = max(refs, key=lambda r: sizes[r])
    fewer = [m for m in refs if rows[m] < lead_rows]
    log.info("vocab %s: %d rows (lead %s: %d)%s%s", rule, out_rows, lead, lead_rows,
             f"; {len(fewer)} model(s) with fewer rows take the lead's" if fewer else "",
             f"; tokenizer of {tok}" if tok != lead else "")
    return VocabMap(rule, lead, lead_rows, out_rows, rows, frozenset(names), tok, extra)


def resize_live_vocab(model: torch.nn.Module, rows: int) -> bool:
    """Give a live transformers model ``rows`` embedding rows (contents undefined until merged into); True
    when it was resized."""
    emb = model.get_input_embeddings()
    if emb is None or emb.weight.shape[0] == rows:
        return False
    log.info("live model: %d -> %d vocabulary rows", emb.weight.shape[0], rows)
    model.resize_token_embeddings(rows, mean_resizing=False)
    return True
