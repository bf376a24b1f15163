"""Tiny Llama families whose vocabularies differ, built at test time (``tests/test_vocab.py``): a base with a
64-token char tokenizer, fine-tunes of the same vocabulary, one that adds two tokens (66 rows), one with fewer
rows (62), and ones whose tokenizers disagree with the others."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 64
ADDED = ["<think>", "</think>"]


def char_tokenizer(added: list[str] = (), swap: tuple[int, int] | None = None, size: int = VOCAB):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from evomerge.zoo.tokenizer import vocab

    tokens = list(vocab())[:size]
    if swap:
        i, j = swap
        tokens[i], tokens[j] = tokens[j], tokens[i]
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)
    if added:
        fast.add_tokens(list(added))
    return fast


def make_model(out: Path, seed: int, base_state: dict | None, rows: int = VOCAB, tied: bool = False,
               added: list[str] = (), swap: tuple[int, int] | None = None) -> dict:
    """A 2-layer Llama (``rows`` embedding rows) near ``base_state``, saved sharded with its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tied)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if base_state is not None:
            for name, p in model.named_parameters():
                p.copy_(base_state[name] + 0.02 * torch.randn(p.shape, generator=g))
        if rows != VOCAB:
            model.resize_token_embeddings(rows, mean_resizing=False)
            for emb in {id(e): e for e in (model.get_input_embeddings(), model.get_output_embeddings())}.values():
                if rows > VOCAB:
                    emb.weight[VOCAB:] = torch.randn(rows - VOCAB, emb.weight.shape[1], generator=g)
    model.save_pretrained(out, max_shard_size="20KB")
    char_tokenizer(added, swap, min(rows, VOCAB)).save_pretrained(out)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def make_family(root: Path, tied: bool = False) -> dict[str, str]:
    """``base``, ``ft1`` (same vocabulary), ``ft2`` and ``ft2b`` (add ``<think>`` ``</think>``: 66 rows),
    ``short`` (62 rows and tokens), ``other`` (adds two other tokens at ids 64, 65), ``swapped`` (66 rows, ids 5
    and 6 swapped)."""
    base = make_model(root / "base", 0, None, tied=tied)
    specs = {"ft1": dict(), "ft2": dict(rows=VOCAB + 2, added=ADDED), "ft2b": dict(rows=VOCAB + 2, added=ADDED),
             "short": dict(rows=VOCAB - 2),
             "other": dict(rows=VOCAB + 2, added=["<a>", "<b>"]),
             "swapped": dict(rows=VOCAB + 2, added=ADDED, swap=(5, 6))}
    for i, (name, kw) in enumerate(specs.items(), start=1):
        make_model(root / name, i, base, tied=tied, **kw)
    return {name: str(root / name) for name in ["base", *specs]}
