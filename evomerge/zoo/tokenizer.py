"""A character-level tokenizer built locally with ``tokenizers``; ``AutoTokenizer.from_pretrained`` loads it."""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
CHARS = "\n " + string.digits + string.ascii_lowercase + string.ascii_uppercase + "+-*/=:,.;!?()[]<>|_#"


def vocab() -> dict[str, int]:
    """Token -> id: the four special tokens first, then one id per character."""
    return {tok: i for i, tok in enumerate(list(SPECIALS) + list(CHARS))}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The char tokenizer: every character is one token (newline and space included); decode joins them."""
    tok = Tokenizer(models.WordLevel(vocab=vocab(), unk_token=UNK))
    # "[\s\S]" matches any single character, newline included (Oniguruma has no (?s)).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )


def save_tokenizer(out_dir: str | Path) -> None:
    """Write the tokenizer files into an HF model folder."""
    build_tokenizer().save_pretrained(str(out_dir))
