"""Tokenizing a streamed corpus: the tokenizer trained on it, then its ids written straight to disk, in parallel.

Memory stays flat whatever the corpus size: text passes through in pieces of about a megabyte
(:mod:`wordformer.streaming`) and ids go to the end of a file as they come. Words take one pass over the text:
it is encoded with a vocabulary that grows (ids by first appearance), the words are counted from those ids, and
once the vocabulary is chosen one numpy gather maps the file's ids to it. Characters are collected in a first
pass, then encoded. BPE learns its merges with the ``tokenizers`` library's iterator training (on an evenly spread
sample once the corpus passes :data:`BPE_SAMPLE_BYTES`), then encodes. Our own Python code (word, char) runs in
``workers`` processes, each tokenizing whole pieces; BPE runs in the library's own Rust threads. Small corpora
stay in one process: starting workers would cost more than it saves.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
from numpy.lib import format as npy_format

from . import streaming
from .errors import WordformerError
from .files import DISK_FULL
from .streaming import Piece, Progress, Source, pieces
from .tokenizers import EOS, PAD, UNK, BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, tokenizer_from_dict

logger = logging.getLogger(__name__)

BPE_SAMPLE_BYTES = 256 << 20  # BPE merges are learned from at most this much text, spread over the corpus
PARALLEL_MIN_BYTES = 8 << 20  # below this a corpus is tokenized in this process
TOKENS_PER_BYTE = {"char": 1.0, "word": 0.3, "bpe": 0.4}  # for the free-space estimate (English text and code)



def id_dtype(vocab_size: int) -> type:
    """uint16 halves memory and disk for vocabularies up to 65,536 entries."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _total(sources: Sequence[Source]) -> int:
    return sum(s.nbytes for s in sources)


# ------------------------------------------------------------------------------------------ worker processes

_STATE: dict[str, Any] = {}


def _init_worker(tokenizer: dict[str, Any], grows: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    tok = tokenizer_from_dict(tokenizer)
    _STATE["tokenizer"] = WordTokenizer.growing(lowercase=tok.lowercase) if grows else tok


def _characters_task(text: str) -> set[str]:
    return CharTokenizer.characters(text)


def _learn_task(piece: Piece) -> tuple[int, list[str], np.ndarray]:
    """Encode with the worker's growing vocabulary: (worker pid, the words it added, ids in its own numbering)."""
    tok = _STATE["tokenizer"]
    before = tok.vocab_size
    ids = tok.encode_lines(piece.text, cont=piece.cont, open_end=piece.open_end) if piece.lines else \
        tok.encode_array(piece.text)
    if piece.eos_after:
        ids = np.append(ids, tok.eos_id)
    return os.getpid(), [tok.id_to_token(i) for i in range(before, tok.vocab_size)], ids.astype(np.uint32)


def append_ids(out: BinaryIO, ids: np.ndarray) -> None:
    """Every id written to disk goes through here (tests make the disk fill up in it)."""
    out.write(ids.tobytes())


def encode_piece(tokenizer: Tokenizer, piece: Piece) -> np.ndarray:
    """The ids of one piece, ``<eos>`` placed as its flags say, in the corpus's id dtype."""
    if piece.lines:
        ids = tokenizer.encode_lines(piece.text, cont=piece.cont, open_end=piece.open_end)
    else:
        ids = tokenizer.encode_array(piece.text)
        if piece.eos_after:
            ids = np.append(ids, tokenizer.eos_id)
    return ids.astype(id_dtype(tokenizer.vocab_size), copy=False)


def _encode_task(piece: Piece) -> np.ndarray:
    return encode_piece(_STATE["tokenizer"], piece)


def _pool_context() -> Any:
    # fork: workers inherit the loaded modules and never re-import the caller's script (spawn does, and would
    # re-run a script that trains at its top level); they run only numpy and re, never torch or the Rust library
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def ordered_map(task: Callable[[Any], Any], items: Iterable[Any], tokenizer: Tokenizer, workers: int) -> Iterator[Any]:
    """``task`` over ``items`` in order, in ``workers`` processes holding ``tokenizer`` (here when 1); at most two
    items per worker are in flight, so memory does not grow with the corpus."""
    if workers <= 1:
        _STATE["tokenizer"] = tokenizer
        try:
            for item in items:
                yield task(item)
        finally:
            _STATE.clear()
        return
    grows = isinstance(tokenizer, WordTokenizer) and tokenizer.grows
    pool = ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_init_worker,
                               initargs=(tokenizer.to_dict(), grows))
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(task, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise WordformerError("a tokenizing worker process died (out of memory?); try fewer --workers") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _rust_threads(workers: int) -> Iterator[None]:
    """BPE runs in the tokenizers library's own threads (every core); one worker turns them off."""
    if workers > 1 or os.environ.get("TOKENIZERS_PARALLELISM") is not None:
        yield
        return
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)


def effective_workers(workers: Optional[int], sources: Sequence[Source]) -> int:
    """``workers`` (None: every core), or 1 for a corpus too small to share out."""
    wanted = workers or default_workers()
    return 1 if _total(sources) < PARALLEL_MIN_BYTES else wanted


# ------------------------------------------------------------------------------------------ training


def train_tokenizer(kind: str, options: dict[str, Any], sources: Sequence[Source], *, errors: str = "strict",
                    workers: int = 1, progress: Optional[Progress] = None) -> Tokenizer:
    """The char or BPE tokenizer :func:`wordformer.tokenizers.build_tokenizer` would train on the whole text,
    learned piece by piece (BPE from a sample when the corpus is large). Words: :func:`tokenize_corpus`."""
    progress = progress or Progress(enabled=False)
    total = _total(sources)
    if kind == "bpe":
        return _train_bpe(options.get("bpe_vocab_size", 2000), sources, errors, workers, progress, total)
    if kind != "char":
        raise WordformerError(f"tokenizer={kind!r} is not trained on its own here; use tokenize_corpus")
    phase = progress.phase("collecting characters", total)
    items = (p.text for p in pieces(sources, kind, "none", errors=errors, on_bytes=phase.advance))
    chars: set[str] = set()
    for part in ordered_map(_characters_task, items, CharTokenizer([]), workers):
        chars |= part
    phase.close()
    if not chars:
        raise WordformerError("no characters to build the char tokenizer from; give a corpus with some text")
    return CharTokenizer(sorted(chars))


def _train_bpe(vocab_size: int, sources: Sequence[Source], errors: str, workers: int, progress: Progress,
               total: int) -> BPETokenizer:
    share = min(1.0, BPE_SAMPLE_BYTES / max(total, 1))
    if share < 1.0:
        logger.info("BPE merges learned from a %.0f MB sample of the %.0f MB corpus (pieces spread evenly over it)",
                    share * total / 1e6, total / 1e6)
        label = f"learning BPE merges (sample: {share * total / 1e6:,.0f} of {total / 1e6:,.0f} MB)"
    else:
        label = "learning BPE merges"
    phase = progress.phase(label, total)

    def sample() -> Iterator[str]:
        seen = taken = 0
        for piece in pieces(sources, "bpe", "none", errors=errors, on_bytes=phase.advance):
            seen += len(piece.text)
            if taken <= seen * share:  # evenly spread: keep pieces while behind the share
                taken += len(piece.text)
                yield piece.text

    with _rust_threads(workers):
        tokenizer = BPETokenizer.train(sample(), vocab_size=vocab_size)
    phase.close()
    return tokenizer


# ------------------------------------------------------------------------------------------ writing ids


def write_ids(tokenizer: Tokenizer, sources: Sequence[Source], eos_mode: str, out: BinaryIO, *, errors: str = "strict",
              workers: int = 1, progress: Optional[Progress] = None) -> int:
    """Append the corpus's ids (the tokenizer's id dtype) to ``out`` as they come; returns how many."""
    progress = progress or Progress(enabled=False)
    phase = progress.phase("tokenizing", _total(sources))
    items = pieces(sources, tokenizer.kind, eos_mode, errors=errors, on_bytes=phase.advance)
    count = 0
    if tokenizer.kind == "bpe":  # the library's threads share out each piece's batch
        with _rust_threads(workers):
            for piece in items:
                ids = encode_piece(tokenizer, piece)
                append_ids(out, ids)
                count += len(ids)
    else:
        for ids in ordered_map(_encode_task, items, tokenizer, workers):
            append_ids(out, ids)
            count += len(ids)
    phase.close()
    return count


def _header(fh: BinaryIO, dtype: np.dtype, n: int) -> int:
    start = fh.tell()
    npy_format.write_array_header_1_0(fh, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                                           "shape": (n,)})
    return fh.tell() - start


def disk_full_error(folder: Path, exc: OSError) -> WordformerError:
    return WordformerError(f"the disk holding {folder} is full ({exc.strerror or exc}) while writing the tokenized "
                           "corpus; free some space, or point --cache-dir (or $WORDFORMER_CACHE) at a disk with more room")


def check_free_space(folder: Path, sources: Sequence[Source], kind: str, val_fraction: float) -> None:
    """Refuse up front a corpus whose ids would not fit on the disk. An estimate: English text and code give about
    0.3 words or 0.4 BPE tokens per byte; 2 bytes per id, the validation part copied once, and for words the
    first pass's 4-byte ids beside them."""
    per_token = 2 * (1 + val_fraction) + (4 if kind == "word" else 0)
    need = int(_total(sources) * TOKENS_PER_BYTE.get(kind, 1.0) * per_token)
    free = streaming.free_bytes(folder)
    if need > free:
        raise WordformerError(f"the tokenized corpus needs about {need / 1e9:.2f} GB in {folder}, but only "
                              f"{free / 1e9:.2f} GB are free there; free some space, or point --cache-dir (or "
                              "$WORDFORMER_CACHE) at a disk with more room")


def _write_split(folder: Path, dtype: np.dtype, produce: Callable[[BinaryIO], int], sources: Sequence[Source],
                 val_fraction: float) -> tuple[int, int]:
    """Write ``folder/train.npy`` and ``folder/val.npy``: the ids ``produce`` appends to a file, and their last
    ``val_fraction`` (at least one token), as the whole-text split. Both are written under temporary names and
    renamed only when complete and every source is unchanged, so the final names never show half a file."""
    tmp_train = folder / f".train.npy.{os.getpid()}.tmp"
    tmp_val = folder / f".val.npy.{os.getpid()}.tmp"
    try:
        with open(tmp_train, "wb") as fh:
            head = _header(fh, dtype, 0)
            n = produce(fh)
        n_train = max(0, n - max(1, int(n * val_fraction)))
        with open(tmp_val, "wb") as fv:
            _header(fv, dtype, n - n_train)
            # plain reads, not a memory map: pages read through a map count in the RSS until it is closed
            with open(tmp_train, "rb") as src:
                src.seek(head + n_train * dtype.itemsize)
                shutil.copyfileobj(src, fv, 16 << 20)
        with open(tmp_train, "r+b") as fh:
            fh.truncate(head + n_train * dtype.itemsize)
            fh.seek(0)
            if _header(fh, dtype, n_train) != head:  # pragma: no cover - numpy pads headers for any length
                raise RuntimeError("npy header length changed")
        for source in sources:  # the ids must be of the text the key was computed from
            streaming.check_unchanged(source)
        os.replace(tmp_val, folder / "val.npy")
        os.replace(tmp_train, folder / "train.npy")
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(folder, exc) from None
        raise
    finally:
        for tmp in (tmp_train, tmp_val):
            tmp.unlink(missing_ok=True)
    return n_train, n - n_train


def write_split(folder: Path, tokenizer: Tokenizer, sources: Sequence[Source], eos_mode: str, val_fraction: float, *,
                errors: str = "strict", workers: int = 1, progress: Optional[Progress] = None) -> tuple[int, int]:
    """``folder/train.npy`` and ``folder/val.npy`` of the corpus encoded with ``tokenizer``; returns their lengths."""
    dtype = np.dtype(id_dtype(tokenizer.vocab_size))
    return _write_split(folder, dtype, lambda fh: write_ids(tokenizer, sources, eos_mode, fh, errors=errors,
                                                            workers=workers, progress=progress), sources, val_fraction)


def _learn_words(sources: Sequence[Source], eos_mode: str, lowercase: bool, out: BinaryIO, *, errors: str,
                 workers: int, progress: Progress) -> tuple[list[str], np.ndarray, int]:
    """One pass: the corpus encoded with growing vocabularies into ``out`` (uint32, ids by first appearance over all
    workers). Returns the words in that numbering, their counts and the number of ids."""
    words, index = [PAD, EOS, UNK], {PAD: 0, EOS: 1, UNK: 2}
    numbering: dict[int, np.ndarray] = {}  # per worker: its ids -> the common numbering
    counts = np.zeros(1 << 16, dtype=np.int64)
    n = 0
    phase = progress.phase("counting and tokenizing words", _total(sources))
    items = pieces(sources, "word", eos_mode, errors=errors, on_bytes=phase.advance)
    for pid, added, ids in ordered_map(_learn_task, items, WordTokenizer.growing(lowercase=lowercase), workers):
        mine = numbering.get(pid, np.arange(3, dtype=np.int64))
        if added:  # a worker's results arrive in the order it made them, so its numbering grows in step
            common = []
            for w in added:
                i = index.get(w)
                if i is None:
                    i = index[w] = len(words)
                    words.append(w)
                common.append(i)
            mine = numbering[pid] = np.concatenate([mine, np.asarray(common, dtype=np.int64)])
        numbering[pid] = mine
        ids = mine[ids]  # (k,)
        if len(words) > len(counts):
            counts = np.concatenate([counts, np.zeros(max(len(words), 2 * len(counts)) - len(counts), dtype=np.int64)])
        found = np.bincount(ids)
        counts[:len(found)] += found
        append_ids(out, ids.astype(np.uint32))
        n += len(ids)
    phase.close()
    return words, counts[:len(words)], n


def tokenize_corpus(folder: Path, kind: str, options: dict[str, Any], sources: Sequence[Source], eos_mode: str,
                    val_fraction: float, *, errors: str = "strict", workers: int = 1,
                    progress: Optional[Progress] = None) -> Tokenizer:
    """Train the ``kind`` tokenizer on the corpus and write its split ids into ``folder`` (:func:`write_split`'s
    files); returns the tokenizer. The same tokenizer and ids as the whole-text code, whatever the corpus size."""
    progress = progress or Progress(enabled=False)
    if kind != "word":
        tokenizer = train_tokenizer(kind, options, sources, errors=errors, workers=workers, progress=progress)
        write_split(folder, tokenizer, sources, eos_mode, val_fraction, errors=errors, workers=workers,
                    progress=progress)
        return tokenizer
    lowercase = options.get("lowercase", True)
    learned = folder / f".words.{os.getpid()}.tmp"
    try:
        with open(learned, "wb") as fh:
            words, counts, n = _learn_words(sources, eos_mode, lowercase, fh, errors=errors, workers=workers,
                                            progress=progress)
        tokenizer = WordTokenizer.from_counts(Counter(dict(zip(words[3:], counts[3:].tolist()))), lowercase=lowercase,
                                              min_freq=options.get("min_freq", 1), max_vocab=options.get("max_vocab"))
        final = np.fromiter(map(tokenizer.token_to_id, words), dtype=object, count=len(words))
        remap = np.array([tokenizer.unk_id if i is None else i for i in final], dtype=np.int64)  # specials: themselves
        dtype = np.dtype(id_dtype(tokenizer.vocab_size))

        def produce(fh: BinaryIO) -> int:
            phase = progress.phase("writing ids", n * 4)
            with open(learned, "rb") as src:  # read, not mapped: a map's pages would count in the RSS
                while len(part := np.fromfile(src, dtype=np.uint32, count=1 << 24)):
                    append_ids(fh, remap[part].astype(dtype))
                    phase.advance(4 * len(part))
            phase.close()
            return n

        _write_split(folder, dtype, produce, sources, val_fraction)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(folder, exc) from None
        raise
    finally:
        learned.unlink(missing_ok=True)
    return tokenizer


def stream_ids(tokenizer: Tokenizer, sources: Sequence[Source], eos_mode: str, path: Path, *, errors: str = "strict",
               workers: Optional[int] = None, progress: Optional[Progress] = None) -> np.ndarray:
    """The corpus's ids in a memory-mapped file at ``path`` (the caller removes it): ``evaluate --data``."""
    dtype = np.dtype(id_dtype(tokenizer.vocab_size))
    try:
        with open(path, "wb") as fh:
            n = write_ids(tokenizer, sources, eos_mode, fh, errors=errors,
                          workers=effective_workers(workers, sources), progress=progress)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(path.parent, exc) from None
        raise
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype=dtype)
