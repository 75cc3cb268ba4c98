"""Tokenizers: text to token ids and back, at three granularities.

* :class:`WordTokenizer` - the chapter's word predictor: one id per word or punctuation mark.
* :class:`CharTokenizer` - one id per character; tiny vocabulary, long sequences.
* :class:`BPETokenizer` - byte-level BPE (HuggingFace ``tokenizers``); exact round trip for any text.

All three share the special tokens ``<pad>`` (id 0) and ``<eos>`` (id 1), and all recognise the literal
text ``<eos>`` in their input as the end-of-sequence token, so the chapter's toy strings such as
``"what is statquest <eos> awesome <eos>"`` encode with real ``<eos>`` ids. Every tokenizer serialises to
a JSON-ready dict (:meth:`Tokenizer.to_dict`) that :func:`tokenizer_from_dict` turns back into an equal
tokenizer, so checkpoints carry their vocabulary with them.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections import Counter
from itertools import chain, repeat
from typing import Any, ClassVar, Iterable, Optional, Sequence

import numpy as np

from .config import MIN_BPE_VOCAB
from .errors import WordformerError

logger = logging.getLogger(__name__)

EOS = "<eos>"
PAD = "<pad>"
UNK = "<unk>"


class Tokenizer(ABC):
    """The interface the model, the data pipeline and the plots rely on."""

    kind: ClassVar[str] = ""
    EOS: ClassVar[str] = EOS
    PAD: ClassVar[str] = PAD
    UNK: ClassVar[str] = UNK
    pairs: bool = False
    """The model this tokenizer serves was trained on prompt/answer pairs, so a prompt ends with ``<eos>``
    (which starts the answer). Set from the checkpoint when a model is loaded (:class:`~wordformer.LoadedModel`);
    :func:`~wordformer.generation.encode_prompt` reads it when ``append_eos`` is not given."""

    @property
    def pad_id(self) -> int:
        """Id used to pad batches of unequal length (always 0)."""
        return self._special_id(self.PAD)

    @property
    def eos_id(self) -> int:
        """Id that ends a line, a document, a prompt or an answer."""
        return self._special_id(self.EOS)

    @property
    def unk_id(self) -> Optional[int]:
        """Id standing for unknown input, or None where every input is representable (BPE)."""
        return self.token_to_id(UNK)

    def _special_id(self, token: str) -> int:
        i = self.token_to_id(token)
        if i is None:  # pragma: no cover - every tokenizer defines <pad> and <eos>
            raise WordformerError(f"the {self.kind} tokenizer has no {token} token; retrain it")
        return i

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids, specials included (the model's embedding rows)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; the literal ``<eos>`` becomes :attr:`eos_id`."""

    @abstractmethod
    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text of ``ids``; ``skip_special`` leaves out ``<pad>`` and ``<eos>`` (``<unk>`` stays)."""

    @abstractmethod
    def id_to_token(self, i: int) -> str:
        """The vocabulary entry of id ``i``."""

    @abstractmethod
    def token_to_id(self, tok: str) -> Optional[int]:
        """The id of vocabulary entry ``tok``, or None when it is not in the vocabulary."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, with ``"kind"``, from which :func:`tokenizer_from_dict` rebuilds this."""

    @classmethod
    @abstractmethod
    def train(cls, texts: Iterable[str], **opts: Any) -> "Tokenizer":
        """Learn a vocabulary from ``texts``."""

    def tokens(self, text: str) -> list[str]:
        """Readable token strings of ``text``, one per id (labels for attention plots)."""
        return [self.id_to_token(i) for i in self.encode(text)]

    def unknown(self, text: str) -> list[str]:
        """The pieces of ``text`` the vocabulary lacks, each once, in order: they are read as ``<unk>``.

        Words for the word tokenizer, characters for the char tokenizer; byte-level BPE has none.
        """
        return []

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts; subclasses override where batching is faster."""
        return [self.encode(t) for t in texts]

    def encode_array(self, text: str) -> np.ndarray:
        """:meth:`encode` as an int64 array of shape (n,); the data pipeline's path for large corpora."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """:meth:`encode_array` for many texts; BPE batches them in Rust."""
        return [np.asarray(ids, dtype=np.int64) for ids in self.encode_batch(texts)]

    def encode_lines(self, text: str, *, cont: bool = False, open_end: bool = False) -> np.ndarray:
        """The ids of a corpus in ``eos="line"`` mode: every line with some non-space text, then ``<eos>``;
        blank and whitespace-only lines are left out. The end of ``text`` ends its last line, unless
        ``open_end`` (a streamed piece cut inside a long line: no ``<eos>`` yet); ``cont`` says ``text`` starts
        inside a line whose earlier part had text (so its first line counts whatever it holds)."""
        lines = text.split("\n")
        last = len(lines) - 1
        kept, ends = [], []
        for k, line in enumerate(lines):
            if (k == 0 and cont) or (line and not line.isspace()):
                kept.append(line)
                ends.append(not (open_end and k == last))
        eos = np.array([self.eos_id], dtype=np.int64)
        parts: list[np.ndarray] = []
        for ids, end in zip(self.encode_arrays(kept), ends):
            parts.append(ids)
            if end:
                parts.append(eos)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _check_id(self, i: int) -> int:
        if not 0 <= int(i) < self.vocab_size:
            raise WordformerError(f"token id {i} is outside the vocabulary 0..{self.vocab_size - 1}; check the model and tokenizer match")
        return int(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------------------- words

# A word is a run of word characters (\w: unicode letters, digits and "_", so identifiers such as
# ``__init__`` stay whole) with apostrophes allowed *inside* it ("don't", "l'homme"). Every other
# non-space character is its own token. The literal "<eos>" is matched first so it is never split.
WORD_PATTERN = re.compile(r"<eos>|\w+(?:['\u2019]\w+)*|[^\w\s]")
NO_SPACE_BEFORE = frozenset(",.;:!?)]}%")
NO_SPACE_AFTER = frozenset("([{")


def join_words(tokens: Sequence[str]) -> str:
    """Join word tokens with single spaces, except none before ``, . ; : ! ? ) ] } %`` and after ``( [ {``."""
    parts: list[str] = []
    prev = ""
    for tok in tokens:
        if parts and tok not in NO_SPACE_BEFORE and prev not in NO_SPACE_AFTER:
            parts.append(" ")
        parts.append(tok)
        prev = tok
    return "".join(parts)


class WordTokenizer(Tokenizer):
    """One id per word or punctuation mark, as in the chapter's word predictor.

    Normalisation: text is split by :data:`WORD_PATTERN`, lowercased when ``lowercase`` is set, and
    :meth:`decode` rejoins the tokens with :func:`join_words`. So ``decode(encode(t)) == normalize(t)``
    whenever every word of ``t`` is in the vocabulary; line breaks and runs of spaces become single spaces.
    Vocabulary: ``<pad>``=0, ``<eos>``=1, ``<unk>``=2, then words by frequency (descending), ties alphabetical.
    """

    kind = "word"

    def __init__(self, vocab: Sequence[str], *, lowercase: bool = True) -> None:
        if list(vocab[:3]) != [PAD, EOS, UNK]:
            raise WordformerError("word vocabulary must start with <pad>, <eos>, <unk>; retrain the tokenizer")
        self.lowercase = bool(lowercase)
        self._vocab = list(vocab)
        self._index = {tok: i for i, tok in enumerate(self._vocab)}
        if len(self._index) != len(self._vocab):
            raise WordformerError("word vocabulary has duplicate entries; retrain the tokenizer")
        self.grows = False  # see growing()
        self._forget()  # encode_array / encode_lines: whitespace-free piece -> its code

    def split(self, text: str) -> list[str]:
        """The normalised word and punctuation tokens of ``text`` (before vocabulary look-up)."""
        words = WORD_PATTERN.findall(text)
        return [w.lower() for w in words] if self.lowercase else words

    def normalize(self, text: str) -> str:
        """What ``decode(encode(text))`` returns when no word is out of vocabulary."""
        return join_words(self.split(text))

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        *,
        lowercase: bool = True,
        min_freq: int = 1,
        max_vocab: Optional[int] = None,
    ) -> "WordTokenizer":
        """Keep words seen at least ``min_freq`` times, at most ``max_vocab`` of them (specials not counted)."""
        probe = cls([PAD, EOS, UNK], lowercase=lowercase)
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(probe.split(text))
        return cls.from_counts(counts, lowercase=lowercase, min_freq=min_freq, max_vocab=max_vocab)

    @classmethod
    def growing(cls, *, lowercase: bool = True) -> "WordTokenizer":
        """A tokenizer whose vocabulary grows: every new word gets the next id (ids by first appearance) instead of
        ``<unk>``. A streamed corpus is encoded once with it, counted from those ids, and its ids mapped to the
        final vocabulary's (:meth:`from_counts`) afterwards: one pass over the text instead of two."""
        tok = cls([PAD, EOS, UNK], lowercase=lowercase)
        tok.grows = True
        return tok

    def _ids(self, words: Sequence[str]) -> tuple[int, ...]:
        if not self.grows:
            unk, get = self._index[UNK], self._index.get
            return tuple(get(w, unk) for w in words)
        index, vocab = self._index, self._vocab
        for w in words:
            if w not in index:
                index[w] = len(vocab)
                vocab.append(w)
        return tuple(index[w] for w in words)

    @classmethod
    def from_counts(cls, counts: Counter, *, lowercase: bool = True, min_freq: int = 1,
                    max_vocab: Optional[int] = None) -> "WordTokenizer":
        """The vocabulary :meth:`train` builds, from word counts gathered elsewhere (a streamed corpus counts
        its pieces in parallel and adds them up)."""
        counts = Counter(counts)
        counts.pop(EOS, None)
        if not counts:
            raise WordformerError("no words to build the word tokenizer from; give a corpus with some text")
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if not words:
            raise WordformerError(f"no word occurs at least min_freq={min_freq} times; lower --min-freq")
        if max_vocab is not None:
            words = words[:max_vocab]
        logger.info("word tokenizer: %d words kept of %d distinct", len(words), len(counts))
        return cls([PAD, EOS, UNK, *words], lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def encode(self, text: str) -> list[int]:
        return list(self._ids(self.split(text)))

    # Fast paths for large corpora. No token spans whitespace, and ``str.split()`` cuts at exactly the characters
    # of the pattern's ``\s`` (both are str.isspace), so the text splits into whitespace-free pieces that tokenize
    # on their own; natural text repeats them ("the", "lord,"), so each distinct piece is split and looked up
    # once and remembered as one code: its id when it is one token, else -(k + 1) for entry k of a table of id
    # runs, which numpy expands. The plain path above stays the definition (tests check that both agree).
    _MEMO_LIMIT = 1 << 20  # distinct pieces remembered (~100 MB at most; CPython's sources hold 456k); emptied when full
    _LINE_MARK = "\x00"  # a line end in encode_lines; never in a corpus (NUL means binary), else the plain path
    _MARK = -(1 << 61)  # the line end's code
    _MISSING = -(1 << 62)  # not in the memo yet

    def _forget(self) -> None:
        self._codes: dict[str, int] = {self._LINE_MARK: self._MARK}
        self._run_flat = np.zeros(0, dtype=np.int64)  # the ids of the pieces of several tokens, one after another
        self._run_start = np.zeros(0, dtype=np.int64)
        self._run_len = np.zeros(0, dtype=np.int64)

    def _piece_codes(self, pieces: list[str]) -> np.ndarray:
        """One code per piece (int64, (n,)), learning the pieces not seen yet."""
        codes = np.fromiter(map(self._codes.get, pieces, repeat(self._MISSING)), dtype=np.int64, count=len(pieces))
        missing = np.flatnonzero(codes == self._MISSING)
        if len(missing):
            new = {pieces[i] for i in missing.tolist()}
            if len(self._codes) + len(new) > self._MEMO_LIMIT:  # full: start again with this text's pieces
                self._forget()
                codes[:] = self._MISSING
                codes[np.fromiter(map(self._LINE_MARK.__eq__, pieces), dtype=bool, count=len(pieces))] = self._MARK
                missing = np.flatnonzero(codes == self._MISSING)
                new = {pieces[i] for i in missing.tolist()}
            runs = []
            for piece in new:
                # a piece of letters and digits only (all \w) is one word: no regex needed
                words = [piece.lower() if self.lowercase else piece] if piece.isalnum() else self.split(piece)
                ids = self._ids(words)
                if len(ids) == 1:
                    self._codes[piece] = ids[0]
                else:
                    self._codes[piece] = -(len(self._run_len) + len(runs) + 1)
                    runs.append(ids)
            if runs:
                lens = np.fromiter(map(len, runs), dtype=np.int64, count=len(runs))
                self._run_start = np.concatenate([self._run_start, len(self._run_flat) + np.cumsum(lens) - lens])
                self._run_len = np.concatenate([self._run_len, lens])
                self._run_flat = np.concatenate([self._run_flat, np.fromiter(chain.from_iterable(runs), np.int64)])
            codes[missing] = [self._codes[pieces[i]] for i in missing.tolist()]
        return codes

    def _expand(self, codes: np.ndarray) -> np.ndarray:
        """Codes to ids: each run code becomes its ids, in place, by one gather (line marks stay as they are)."""
        several = (codes < 0) & (codes > self._MARK)  # (n,)
        if not several.any():
            return codes
        k = -codes[several] - 1  # (m,) table entries
        run_len = self._run_len[k]  # (m,)
        lens = np.ones(len(codes), dtype=np.int64)
        lens[several] = run_len
        out = np.repeat(codes, lens)  # every run's slot, one id per slot to fill
        first = (np.cumsum(lens) - lens)[several]  # (m,) where each run starts in out
        within = np.arange(int(run_len.sum())) - np.repeat(np.cumsum(run_len) - run_len, run_len)
        out[np.repeat(first, run_len) + within] = self._run_flat[np.repeat(self._run_start[k], run_len) + within]
        return out

    def encode_array(self, text: str) -> np.ndarray:
        """:meth:`encode` as an int64 array, through the piece memo (several times faster on long text)."""
        if self._LINE_MARK in text:
            return np.asarray(self.encode(text), dtype=np.int64)
        return self._expand(self._piece_codes(text.split()))

    def encode_lines(self, text: str, *, cont: bool = False, open_end: bool = False) -> np.ndarray:
        # every line end becomes a marker piece; a marker right after a word is a line with text: <eos>
        if self._LINE_MARK in text:
            return super().encode_lines(text, cont=cont, open_end=open_end)
        pieces = text.replace("\n", "\n\x00\n").split()
        if not open_end and not text.endswith("\n"):
            pieces.append(self._LINE_MARK)  # the end of the text ends its last line
        ids = self._expand(self._piece_codes(pieces))  # (n,), _MARK = line end
        mark = ids == self._MARK
        after_word = np.empty(len(ids), dtype=bool)
        if len(ids):
            after_word[0] = cont
            after_word[1:] = ~mark[:-1]
        out = ids[~mark | after_word]
        out[out == self._MARK] = self.eos_id
        return out

    def unknown(self, text: str) -> list[str]:
        return list(dict.fromkeys(w for w in self.split(text) if w not in self._index))

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        skip = {self.pad_id, self.eos_id} if skip_special else set()
        return join_words([self._vocab[self._check_id(i)] for i in ids if int(i) not in skip])

    def id_to_token(self, i: int) -> str:
        return self._vocab[self._check_id(i)]

    def token_to_id(self, tok: str) -> Optional[int]:
        return self._index.get(tok)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "lowercase": self.lowercase, "vocab": list(self._vocab)}


# --------------------------------------------------------------------------------------------------- chars

# whitespace as str.isspace and the regex \s define it; every such character lies below U+3001
SPACE_LUT = np.array([chr(c).isspace() for c in range(0x3002)], dtype=bool)


class CharTokenizer(Tokenizer):
    """One id per character: ``<pad>``=0, ``<eos>``=1, ``<unk>``=2, then the training characters sorted.

    Round trip is exact for text made of known characters; unknown characters become ``<unk>``.
    """

    kind = "char"

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        if any(len(c) != 1 for c in chars) or chars != sorted(set(chars)):
            raise WordformerError("char vocabulary must be sorted distinct single characters; retrain the tokenizer")
        self._vocab = [PAD, EOS, UNK, *chars]
        self._index = {tok: i for i, tok in enumerate(self._vocab)}
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted code points
        # code point -> id, one gather per character; the last entry (<unk>) catches every larger code point
        top = int(self._codes[-1]) + 1 if len(self._codes) else 0
        self._lut = np.full(top + 1, self._index[UNK], dtype=np.int64)
        self._lut[self._codes] = np.arange(3, 3 + len(self._codes))

    @classmethod
    def train(cls, texts: Iterable[str], **opts: Any) -> "CharTokenizer":
        """Every distinct character of ``texts`` (a literal ``<eos>`` does not count)."""
        chars: set[str] = set()
        for text in texts:
            for part in text.split(EOS):
                chars.update(part)
        if not chars:
            raise WordformerError("no characters to build the char tokenizer from; give a corpus with some text")
        return cls(sorted(chars))

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    _CHUNK = 1 << 22  # characters per vectorised pass: bounds the temporaries, not the speed

    def _encode_part(self, part: str) -> np.ndarray:
        """Vectorised look-up, so a 50 MB line costs a few numpy passes, not a Python loop; done in chunks so
        the temporaries (UTF-32 codes) stay a few tens of MB whatever the line's length."""
        out = np.empty(len(part), dtype=np.int64)
        for start in range(0, len(part), self._CHUNK):
            codes = np.frombuffer(part[start:start + self._CHUNK].encode("utf-32-le"), dtype=np.uint32)  # (c,)
            np.take(self._lut, codes, mode="clip", out=out[start:start + len(codes)])
        return out

    def encode_lines(self, text: str, *, cont: bool = False, open_end: bool = False) -> np.ndarray:
        # vectorised: each character's line number, each line's "has non-space text", then one mask
        if EOS in text:
            return super().encode_lines(text, cont=cont, open_end=open_end)
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (c,)
        ids = np.take(self._lut, codes, mode="clip")  # (c,)
        newline = codes == 10
        line = np.cumsum(newline) - newline  # (c,) a line end belongs to its line
        lines = int(newline.sum()) + 1  # the last is what follows the last line end (maybe nothing)
        text_at = ~np.take(SPACE_LUT, codes, mode="clip")  # (c,)
        content = np.bincount(line[text_at], minlength=lines) > 0  # (lines,)
        content[0] |= cont
        keep = content[line]
        out, ends = ids[keep], newline[keep]
        out[ends] = self.eos_id
        if not open_end and content[-1]:
            out = np.append(out, self.eos_id)
        return out

    @staticmethod
    def characters(text: str) -> set[str]:
        """The characters :meth:`train` collects from ``text`` (the literal ``<eos>`` aside), by one counting pass."""
        codes = np.frombuffer(text.replace(EOS, "").encode("utf-32-le"), dtype=np.uint32)
        return {chr(c) for c in np.flatnonzero(np.bincount(codes))} if len(codes) else set()

    def encode_array(self, text: str) -> np.ndarray:
        """Like :meth:`encode` but returns an int64 array (fast path for large corpora)."""
        pieces: list[np.ndarray] = []
        eos = np.array([self.eos_id], dtype=np.int64)
        for k, part in enumerate(text.split(EOS)):
            if k:
                pieces.append(eos)
            pieces.append(self._encode_part(part))
        return np.concatenate(pieces)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode_array(t) for t in texts]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        skip = {self.pad_id, self.eos_id} if skip_special else set()
        return "".join(self._vocab[self._check_id(i)] for i in ids if int(i) not in skip)

    def tokens(self, text: str) -> list[str]:
        return [self._vocab[i] for i in self.encode(text)]

    def unknown(self, text: str) -> list[str]:
        known = self._index
        return list(dict.fromkeys(c for part in text.split(EOS) for c in part if c not in known))

    def id_to_token(self, i: int) -> str:
        return self._vocab[self._check_id(i)]

    def token_to_id(self, tok: str) -> Optional[int]:
        return self._index.get(tok)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": "".join(self._vocab[3:])}


# --------------------------------------------------------------------------------------------------- BPE

BPE_CHUNK_CHARS = 16_384  # the Rust encoder slows down on very long inputs; feed it pieces this size
_SAFE_CUT = re.compile(r"(?<=\S) (?=\S)")  # a lone space between non-spaces starts a new pre-token


def split_for_bpe(text: str, size: int = BPE_CHUNK_CHARS) -> list[str]:
    """Cut long text just before lone spaces, where no byte-level pre-token spans the cut: ids stay identical."""
    pieces, pos = [], 0
    while len(text) - pos > size:
        cut = _SAFE_CUT.search(text, pos + size)
        if cut is None:
            break
        pieces.append(text[pos:cut.start()])
        pos = cut.start()
    pieces.append(text[pos:])
    return pieces


class BPETokenizer(Tokenizer):
    """Byte-level BPE trained locally with HuggingFace ``tokenizers``: exact round trip, no ``<unk>``.

    ``<pad>``=0 and ``<eos>``=1 are special tokens; the library matches their literal text in the input.
    :meth:`id_to_token` gives raw byte-level entries (``"Ġthe"``); :meth:`tokens` gives readable text.
    """

    kind = "bpe"

    def __init__(self, tok: Any, *, eos_token: str = EOS, pad_token: str = PAD) -> None:
        self._tok = tok
        self.EOS, self.PAD = eos_token, pad_token  # GPT-2's tokenizer: "<|endoftext|>" for both
        if (eos_token, pad_token) == (EOS, PAD):
            if tok.token_to_id(PAD) != 0 or tok.token_to_id(EOS) != 1:
                raise WordformerError("BPE tokenizer must have <pad>=0 and <eos>=1; retrain it")
        elif tok.token_to_id(eos_token) is None or tok.token_to_id(pad_token) is None:
            raise WordformerError(f"BPE tokenizer lacks {eos_token!r} or {pad_token!r}; re-save it")

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int = 2000, **opts: Any) -> "BPETokenizer":
        """Learn merges until ``vocab_size`` entries (deterministic for the same texts)."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < MIN_BPE_VOCAB:
            raise WordformerError(f"bpe_vocab_size={vocab_size} is below {MIN_BPE_VOCAB} (256 bytes + <pad> + <eos>); raise it")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[PAD, EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        seen = [0]

        def counted() -> Iterable[str]:
            for text in texts:
                seen[0] += len(text)
                yield from split_for_bpe(text)

        tok.train_from_iterator(counted(), trainer)
        if not seen[0]:
            raise WordformerError("no text to build the BPE tokenizer from; give a corpus with some text")
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return self.encode_arrays([text])[0].tolist()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [ids.tolist() for ids in self.encode_arrays(texts)]

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encode in bounded pieces, a few hundred at a time, so memory stays flat for huge corpora."""
        pieces: list[str] = []
        owners: list[int] = []
        for k, text in enumerate(texts):
            chunks = split_for_bpe(text)
            pieces.extend(chunks)
            owners.extend([k] * len(chunks))
        fast = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)  # no offsets: faster
        parts: list[list[np.ndarray]] = [[] for _ in texts]
        for start in range(0, len(pieces), 256):
            for k, enc in zip(owners[start:start + 256], fast(pieces[start:start + 256])):
                parts[k].append(np.asarray(enc.ids, dtype=np.int64))
        return [np.concatenate(p) for p in parts]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self._tok.decode([self._check_id(i) for i in ids], skip_special_tokens=skip_special)

    def tokens(self, text: str) -> list[str]:
        return [self._tok.decode([i], skip_special_tokens=False) for i in self.encode(text)]

    def id_to_token(self, i: int) -> str:
        return self._tok.id_to_token(self._check_id(i))

    def token_to_id(self, tok: str) -> Optional[int]:
        return self._tok.token_to_id(tok)

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "tokenizer_json": self._tok.to_str()}
        if (self.EOS, self.PAD) != (EOS, PAD):
            d.update(eos_token=self.EOS, pad_token=self.PAD)
        return d


# --------------------------------------------------------------------------------------------------- factory

TOKENIZER_CLASSES: dict[str, type[Tokenizer]] = {"word": WordTokenizer, "char": CharTokenizer, "bpe": BPETokenizer}


def build_tokenizer(
    kind: str,
    texts: Iterable[str],
    *,
    lowercase: bool = True,
    min_freq: int = 1,
    max_vocab: Optional[int] = None,
    bpe_vocab_size: int = 2000,
) -> Tokenizer:
    """Train a tokenizer of ``kind`` on ``texts``; options a kind does not use are ignored."""
    if kind == "word":
        return WordTokenizer.train(texts, lowercase=lowercase, min_freq=min_freq, max_vocab=max_vocab)
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size=bpe_vocab_size)
    raise WordformerError(f"tokenizer={kind!r} is unknown; choose one of: {', '.join(TOKENIZER_CLASSES)}")


def tokenizer_from_dict(d: Any) -> Tokenizer:
    """Rebuild a tokenizer saved by :meth:`Tokenizer.to_dict`."""
    if not isinstance(d, dict) or not isinstance(d.get("kind"), str) or d["kind"] not in TOKENIZER_CLASSES:
        kind = d.get("kind") if isinstance(d, dict) else type(d).__name__
        raise WordformerError(f"saved tokenizer has kind {kind!r}, not one of {', '.join(TOKENIZER_CLASSES)}; re-save it")
    kind = d["kind"]
    try:
        if kind == "word":
            if not isinstance(d["vocab"], list) or not all(isinstance(t, str) for t in d["vocab"]):
                raise TypeError("vocab must be a list of strings")
            return WordTokenizer(d["vocab"], lowercase=bool(d.get("lowercase", True)))
        if kind == "char":
            if not isinstance(d["chars"], str):
                raise TypeError("chars must be a string")
            return CharTokenizer(list(d["chars"]))
        from tokenizers import Tokenizer as HFTokenizer

        return BPETokenizer(HFTokenizer.from_str(d["tokenizer_json"]),
                            eos_token=d.get("eos_token", EOS), pad_token=d.get("pad_token", PAD))
    except WordformerError:
        raise
    except Exception as exc:  # KeyError, TypeError, the Rust library's parse errors
        reason = (str(exc).splitlines() or [""])[0]
        raise WordformerError(f"saved {kind} tokenizer is malformed ({type(exc).__name__}: {reason}); re-save it") from None

