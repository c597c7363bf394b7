"""Token ids into the text the browser shows (no Ray here).

A byte-level BPE token (GPT-2, SmolLM2, Llama 3) can hold part of a UTF-8 character, and
decoding it alone gives U+FFFD, which says nothing about which byte it was. Such a token is
shown by its bytes instead: the characters it does hold, and `\\xNN` for each byte of an
incomplete one (" \\xe6", "\\x97\\xa5" for the halves of 日). SentencePiece's byte-fallback
tokens (`<0xE6>`) are shown as they are named.
"""

from __future__ import annotations

import functools
import re

REPLACEMENT = "\ufffd"
_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@functools.cache
def byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet: printable character -> the byte it stands for (GPT-2's
    `bytes_to_unicode`, inverted)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def token_bytes_text(piece: str) -> str | None:
    """The text of a byte-level token string (`convert_ids_to_tokens`), incomplete UTF-8
    bytes as `\\xNN`; None when `piece` is not in the byte-level alphabet."""
    alphabet = byte_level_alphabet()
    if not piece or any(c not in alphabet for c in piece):
        return None
    return bytes(alphabet[c] for c in piece).decode("utf-8", errors="backslashreplace")


class TokenText:
    """Token id -> its text as shown (decoded alone; byte tokens by their bytes), cached."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self.cache.get(token_id)
        if text is None:
            text = self.cache[token_id] = self._text(token_id)
        return text

    def _text(self, token_id: int) -> str:
        text = self.tokenizer.decode([token_id])
        if REPLACEMENT not in text:
            return text
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str):
            if _BYTE_FALLBACK.match(piece):
                return piece
            shown = token_bytes_text(piece)
            if shown is not None:
                return shown
        return text
