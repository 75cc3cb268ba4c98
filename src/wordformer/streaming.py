"""Corpora larger than memory: text files read in chunks, hashed, and cut into pieces that tokenize alone.

A corpus is a list of :class:`Source` documents (files, or the built-in texts held in memory). Reading a file
yields its text in chunks, decoded and normalised exactly as a whole-file read would be (UTF-8, byte-order mark
dropped, ``\\r\\n`` and ``\\r`` become ``\\n``), so nothing ever holds a whole file. :func:`scan` checks every file
once (binary, not UTF-8, empty) and computes the corpus cache key in the same pass. :func:`pieces` cuts the text
into work items of about a megabyte at places where every tokenizer gives the same ids for the two halves as for
the whole, so the items can be tokenized independently and in any process.

A file that changes while it is read (its size or modification time differ from the scan's) is refused with
one line, before anything reaches the cache under its final name.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from .errors import WordformerError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20  # bytes read from a file at a time
PIECE_CHARS = {"word": 1 << 20, "char": 4 << 20, "bpe": 1 << 20}  # characters per work item, about
MAX_CARRY = 64 << 20  # text with no place to cut this long is cut anyway (ids may differ there; logged)
EOS_TEXT = "<eos>"  # the literal every tokenizer reads as the end-of-sequence token


# ------------------------------------------------------------------------------------------ sources


@dataclass
class Source:
    """One document of a corpus: a file read in chunks, or text held in memory (the built-in corpus)."""

    name: str  # the path, or a label for text in memory
    path: Optional[Path] = None
    text: Optional[str] = None
    size: int = 0  # bytes on disk (files) at the scan
    mtime_ns: int = 0  # modification time at the scan
    nbytes: int = 0  # UTF-8 bytes after normalisation: what the cache key hashes, and the progress unit
    encoding: str = "utf-8"  # how the file's bytes decode (--encoding)


def text_files(data: str) -> list[Path]:
    """The file itself, or every ``*.txt`` under a folder (recursively), sorted by relative path."""
    path = Path(data).expanduser()
    if path.is_file():
        return [path]
    if not path.exists():
        raise WordformerError(f"data path {data} does not exist; give a .txt file or a folder of .txt files")
    if not path.is_dir():
        raise WordformerError(f"data path {data} is neither a file nor a folder; give a .txt file or a folder of .txt files")
    files = sorted((p for p in path.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise WordformerError(f"folder {data} holds no .txt files; add some or point --data at a file")
    return files


def after_chunk(path: Path, offset: int) -> None:
    """Called after every chunk read from a file, with the bytes read so far. Does nothing; tests replace it to
    change a file while it is being read."""


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise WordformerError(f"cannot read {path}: {exc.strerror or exc}; check the path and its permissions") from None


def check_unchanged(source: Source) -> None:
    """Refuse a file whose size or modification time differ from the scan's: its text changed while the corpus
    was being read, and the cache would hold ids of neither version."""
    if source.path is None:
        return
    st = _stat(source.path)
    if (st.st_size, st.st_mtime_ns) != (source.size, source.mtime_ns):
        raise WordformerError(f"{source.path} changed while it was being read (size or modification time differ); "
                              "wait until nothing writes to it, then run again")


class _Normaliser:
    """Incremental decoding (UTF-8 unless ``encoding`` says otherwise) with the whole-file rules: byte-order
    mark dropped, ``\\r\\n`` and ``\\r`` as ``\\n``, NUL bytes refused as binary (UTF-16/32 excepted); the
    offsets in messages are byte offsets in the file."""

    def __init__(self, path: Path, errors: str, encoding: str = "utf-8") -> None:
        self.path, self.errors, self.encoding = path, errors, encoding
        self.wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))  # NUL bytes are text there
        self.decoder = codecs.getincrementaldecoder(encoding)("strict" if errors != "replace" else "replace")
        self.offset = 0  # bytes fed so far
        self.started = False  # some text came out (the BOM check is done)
        self.cr = False  # the last chunk ended with "\r": it may be half of "\r\n"

    def feed(self, raw: bytes, final: bool = False) -> str:
        nul = -1 if self.wide else raw.find(b"\x00")
        if nul >= 0:
            raise WordformerError(f"{self.path} looks binary (NUL byte at offset {self.offset + nul}); give text files "
                                  "(UTF-16 or UTF-32 text: pass --encoding utf-16 or utf-32)")
        pending = len(self.decoder.getstate()[0])
        try:
            text = self.decoder.decode(raw, final)
        except UnicodeDecodeError as exc:
            self._refuse_not_utf8(self.offset - pending + exc.start)
        self.offset += len(raw)
        if not self.started and text:
            self.started = True
            text = text.removeprefix("\ufeff")  # a byte-order mark is not text
        if self.cr:
            text, self.cr = "\r" + text, False
        if not final and text.endswith("\r"):
            text, self.cr = text[:-1], True
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    def _refuse_not_utf8(self, offset: int) -> None:
        # a whole-file read checks for NUL bytes first: the rest of the file decides which message applies
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                while True:
                    raw = fh.read(CHUNK_BYTES)
                    if not raw:
                        break
                    nul = raw.find(b"\x00")
                    if nul >= 0 and not self.wide:
                        raise WordformerError(f"{self.path} looks binary (NUL byte at offset {fh.tell() - len(raw) + nul}); "
                                              "give text files (UTF-16 or UTF-32 text: pass --encoding utf-16 or utf-32)")
        except OSError:
            pass
        shown = "UTF-8" if codecs.lookup(self.encoding).name == "utf-8" else self.encoding
        raise WordformerError(f"{self.path} is not {shown} (bad byte at offset {offset}); pass --encoding with the file's "
                              "encoding (e.g. latin-1 or cp1252), or --encoding-errors replace to read bad bytes as U+FFFD")


def first_text(source: Source, errors: str = "strict", nbytes: int = 1 << 16) -> str:
    """The start of ``source``'s text (about ``nbytes`` bytes): enough to tell what kind of file it is."""
    return next(read_chunks(source, errors, chunk_bytes=nbytes), "")


def read_chunks(source: Source, errors: str = "strict", chunk_bytes: Optional[int] = None,
                on_bytes: Optional[Callable[[int], None]] = None) -> Iterator[str]:
    """The normalised text of ``source`` in chunks; ``on_bytes`` hears how many file bytes each chunk took. Refuses
    the file if it changed since the scan (checked before and after reading it)."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    if source.text is not None:
        for start in range(0, len(source.text), chunk_bytes):
            piece = source.text[start:start + chunk_bytes]
            if on_bytes:
                on_bytes(len(piece.encode("utf-8", "surrogatepass")))
            yield piece
        return
    assert source.path is not None
    check_unchanged(source)
    norm = _Normaliser(source.path, errors, source.encoding)
    try:
        with open(source.path, "rb") as fh:
            while True:
                raw = fh.read(chunk_bytes)
                if not raw:
                    break
                text = norm.feed(raw)
                after_chunk(source.path, norm.offset)
                if on_bytes:
                    on_bytes(len(raw))
                if text:
                    yield text
            tail = norm.feed(b"", final=True)
    except OSError as exc:
        raise WordformerError(f"cannot read {source.path}: {exc.strerror or exc}; check the path and its permissions") from None
    if tail:
        yield tail
    check_unchanged(source)
    if norm.offset != source.size:
        raise WordformerError(f"{source.path} changed while it was being read (size differs); wait until nothing "
                              "writes to it, then run again")


# ------------------------------------------------------------------------------------------ the scan


def _hash_document(h: Any, data: bytes, length: int) -> None:
    h.update(length.to_bytes(8, "little"))
    h.update(data)


def scan(data: Optional[str], memory_texts: Optional[Sequence[str]], header: bytes, *, errors: str = "strict",
         encoding: str = "utf-8", progress: Optional["Progress"] = None) -> tuple[list[Source], str]:
    """Check every document once and compute the cache key in the same pass: sha256 of ``header``, then of each
    non-empty document's normalised UTF-8 length (8 bytes) and text, exactly as the whole-text key.

    A clean file (valid UTF-8, no ``\\r``, no byte-order mark) is hashed as read, its length being its size; the
    first pass also measures the normalised length, so another file costs one more pass."""
    h = hashlib.sha256(header)
    sources: list[Source] = []
    if data is None:
        for k, text in enumerate(memory_texts or ()):
            raw = text.encode("utf-8", "surrogatepass")
            _hash_document(h, raw, len(raw))
            sources.append(Source(name=f"built-in text {k}", text=text, nbytes=len(raw)))
        return sources, h.hexdigest()
    files = text_files(data)
    total = sum(_stat(p).st_size for p in files)
    bar = progress.phase("reading", total) if progress else None
    for path in files:
        st = _stat(path)
        src = Source(name=str(path), path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, encoding=encoding)
        before = h.copy()
        h.update(st.st_size.to_bytes(8, "little"))  # hoping the file is clean: normalised length = size
        norm, content, nbytes = _Normaliser(path, errors, encoding), False, 0
        clean = codecs.lookup(encoding).name == "utf-8"  # bytes hashed as read only when they are the UTF-8 text
        try:
            with open(path, "rb") as fh:
                while True:
                    raw = fh.read(CHUNK_BYTES)
                    if not raw:
                        break
                    if norm.offset == 0 and raw.startswith(codecs.BOM_UTF8):
                        clean = False
                    text = norm.feed(raw)
                    after_chunk(path, norm.offset)
                    if clean and (b"\r" in raw or "\ufffd" in text):
                        clean = False
                    if clean:
                        h.update(raw)
                    nbytes += len(text.encode("utf-8"))
                    content = content or (bool(text) and not text.isspace())
                    if bar:
                        bar.advance(len(raw))
                tail = norm.feed(b"", final=True)
        except OSError as exc:
            raise WordformerError(f"cannot read {path}: {exc.strerror or exc}; check the path and its permissions") from None
        nbytes += len(tail.encode("utf-8"))
        content = content or (bool(tail) and not tail.isspace())
        check_unchanged(src)
        if not content:  # empty or whitespace-only files add nothing
            h = before
            continue
        src.nbytes = nbytes
        if not clean or norm.offset != st.st_size:
            h = before
            h.update(nbytes.to_bytes(8, "little"))
            for text in read_chunks(src, errors):
                h.update(text.encode("utf-8"))
        sources.append(src)
    if bar:
        bar.close()
    if not sources:
        raise WordformerError(f"corpus {data} is empty or only whitespace; give it some text")
    return sources, h.hexdigest()


# ------------------------------------------------------------------------------------------ pieces


@dataclass
class Piece:
    """A work item: text that tokenizes on its own, and where ``<eos>`` goes around it."""

    text: str
    lines: bool = False  # eos="line": <eos> after each line with text (Tokenizer.encode_lines)
    cont: bool = False  # line mode: starts inside a line that already had text
    open_end: bool = False  # line mode: ends inside a line (cut in a long line): no <eos> after it yet
    eos_after: bool = False  # eos="document": the last piece of a document, <eos> follows


# a lone whitespace character between two others: a byte-level pre-token starts there. \x1c-\x1f are whitespace
# to Python but not to the library's regex, so they never count as a place to cut
_BPE_CUT = re.compile(r"(?<=\S)[^\S\x1c-\x1f](?=\S)")


def cut_point(kind: str, text: str, lo: int, hi: int) -> int:
    """The largest ``i`` in (lo, hi], below ``len(text)``, where ``text[:i]`` and ``text[i:]`` tokenize like
    ``text`` with the ``kind`` tokenizer; 0 where there is none.

    word: just after whitespace (no word or mark spans it); char: anywhere outside a literal ``<eos>``; bpe: just
    before a lone whitespace character between two non-space ones (no byte-level pre-token crosses it)."""
    hi = min(hi, len(text) - 1)
    if hi <= lo:
        return 0
    if kind == "char":
        s = text.find(EOS_TEXT, max(lo, hi - len(EOS_TEXT) + 1), hi + len(EOS_TEXT) - 1)
        i = s if 0 <= s < hi else hi  # an "<eos>" that spans hi stays whole
        return i if i > lo else 0
    if kind == "word":
        j = max(text.rfind(" ", lo, hi), text.rfind("\n", lo, hi), text.rfind("\t", lo, hi))
        if j < 0:  # other whitespace, or none
            found = [m.start() for m in re.finditer(r"\s", text[lo:hi])]
            j = lo + found[-1] if found else -1
        return j + 1 if j >= 0 else 0
    hi = min(hi, len(text) - 2)  # bpe cuts before a whitespace character that has text after it
    best = 0
    for ch in (" ", "\n"):  # the usual separators first: the last one with text on both sides
        j, tries = text.rfind(ch, lo + 1, hi + 1), 0
        while j > lo and tries < 64:
            if not text[j - 1].isspace() and not text[j + 1].isspace():
                best = max(best, j)
                break
            j, tries = text.rfind(ch, lo + 1, j), tries + 1
    if best:
        return best
    found = [m.start() for m in _BPE_CUT.finditer(text, lo + 1, hi + 2) if m.start() <= hi]
    return found[-1] if found else 0


class _Cutter:
    """Cuts one document's text, fed in large strings, into pieces; keeps what it could not cut yet."""

    def __init__(self, kind: str, size: int, name: str, eos_mode: str) -> None:
        self.kind, self.size, self.name, self.eos_mode = kind, size, name, eos_mode
        self.carry = ""
        self.cont = False  # line mode: the carry starts inside a line that already had text

    def feed(self, text: str, final: bool = False) -> Iterator[Piece]:
        buf = self.carry + text if self.carry else text
        pos = 0
        cut = self._line_cuts if self.eos_mode == "line" else self._cuts
        for piece, pos in cut(buf):
            yield piece
        rest = buf[pos:]
        if len(rest) > MAX_CARRY and not final:
            logger.warning("%s: %d MB of text with nowhere to cut for the %s tokenizer; cut anyway, so the ids "
                           "there may differ from tokenizing it whole", self.name, MAX_CARRY >> 20, self.kind)
            yield self._piece(rest[:self.size], open_end=True)
            rest, self.cont = rest[self.size:], True
        self.carry = "" if final else rest
        if final:
            if self.eos_mode == "line":
                yield Piece(rest, lines=True, cont=self.cont)
            elif rest or self.eos_mode == "document":
                yield Piece(rest, eos_after=self.eos_mode == "document")

    def _piece(self, text: str, open_end: bool = False) -> Piece:
        if self.eos_mode == "line":
            return Piece(text, lines=True, cont=self.cont, open_end=open_end)
        return Piece(text)

    def _cuts(self, buf: str) -> Iterator[tuple[Piece, int]]:
        pos, size = 0, self.size
        while len(buf) - pos > size:
            i = cut_point(self.kind, buf, pos, pos + size) or cut_point(self.kind, buf, pos, len(buf))
            if not i:
                return
            yield Piece(buf[pos:i]), i
            pos = i

    def _line_cuts(self, buf: str) -> Iterator[tuple[Piece, int]]:
        pos, size = 0, self.size
        while len(buf) - pos > size:
            end = buf.rfind("\n", pos, pos + size)
            if end < 0:
                end = buf.find("\n", pos + size, pos + 2 * size)  # a line a little longer: one larger piece
            if end >= 0:
                piece = Piece(buf[pos:end + 1], lines=True, cont=self.cont)
                self.cont = False
                yield piece, end + 1
                pos = end + 1
                continue
            # a long line: cut inside it, but only once it has text (a whitespace-only line vanishes whole)
            i = cut_point(self.kind, buf, pos, pos + size) or cut_point(self.kind, buf, pos, len(buf))
            if not i or not (self.cont or not buf[pos:i].isspace()):
                return
            piece = Piece(buf[pos:i], lines=True, cont=self.cont, open_end=True)
            self.cont = True
            yield piece, i
            pos = i


def pieces(sources: Sequence[Source], kind: str, eos_mode: str, *, errors: str = "strict",
           size: Optional[int] = None, on_bytes: Optional[Callable[[int], None]] = None) -> Iterator[Piece]:
    """Every document of the corpus as pieces of about ``size`` characters, in order.

    ``eos_mode`` "line": pieces hold whole lines (:meth:`Tokenizer.encode_lines`), a line longer than a piece is
    cut only once it has text; "document": ``eos_after`` on each document's last piece; "none": no ``<eos>``."""
    size = size or PIECE_CHARS.get(kind, 1 << 20)
    for source in sources:
        cutter = _Cutter(kind, size, source.name, eos_mode)
        parts: list[str] = []
        have = 0
        for chunk in read_chunks(source, errors, on_bytes=on_bytes):
            parts.append(chunk)
            have += len(chunk)
            if have >= 2 * size:
                yield from cutter.feed("".join(parts))
                parts, have = [], 0
        yield from cutter.feed("".join(parts), final=True)


# ------------------------------------------------------------------------------------------ disk and progress


def free_bytes(path: Path) -> int:
    """Bytes free for this user on the disk that holds ``path`` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class Phase:
    """One stage of the work with a byte total: a tqdm bar on a terminal, else a short line every so often."""

    def __init__(self, owner: "Progress", label: str, total: int) -> None:
        self.owner, self.label, self.total, self.done = owner, label, max(total, 1), 0
        self.started = self.last_line = time.perf_counter()
        self.bar = None
        if owner.enabled and owner.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="B", unit_scale=True, unit_divisor=1000, desc=label, leave=False,
                            file=owner.stream, dynamic_ncols=True, mininterval=min(0.5, owner.every),
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B "
                                       "[{elapsed}<{remaining}, {rate_fmt}]")

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.bar is not None:
            self.bar.update(nbytes)
        elif self.owner.enabled:
            now = time.perf_counter()
            if now - self.last_line >= self.owner.every:
                self.last_line = now
                self.owner.line(self.label, self.done, self.total, now - self.started)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.owner.seconds[self.label] = self.owner.seconds.get(self.label, 0.0) + time.perf_counter() - self.started


class Progress:
    """Where tokenisation reports how far it got: MB done, MB/s and the time left per phase (reading, counting,
    tokenizing). Disabled, it still times the phases (``seconds``), which the benchmarks read."""

    def __init__(self, enabled: bool = True, stream: Any = None, every: float = 15.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every  # seconds between lines when not on a terminal (and at most between bar redraws)
        self.seconds: dict[str, float] = {}

    def phase(self, label: str, total: int) -> Phase:
        return Phase(self, label, total)

    def line(self, label: str, done: int, total: int, elapsed: float) -> None:
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else float("nan")
        self.stream.write(f"wordformer: {label}: {done / 1e6:,.0f} of {total / 1e6:,.0f} MB "
                          f"({100 * done / total:.0f}%), {rate / 1e6:.1f} MB/s, {left:.0f} s left\n")
        self.stream.flush()
