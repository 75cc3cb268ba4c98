"""From text on disk to batches of token ids: loading, tokenizing, caching, splitting, batching.

Plain text becomes one long token stream (with ``<eos>`` after each line, each document or never); its
last ``val_fraction`` is held out. Plain text is streamed (:mod:`wordformer.streaming`,
:mod:`wordformer.tokenizing`): read in chunks, tokenized in parallel, its ids written straight into the cache,
so memory does not grow with the corpus. Prompt/answer pairs become ``prompt <eos> answer <eos>`` sequences.
Tokenized corpora are cached as ``.npy`` files so a second run neither retrains nor re-tokenizes.
Training batches are a pure function of ``(seed, batch number)``, so a resumed run sees the same data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from .batches import FixedBatches, PairBatches, SeededBatches, TextBatches, as_tensor, pad_pairs, text_windows
from .config import DataConfig
from .errors import WordformerError, check_int
from .files import DISK_FULL, atomic_write, corpus_cache_dir
from .streaming import Progress, scan, text_files
from .tokenizers import Tokenizer, build_tokenizer, tokenizer_from_dict
from .tokenizing import check_free_space, disk_full_error, effective_workers, id_dtype, tokenize_corpus

__all__ = ["Corpus", "WordDataModule", "id_dtype", "load_pairs", "load_texts", "prepare_corpus", "text_stream"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the cached layout or the tokenization changes

# ------------------------------------------------------------------------------------------ loading


def _read_text(path: Path, encoding_errors: str) -> str:
    """Decode one file as UTF-8 with ``\\n`` line ends; refuse binary files outright."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WordformerError(f"cannot read {path}: {exc.strerror or exc}; check the path and its permissions") from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise WordformerError(f"{path} looks binary (NUL byte at offset {nul}); give UTF-8 text (UTF-16 files must be converted)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if encoding_errors != "replace":
            raise WordformerError(
                f"{path} is not UTF-8 (bad byte at offset {exc.start}); convert it or pass --encoding-errors replace"
            ) from None
        text = raw.decode("utf-8", errors="replace")
    text = text.removeprefix("\ufeff")  # a byte-order mark is not text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _text_files(data: str) -> list[Path]:
    """The file itself, or every ``*.txt`` under a folder (recursively), sorted by relative path."""
    return text_files(data)


def builtin_texts() -> list[str]:
    """The Python documentation topics shipped with CPython (~65k words), one document per topic."""
    from pydoc_data.topics import topics

    return [topics[k].replace("\r\n", "\n").replace("\r", "\n") for k in sorted(topics)]


def load_texts(data: Optional[str], *, encoding_errors: str = "strict") -> list[str]:
    """Documents of ``data``: None = built-in corpus, a file = one document, a folder = its ``*.txt`` files."""
    if data is None:
        return builtin_texts()
    texts = [_read_text(p, encoding_errors) for p in _text_files(data)]
    texts = [t for t in texts if t.strip()]  # empty files add nothing
    if not texts:
        raise WordformerError(f"corpus {data} is empty or only whitespace; give it some text")
    return texts


def load_pairs(path: str, *, encoding_errors: str = "strict") -> list[tuple[str, str]]:
    """``prompt<TAB>answer`` lines (blank lines skipped; text after the first TAB is the answer)."""
    pairs: list[tuple[str, str]] = []
    for file in _text_files(path):
        for number, line in enumerate(_read_text(file, encoding_errors).split("\n"), start=1):
            if not line.strip():
                continue
            if "\t" not in line:
                raise WordformerError(f"{file} line {number} has no TAB; write each pair as 'prompt<TAB>answer'")
            prompt, answer = (part.strip() for part in line.split("\t", 1))
            if not prompt or not answer:
                side = "prompt" if not prompt else "answer"
                raise WordformerError(f"{file} line {number} has an empty {side}; give both a prompt and an answer")
            pairs.append((prompt, answer))
    if not pairs:
        raise WordformerError(f"pairs file {path} holds no pairs; write lines as 'prompt<TAB>answer'")
    return pairs


# ------------------------------------------------------------------------------------------ corpus


@dataclass
class Corpus:
    """A tokenizer with the token ids it produced, split into training and validation parts."""

    tokenizer: Tokenizer
    mode: str  # "text" or "pairs"
    train_ids: Optional[np.ndarray] = None  # text mode: (N_train,) uint16 or uint32
    val_ids: Optional[np.ndarray] = None  # text mode: (N_val,)
    train_pairs: list[np.ndarray] = field(default_factory=list)  # pairs mode: each (L_i,) prompt <eos> answer <eos>
    val_pairs: list[np.ndarray] = field(default_factory=list)
    train_answer_starts: list[int] = field(default_factory=list)  # index in each pair where the answer begins
    val_answer_starts: list[int] = field(default_factory=list)
    val_is_train: bool = False  # too few pairs to hold any out: validation reuses the training pairs
    from_cache: bool = False  # loaded from the cache, without training or tokenizing
    cache_path: Optional[Path] = None  # the cache entry, None when the cache could not be written
    key: str = ""  # sha256 of the texts and tokenizer options: checkpoints record it to notice a changed corpus
    stats: dict[str, Any] = field(default_factory=dict)  # streamed text: bytes, workers, seconds per phase


def _tokenizer_options(cfg: DataConfig) -> dict[str, Any]:
    """Only the options the chosen tokenizer uses, so unrelated changes keep the cache valid."""
    if cfg.tokenizer == "word":
        return {"lowercase": cfg.lowercase, "min_freq": cfg.min_freq, "max_vocab": cfg.max_vocab}
    return {"bpe_vocab_size": cfg.bpe_vocab_size} if cfg.tokenizer == "bpe" else {}


def _key_header(cfg: DataConfig, mode: str) -> bytes:
    header = {"format": CACHE_FORMAT, "mode": mode, "tokenizer": cfg.tokenizer, "options": _tokenizer_options(cfg),
              "eos": cfg.eos_mode() if mode == "text" else "pairs", "val_fraction": cfg.val_fraction}
    return json.dumps(header, sort_keys=True).encode()


def _cache_key(cfg: DataConfig, mode: str, pieces: Sequence[str]) -> str:
    """sha256 of the format, the options and every text (length-prefixed, so boundaries count); a streamed
    corpus computes the same (:func:`wordformer.streaming.scan`)."""
    h = hashlib.sha256(_key_header(cfg, mode))
    for piece in pieces:
        raw = piece.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


def _save_cache(entry: Path, key: str, tokenizer: Tokenizer, arrays: dict[str, np.ndarray]) -> None:
    entry.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        atomic_write(entry / f"{name}.npy", lambda f, a=arr: np.save(f, a))
    atomic_write(entry / "tokenizer.json", lambda f: f.write(json.dumps(tokenizer.to_dict()).encode()))
    meta = {"format": CACHE_FORMAT, "key": key, "arrays": sorted(arrays)}
    atomic_write(entry / "meta.json", lambda f: f.write(json.dumps(meta).encode()))  # last: entry complete


def _load_cache(entry: Path, key: str) -> Optional[tuple[Tokenizer, dict[str, np.ndarray]]]:
    """The cached tokenizer and memory-mapped arrays, or None when absent or unreadable."""
    if not (entry / "meta.json").is_file():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
            return None
        tokenizer = tokenizer_from_dict(json.loads((entry / "tokenizer.json").read_text()))
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
    except (OSError, ValueError, KeyError, TypeError, WordformerError) as exc:
        logger.warning("ignoring unreadable corpus cache %s (%s); rebuilding it", entry, exc)
        return None
    return tokenizer, arrays


def text_stream(tokenizer: Tokenizer, texts: list[str], eos_mode: str) -> np.ndarray:
    """All documents as one id stream, (N,), with ``<eos>`` after each non-empty line, document or never."""
    pieces = [ln for t in texts for ln in t.split("\n") if ln.strip()] if eos_mode == "line" else texts
    eos = np.array([tokenizer.eos_id], dtype=np.int64)
    dtype, parts = id_dtype(tokenizer.vocab_size), []
    for start in range(0, len(pieces), 4096):
        for ids in tokenizer.encode_arrays(pieces[start:start + 4096]):
            parts.append(ids.astype(dtype))
            if eos_mode != "none":
                parts.append(eos.astype(dtype))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _pair_arrays(tokenizer: Tokenizer, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Pairs as one flat id array plus offsets (n+1,) and answer starts (n,)."""
    eos = np.array([tokenizer.eos_id], dtype=np.int64)
    prompts = tokenizer.encode_arrays([p for p, _ in pairs])
    answers = tokenizer.encode_arrays([a for _, a in pairs])
    seqs = [np.concatenate([p, eos, a, eos]) for p, a in zip(prompts, answers)]
    offsets = np.cumsum([0] + [len(s) for s in seqs]).astype(np.int64)
    starts = np.array([len(p) + 1 for p in prompts], dtype=np.int64)
    return {"pairs": np.concatenate(seqs).astype(id_dtype(tokenizer.vocab_size)), "offsets": offsets, "starts": starts}


def _fit_pair(seq: np.ndarray, start: int, block_size: int, number: int) -> tuple[np.ndarray, int]:
    """Cut a too-long prompt from the left so the sequence fits ``block_size + 1`` tokens."""
    extra = len(seq) - (block_size + 1)
    if extra <= 0:
        return seq, start
    if start - extra < 1:  # even the bare "<eos> answer <eos>" is too long
        raise WordformerError(f"pair {number}: its answer has {len(seq) - start - 1} tokens, too many for "
                              f"block_size={block_size}; use a larger --block-size or a shorter answer")
    return seq[extra:], start - extra


def _split_pairs(corpus: Corpus, arrays: dict[str, np.ndarray], val_fraction: float, block_size: int) -> None:
    offsets, starts = arrays["offsets"], arrays["starts"]
    fitted = [_fit_pair(arrays["pairs"][offsets[i]:offsets[i + 1]], int(starts[i]), block_size, i + 1)
              for i in range(len(starts))]
    cut = sum(len(s) != offsets[i + 1] - offsets[i] for i, (s, _) in enumerate(fitted))
    if cut:
        logger.warning("%d pair(s) exceed block_size + 1 = %d tokens; their prompts were cut from the left", cut, block_size + 1)
    n = len(fitted)
    n_val = min(int(n * val_fraction), n - 1)
    if n_val < 1:
        logger.warning("only %d pair(s): too few to hold any out, so validation reuses the training pairs", n)
        train, val, corpus.val_is_train = fitted, fitted, True
    else:
        train, val = fitted[: n - n_val], fitted[n - n_val:]
    corpus.train_pairs, corpus.train_answer_starts = [s for s, _ in train], [a for _, a in train]
    corpus.val_pairs, corpus.val_answer_starts = [s for s, _ in val], [a for _, a in val]


def _split_text(stream: np.ndarray, val_fraction: float) -> dict[str, np.ndarray]:
    n_val = max(1, int(len(stream) * val_fraction))
    return {"train": stream[: len(stream) - n_val], "val": stream[len(stream) - n_val:]}


def _check_text_fits(corpus: Corpus, block_size: int) -> None:
    n_train, n_val, need = len(corpus.train_ids), len(corpus.val_ids), block_size + 1
    if min(n_train, n_val) < need:
        raise WordformerError(f"the corpus has {n_train} training and {n_val} validation tokens but block_size={block_size} "
                              f"needs at least {need} in each; use a smaller --block-size or more text")


def check_same_corpus(corpus: Corpus, recorded: Optional[str], cfg: DataConfig, checkpoint: "os.PathLike[str] | str",
                      tokenizer: Optional[Tokenizer] = None, *, advice: str = "restore that text") -> None:
    """Refuse to resume or score a checkpoint on a corpus other than the one it was trained on: its tokenizer
    would differ (ids out of range, or silently other tokens) and the validation split would be other text.
    Checkpoints from before the corpus hash was recorded are compared by their tokenizer instead."""
    differs = (recorded != corpus.key) if recorded else (
        tokenizer is not None and tokenizer.to_dict() != corpus.tokenizer.to_dict())
    if differs:
        source = cfg.data or "the built-in corpus"
        raise WordformerError(
            f"the training corpus {source} is not the text {checkpoint} was trained on (it changed since, or the "
            f"tokenizer options differ); {advice}")


def prepare_corpus(cfg: DataConfig, block_size: int, *, progress: Optional[Progress] = None) -> Corpus:
    """Load the data, then train the tokenizer and tokenize, or load both from the cache. ``progress`` shows how
    far tokenizing a plain-text corpus got (MB, MB/s, time left)."""
    if cfg.pairs and cfg.data is None:
        raise WordformerError("pairs mode needs a file of 'prompt<TAB>answer' lines; pass --data")
    if not cfg.pairs:
        corpus = _prepare_text(cfg, progress or Progress(enabled=False))
        _check_text_fits(corpus, block_size)
        return corpus
    pairs = load_pairs(cfg.data, encoding_errors=cfg.encoding_errors)
    texts = [t for pair in pairs for t in pair]
    key = _cache_key(cfg, "pairs", texts)
    entry = corpus_cache_dir(cfg.cache_dir) / f"corpus-{key}"
    cache_path: Optional[Path] = entry
    cached = _load_cache(entry, key)
    if cached is not None:
        tokenizer, arrays = cached
        logger.info("loaded the tokenized corpus from %s", entry)
    else:
        tokenizer = build_tokenizer(cfg.tokenizer, texts, **_tokenizer_options(cfg))
        arrays = _pair_arrays(tokenizer, pairs)
        try:
            _save_cache(entry, key, tokenizer, arrays)
        except OSError as exc:
            logger.warning("cannot write the corpus cache at %s (%s); continuing without it", entry, exc)
            cache_path = None
    corpus = Corpus(tokenizer=tokenizer, mode="pairs", from_cache=cached is not None, cache_path=cache_path, key=key)
    _split_pairs(corpus, arrays, cfg.val_fraction, block_size)
    return corpus


class _CacheLock:
    """An exclusive lock on a cache entry while it is built, so processes preparing the same corpus at once
    (the ranks of a multi-device run) tokenize it once; the others wait, then read it."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # OSError here: the cache is not writable

    def __enter__(self) -> "_CacheLock":
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX: no lock, at worst the work is done twice
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)


def _build_text_entry(folder: Path, key: str, cfg: DataConfig, sources: list, progress: Progress) -> None:
    """Train the tokenizer and write the split ids into ``folder``; meta.json last marks the entry complete."""
    (folder / "meta.json").unlink(missing_ok=True)
    check_free_space(folder, sources, cfg.tokenizer, cfg.val_fraction)
    tokenizer = tokenize_corpus(folder, cfg.tokenizer, _tokenizer_options(cfg), sources, cfg.eos_mode(),
                                cfg.val_fraction, errors=cfg.encoding_errors,
                                workers=effective_workers(cfg.workers, sources), progress=progress)
    try:
        atomic_write(folder / "tokenizer.json", lambda f: f.write(json.dumps(tokenizer.to_dict()).encode()))
        meta = {"format": CACHE_FORMAT, "key": key, "arrays": ["train", "val"]}
        atomic_write(folder / "meta.json", lambda f: f.write(json.dumps(meta).encode()))
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(folder, exc) from None
        raise


def _prepare_text(cfg: DataConfig, progress: Progress) -> Corpus:
    """A plain-text corpus, streamed: scanned and hashed in one pass, then read from the cache or built into it."""
    sources, key = scan(cfg.data, builtin_texts() if cfg.data is None else None, _key_header(cfg, "text"),
                        errors=cfg.encoding_errors, progress=progress)
    entry = corpus_cache_dir(cfg.cache_dir) / f"corpus-{key}"
    cache_path: Optional[Path] = entry
    cached = _load_cache(entry, key)
    from_cache = cached is not None
    if cached is None:
        try:
            entry.mkdir(parents=True, exist_ok=True)
            lock: Optional[_CacheLock] = _CacheLock(entry / ".lock")
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise disk_full_error(entry, exc) from None
            logger.warning("cannot write the corpus cache at %s (%s); continuing without it", entry, exc)
            lock, cache_path = None, None
        if lock is not None:
            with lock:
                cached = _load_cache(entry, key)  # another process may have built it while this one waited
                from_cache = cached is not None
                if cached is None:
                    _build_text_entry(entry, key, cfg, sources, progress)
                    cached = _load_cache(entry, key)
        else:  # build in a temporary folder; the memory maps outlive its removal
            with tempfile.TemporaryDirectory(prefix="wordformer-corpus-", ignore_cleanup_errors=True) as tmp:
                _build_text_entry(Path(tmp), key, cfg, sources, progress)
                cached = _load_cache(Path(tmp), key)
        if cached is None:  # pragma: no cover - written a moment ago
            raise WordformerError(f"the corpus cache at {entry} could not be read back; delete it and run again")
    else:
        logger.info("loaded the tokenized corpus from %s", entry)
    tokenizer, arrays = cached
    corpus = Corpus(tokenizer=tokenizer, mode="text", from_cache=from_cache, cache_path=cache_path, key=key,
                    train_ids=arrays["train"], val_ids=arrays["val"])
    corpus.stats = {"bytes": sum(s.nbytes for s in sources), "documents": len(sources),
                    "seconds": dict(progress.seconds)}
    return corpus


# ------------------------------------------------------------------------------------------ batches


class WordDataModule(L.LightningDataModule):
    """Training and validation batches of a :class:`Corpus` for Lightning.

    Training: an endless stream of whole (x, y) batches, batch ``n`` a pure function of ``(seed, n)``;
    validation: the same fixed batches every time. Pairs are right-padded, padded targets set to -100.
    """

    def __init__(self, corpus: Corpus, block_size: int, batch_size: int, *, seed: int = 1337,
                 eval_batches: int = 20, grad_accum: int = 1, sampling: str = "random") -> None:
        super().__init__()
        for name, value in (("block_size", block_size), ("batch_size", batch_size), ("eval_batches", eval_batches),
                            ("grad_accum", grad_accum)):
            check_int(name, value)
        self.corpus, self.block_size, self.batch_size = corpus, block_size, batch_size
        self.seed, self.eval_batches, self.grad_accum = seed, eval_batches, grad_accum
        if corpus.mode == "text":
            _check_text_fits(corpus, block_size)
            self.train_set: SeededBatches = TextBatches(corpus.train_ids, block_size, batch_size, seed, sampling)
            self.val_set = self._text_val_batches()
        else:
            longest = max(len(s) for s in corpus.train_pairs + corpus.val_pairs)
            if longest > block_size + 1:
                raise WordformerError(f"a pair has {longest} tokens, more than block_size + 1 = {block_size + 1}; "
                                      "prepare the corpus with the same --block-size")
            self.train_set = PairBatches(corpus.train_pairs, corpus.tokenizer.pad_id, batch_size, seed, sampling)
            val, pad = corpus.val_pairs, corpus.tokenizer.pad_id
            count = -(-len(val) // batch_size)
            self.val_set = FixedBatches(count, lambda i: pad_pairs(val[i * batch_size:(i + 1) * batch_size], pad))

    def _text_val_batches(self) -> FixedBatches:
        """``eval_batches`` batches of windows spread evenly over the validation stream."""
        ids, T, B = as_tensor(self.corpus.val_ids), self.block_size, self.batch_size
        offsets = torch.linspace(0, len(ids) - T - 1, self.eval_batches * B).round().long()  # (E*B,)
        offsets = offsets.view(self.eval_batches, B)  # (E, B)
        return FixedBatches(self.eval_batches, lambda i: text_windows(ids, offsets[i], T))

    def train_dataloader(self) -> DataLoader:
        """Continue the batch sequence where a resumed trainer left off."""
        if self.trainer is not None:
            self.train_set.start_batch = self.trainer.global_step * self.grad_accum
            self.train_set.set_ranks(self.trainer.global_rank, self.trainer.world_size)  # each rank: its share
        return DataLoader(self.train_set, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=None, shuffle=False, num_workers=0)
