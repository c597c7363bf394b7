"""Byte tokens are shown by their bytes, every other token as the tokenizer decodes it alone."""

import codecs

from raysae.analysis.token_text import TokenText, byte_level_alphabet, token_bytes_text


def test_the_byte_level_alphabet_covers_every_byte_once():
    alphabet = byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256))
    assert alphabet["Ġ"] == ord(" ") and alphabet["Ċ"] == ord("\n") and alphabet["a"] == ord("a")


def test_incomplete_utf8_shows_as_escaped_bytes():
    assert token_bytes_text("Ġæ") == " \\xe6"
    assert token_bytes_text("æľ¬") == "本"
    assert token_bytes_text("日本") is None  # not byte-level: left to the caller


def test_smollm2_tokens(offline_assets):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(offline_assets / "smollm2-135m")
    text = TokenText(tok)
    ids = tok("Hello naïve 日本語 🙂 end", add_special_tokens=False)["input_ids"]
    shown = [text(i) for i in ids]
    assert "\ufffd" not in "".join(shown)
    # Unescaping the shown text gives back the original bytes: nothing lost, nothing added.
    raw = b"".join(codecs.escape_decode(s.encode("utf-8"))[0] if "\\x" in s else s.encode() for s in shown)
    assert raw.decode("utf-8") == "Hello naïve 日本語 🙂 end"
    for i, s in zip(ids, shown, strict=True):
        if "\\x" not in s:
            assert s == tok.decode([i])  # whole characters: exactly the tokenizer's decoding
