from transformers import AutoTokenizer

from evomerge.zoo.tokenizer import CHARS, build_tokenizer, save_tokenizer


def test_round_trip_every_char_including_newline(tmp_path):
    save_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "12+345=357\nrev:abc=cba\n\n" + CHARS
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert tok.convert_ids_to_tokens(tok("\n", add_special_tokens=False)["input_ids"]) == ["\n"]


def test_special_tokens_and_unknown_chars():
    tok = build_tokenizer()
    assert {tok.pad_token, tok.eos_token, tok.bos_token, tok.unk_token} == {"<pad>", "</s>", "<s>", "<unk>"}
    assert tok("~", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    assert tok.decode([tok.eos_token_id] + tok("ab", add_special_tokens=False)["input_ids"],
                      skip_special_tokens=True) == "ab"
