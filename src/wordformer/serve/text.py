"""Generated token ids to streamed text: stable pieces, stop strings, never half a character.

Decoding each new token alone would go wrong twice: a word tokenizer decides the space before a token
from the token before it, and a byte-level BPE token can hold half of a UTF-8 character. So the text is
decoded over a short window of the latest tokens and only the part that can no longer change is released
(the incremental scheme text-generation servers use). Text that could be the start of a stop string is
held back until it is clear whether the stop string follows; the stop string itself is never sent.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..tokenizers import Tokenizer

REPLACEMENT = "\ufffd"


class TextStream:
    """Feed token ids one by one; get the text to send now, and whether a stop string ended the text."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = (), *, eos_id: Optional[int] = None) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.eos_id = eos_id
        self.ids: list[int] = []  # generated ids, without a final <eos>
        self.tokens = 0  # ids pushed, <eos> included (usage counts it)
        self._prefix = 0  # window start for incremental decoding
        self._read = 0  # ids already turned into stable text
        self._text = ""  # stable text so far (before stop truncation)
        self._sent = 0  # characters of _text handed out
        self.stopped = False

    @property
    def text(self) -> str:
        """The text so far: what has been sent plus what is held back (stop-string truncation applied)."""
        return self._text

    def push(self, token: int) -> str:
        """Add one generated token; returns the text that can be sent now ("" if none)."""
        if self.stopped:
            return ""
        self.tokens += 1
        if self.eos_id is not None and token == self.eos_id:
            return self._release(final=True)
        self.ids.append(int(token))
        before = self.tokenizer.decode(self.ids[self._prefix:self._read])
        after = self.tokenizer.decode(self.ids[self._prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT) and after.startswith(before):
            self._text += after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """The generation ended: the text still held back (partial characters included, as they are)."""
        if self.stopped:
            return ""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        if final and self._read < len(self.ids):  # bytes that never completed a character: send them as they are
            before = self.tokenizer.decode(self.ids[self._prefix:self._read])
            after = self.tokenizer.decode(self.ids[self._prefix:])
            self._text += after[len(before):] if after.startswith(before) else after
            self._prefix = self._read = len(self.ids)
        if self.stop:
            # a stop string may begin in text already checked: search from the last safe point
            start = max(0, self._sent - max(len(s) for s in self.stop) + 1)
            hits = [i for i in (self._text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                end = min(hits)
                self._text = self._text[:end]
                self.stopped = True
                out = self._text[self._sent:end]
                self._sent = len(self._text)
                return out
        safe = len(self._text) if final else len(self._text) - self._held_back()
        out = self._text[self._sent:safe]
        self._sent = max(self._sent, safe)
        return out

    def _held_back(self) -> int:
        """Characters at the end that could be the start of a stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self._text)), longest, -1):
                if self._text.endswith(s[:k]):
                    longest = k
                    break
        return max(0, min(longest, len(self._text) - self._sent))
