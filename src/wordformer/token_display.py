"""Tokens as a learner should see them: ids, readable text, special tokens marked.

Byte-level BPE stores its entries as printable stand-ins for bytes (``"Ġthe"`` is the bytes of ``" the"``).
A piece that holds only part of a multi-byte character (an accent, an emoji split over two tokens) has no
text of its own, and decoding it alone gives the replacement character. :func:`readable_tokens` never shows
that: such a piece is shown as its bytes in hex (``\\xe2\\x82``, with whatever whole characters it holds as text), and every piece of the character carries
the character and the span of tokens that together spell it (``chars``).

The page, ``wordformer explain``, ``predict`` and the attention plots all show tokens through this module:
:func:`token_labels` for a sequence (the page's chips: the label, and the character a piece helps spell),
:func:`token_text` for one token's own text.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional, Sequence

from .tokenizers import Tokenizer

__all__ = ["byte_level_decoder", "readable_tokens", "token_labels", "token_text", "visible"]

# space, line break and tab drawn as visible marks; other control characters as their code
_MARKS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(text: str) -> str:
    """``text`` with whitespace and control characters made visible (an empty piece reads ``∅``)."""
    out = []
    for ch in text:
        if ch in _MARKS:
            out.append(_MARKS[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out) or "∅"


@lru_cache(maxsize=1)
def byte_level_decoder() -> dict[str, int]:
    """The byte each printable stand-in of byte-level BPE (GPT-2's scheme) stands for.

    Bytes that are printable Latin-1 characters stand for themselves; the other 68 bytes (controls, space,
    and a few more), in increasing order, are given the characters from U+0100 upwards.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _piece_bytes(entry: str) -> Optional[bytes]:
    """The bytes a byte-level BPE entry stands for, or None when it is not one (a special token)."""
    table = byte_level_decoder()
    try:
        return bytes(table[ch] for ch in entry)
    except KeyError:
        return None


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if lead >> 5 == 0b110:
        return 2
    if lead >> 4 == 0b1110:
        return 3
    if lead >> 3 == 0b11110:
        return 4
    return 1  # a stray continuation byte: a group of its own


def readable_tokens(tokenizer: Tokenizer, ids: Sequence[int]) -> list[dict[str, Any]]:
    """One dict per id: ``id``, ``entry`` (the vocabulary entry), ``text`` (the piece's own text, None when it holds
    part of a character), ``label`` (what to show: text with whitespace visible; bytes that are only part of a
    character as ``\\xNN``), ``special`` ("eos", "pad", "unk" or None), ``partial``, ``bytes`` (hex, BPE only) and,
    for each character spread over several pieces, ``chars`` = [{"span": [first, last] token index, "text": char}].
    """
    ids = [int(i) for i in ids]
    specials = {tokenizer.pad_id: "pad"}
    if tokenizer.unk_id is not None:
        specials[tokenizer.unk_id] = "unk"
    specials[tokenizer.eos_id] = "eos"  # GPT-2's <|endoftext|> is both <eos> and <pad>: it reads as <eos>
    out: list[dict[str, Any]] = []
    raw: list[Optional[bytes]] = []
    for i in ids:
        entry = tokenizer.id_to_token(i)
        special = specials.get(i)
        item: dict[str, Any] = {"id": i, "entry": entry, "special": special, "partial": False}
        data = _piece_bytes(entry) if tokenizer.kind == "bpe" and special is None else None
        raw.append(data)
        if data is not None:
            item["bytes"] = data.hex(" ")
            try:
                item["text"] = data.decode("utf-8")
            except UnicodeDecodeError:
                item["text"] = None
        else:
            item["text"] = entry if special is not None else tokenizer.decode([i])
        item["label"] = entry if special is not None else (visible(item["text"]) if item["text"] is not None else "")
        out.append(item)
    _group_partial_pieces(out, raw)
    return out


def _group_partial_pieces(items: list[dict[str, Any]], raw: list[Optional[bytes]]) -> None:
    """Mark the BPE pieces whose bytes only make text together with their neighbours (UTF-8 split across tokens)."""
    k = 0
    while k < len(items):
        if raw[k] is None:
            k += 1
            continue
        stream, owner = bytearray(), []  # consecutive byte pieces as one byte stream, and each byte's token
        while k < len(items) and raw[k] is not None:
            stream.extend(raw[k])  # type: ignore[arg-type]
            owner.extend([k] * len(raw[k]))  # type: ignore[arg-type]
            k += 1
        pos = 0
        while pos < len(stream):
            n = min(_utf8_length(stream[pos]), len(stream) - pos)
            first, last = owner[pos], owner[pos + n - 1]
            if first != last:  # this character's bytes lie in more than one token
                try:
                    char: Optional[str] = bytes(stream[pos:pos + n]).decode("utf-8")
                except UnicodeDecodeError:
                    char = None
                for t in range(first, last + 1):
                    items[t].setdefault("chars", []).append({"span": [first, last], "text": char})
            pos += n
    for item, data in zip(items, raw):
        if data is not None and item["text"] is None:
            item["partial"] = True
            # the bytes it can spell as text, the rest as \xNN: never a replacement character
            item["label"] = visible(data.decode("utf-8", errors="backslashreplace"))


def token_labels(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """One short label per token, as the page's token chips read: the :func:`readable_tokens` label, and for a
    piece of a character spread over several tokens that character in angle brackets (``\\xf0⟨😀⟩``)."""
    labels = []
    for item in readable_tokens(tokenizer, ids):
        chars = "".join(f"⟨{c['text']}⟩" for c in item.get("chars", []) if c["text"] is not None)
        labels.append(item["label"] + chars)
    return labels


def token_text(tokenizer: Tokenizer, i: int) -> str:
    """One token's own text, whitespace as it is: what it decodes to; a piece holding only part of a character
    reads as those bytes in hex (``\\xe2\\x82``), never as the replacement character; specials as their entry."""
    item = readable_tokens(tokenizer, [i])[0]
    if item["text"] is not None:
        return item["text"]
    return bytes.fromhex(item["bytes"]).decode("utf-8", errors="backslashreplace")
