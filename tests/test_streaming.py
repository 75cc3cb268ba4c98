"""Streamed corpora: chunked reading, the cache key, cuts that keep ids, parallel tokenizing, compatibility with
corpora and checkpoints made before streaming, and the failures that must leave the cache clean."""

from __future__ import annotations

import errno
import io
import json
import logging
import re
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wordformer.data as data
import wordformer.streaming as streaming
import wordformer.tokenizing as tokenizing
from conftest import assert_one_line_error, run_cli
from wordformer.config import DataConfig
from wordformer.data import prepare_corpus
from wordformer.errors import WordformerError
from wordformer.files import corpus_cache_dir
from wordformer.streaming import Progress, Source, cut_point, pieces, read_chunks, scan
from wordformer.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "compat"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())

# text that tries the rules: CR line ends, tabs, runs of spaces, unicode (dotted capital I, final sigma),
# emoji, apostrophes, a literal <eos>, separators that are whitespace to Python (\x1c, U+3000)
ALPHABET = list("ab cAB\n\n\t  '\u2019.,;<>eos_\u0130\u03a3\u03c3\u65e5\u672c\U0001F916\r\x1c\u00a0\u3000x9") + [
    "<eos>", "\n   \n", "Don't", "\u0391\u03a3.\u0392", "l'homme"]
TEXTS = st.lists(st.sampled_from(ALPHABET), max_size=80).map("".join)


def prose(chars: int) -> str:
    """The first ``chars`` characters of the built-in corpus (Python's documentation topics): real text, always there."""
    return "\n".join(data.builtin_texts())[:chars]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of a few characters and workers even for tiny corpora: every cut and the process pool get used."""
    monkeypatch.setattr(streaming, "PIECE_CHARS", {"word": 13, "char": 11, "bpe": 17})
    monkeypatch.setattr(tokenizing, "PARALLEL_MIN_BYTES", 0)


def fixture_cfg(name: str, cache: Path, **kw) -> DataConfig:
    kind, eos = name.split("-")
    return DataConfig(data=str(FIXTURE / "corpus"), tokenizer=kind, eos=eos, bpe_vocab_size=300, cache_dir=str(cache),
                      val_fraction=0.2, **kw)


# ---------------------------------------------------------------------------------------------- compatibility


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("how", ["default", "small pieces, 2 workers"])
def test_a_streamed_corpus_equals_the_one_made_before_streaming(name, how, tmp_path, request):
    """Same cache key, tokenizer and train/val ids as the whole-text code made (fixture from commit 6930992)."""
    workers = 1
    if how != "default":
        request.getfixturevalue("small_pieces")
        workers = 2
    corpus = prepare_corpus(fixture_cfg(name, tmp_path, workers=workers), block_size=4)
    expected = EXPECTED[name]
    assert corpus.key == expected["key"]
    assert corpus.tokenizer.to_dict() == expected["tokenizer"]
    assert corpus.train_ids.tolist() == expected["train"] and corpus.val_ids.tolist() == expected["val"]


def test_an_old_checkpoint_loads_gives_the_same_ids_and_scores_its_own_corpus(tmp_path):
    from wordformer.checkpoint import load_checkpoint
    from wordformer.evaluate import evaluate

    loaded = load_checkpoint(FIXTURE / "word.ckpt")
    expected = EXPECTED["word-auto"]
    assert loaded.tokenizer.to_dict() == expected["tokenizer"] and loaded.info["corpus"] == expected["key"]
    sources, key = scan(str(FIXTURE / "corpus"), None, data._key_header(loaded.data_config, "text"))
    out = io.BytesIO()
    tokenizing.write_ids(loaded.tokenizer, sources, "line", out)
    assert np.frombuffer(out.getvalue(), dtype=np.uint16).tolist() == expected["train"] + expected["val"]
    assert key == expected["key"]
    # the recorded corpus hash matches the streamed corpus: evaluate accepts it and scores the old split
    loaded.data_config = replace(loaded.data_config, data=str(FIXTURE / "corpus"), cache_dir=str(tmp_path))
    metrics = evaluate(loaded)
    assert metrics["tokens"] == len(expected["val"]) - 1 - (len(expected["val"]) - 1) % 4


@pytest.mark.parametrize("name", ["word-auto", "char-auto", "bpe-auto"])
def test_old_tokenizer_json_loads_and_encodes_the_corpus_as_before(name, tmp_path):
    from wordformer.tokenizers import tokenizer_from_dict

    tok = tokenizer_from_dict(json.loads(json.dumps(EXPECTED[name]["tokenizer"])))  # the saved JSON, read back
    cfg = fixture_cfg(name, tmp_path)
    texts = data.load_texts(cfg.data)
    ids = data.text_stream(tok, texts, cfg.eos_mode())
    assert ids.tolist() == EXPECTED[name]["train"] + EXPECTED[name]["val"]


# ---------------------------------------------------------------------------------------------- fast paths


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, cont=st.booleans(), open_end=st.booleans())
def test_fast_paths_agree_with_the_plain_tokenizers(text, cont, open_end):
    for tok in (WORD, WORD_CASED, CHAR):
        plain = Tokenizer.encode_lines(tok, text, cont=cont, open_end=open_end).tolist()
        assert tok.encode_lines(text, cont=cont, open_end=open_end).tolist() == plain
        assert tok.encode_array(text).tolist() == tok.encode(text)
    grow = WordTokenizer.growing()  # every word gets an id of its own, in the fast path too
    assert [grow.id_to_token(i) for i in grow.encode_array(text)] == WORD.split(text)
    assert grow.encode_array(text).tolist() == grow.encode(text)
    assert CharTokenizer.characters(text) == set("".join(text.split("<eos>")))
    # line mode as the whole-text pipeline defines it: each line with text, then <eos>
    old = [i for ln in text.split("\n") if ln.strip() for i in WORD.encode(ln) + [WORD.eos_id]]
    assert WORD.encode_lines(text).tolist() == old


_TRAIN = [("".join(ALPHABET) + " ") * 3]
WORD = WordTokenizer.train(_TRAIN[:1] + ["some more words"])
WORD_CASED = WordTokenizer.train(_TRAIN, lowercase=False)
WORD_CASED._MEMO_LIMIT = 4  # its piece memo fills up all the time: forgetting must not change an id
CHAR = CharTokenizer.train(_TRAIN)


def test_whitespace_is_the_same_for_str_split_str_isspace_and_the_pattern():
    """The word fast path cuts with str.split(); the pattern skips \\s: both must be the same characters."""
    space = re.compile(r"\s")
    differ = [c for c in range(sys.maxunicode + 1)
              if chr(c).isspace() != bool(space.match(chr(c))) or ("a" + chr(c) + "b").split() != (
                  ["a", "b"] if chr(c).isspace() else ["a" + chr(c) + "b"])]
    assert differ == []


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(["".join(ALPHABET) * 5, "the cat sat on the mat, didn't it?\n\tyes " * 10],
                              vocab_size=300)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, size=st.integers(1, 12))
def test_text_cut_at_every_cut_point_encodes_as_the_whole(bpe, text, size):
    for tok in (WORD, CHAR, bpe):
        parts, pos = [], 0
        while len(text) - pos > size:
            i = cut_point(tok.kind, text, pos, pos + size) or cut_point(tok.kind, text, pos, len(text))
            if not i:
                break
            assert pos < i < len(text)
            parts.append(text[pos:i])
            pos = i
        parts.append(text[pos:])
        joined = np.concatenate([tok.encode_array(p) for p in parts]).tolist()
        assert joined == tok.encode_array(text).tolist(), (tok.kind, parts)


# ---------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 20])
def test_reading_in_chunks_normalises_exactly_like_a_whole_read(tmp_path, chunk):
    raw = "\ufeffone\r\ntwo\rthree \u00e9\u65e5\U0001F916\r\n\r\r\nend\r".encode()
    path = write(tmp_path / "a.txt", raw)
    st_ = path.stat()
    src = Source(name=str(path), path=path, size=st_.st_size, mtime_ns=st_.st_mtime_ns)
    assert "".join(read_chunks(src, chunk_bytes=chunk)) == data._read_text(path, "strict")


@pytest.mark.parametrize("content, message", [
    ("caf\u00e9".encode("latin-1"), r"not UTF-8 \(bad byte at offset 3\).*--encoding-errors replace"),
    (b"abc" * 10 + b"\xff" + b"x" * 40 + b"\x00", r"looks binary \(NUL byte at offset 71\)"),
    (b"abc\x00def", r"looks binary \(NUL byte at offset 3\)"),
])
def test_bad_bytes_give_the_whole_read_message_with_the_file_offset(tmp_path, monkeypatch, content, message):
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 4)
    path = write(tmp_path / "x.txt", content)
    with pytest.raises(WordformerError, match=message):
        scan(str(path), None, b"")
    with pytest.raises(WordformerError, match=message):
        data.load_texts(str(path))


def test_replace_decodes_like_a_whole_read_and_hashes_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 3)
    write(tmp_path / "c" / "a.txt", b"caf\xe9 ok\r\nna\xc3\xafve \xe2\x82")
    cfg = DataConfig(data=str(tmp_path / "c"), encoding_errors="replace")
    _, key = scan(cfg.data, None, data._key_header(cfg, "text"), errors="replace")
    assert key == data._cache_key(cfg, "text", data.load_texts(cfg.data, encoding_errors="replace"))


def test_the_scan_key_equals_the_whole_text_key_for_clean_and_unclean_files(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 5)
    folder = tmp_path / "c"
    write(folder / "a.txt", "clean text\nwith lines\n")
    write(folder / "b.txt", "\ufeffbom and\r\ncrlf\r")
    write(folder / "c.txt", "  \n\t")  # whitespace only: left out
    write(folder / "d" / "e.txt", "\u65e5\u672c\u8a9e " * 7)
    cfg = DataConfig(data=str(folder), tokenizer="char")
    sources, key = scan(cfg.data, None, data._key_header(cfg, "text"))
    assert key == data._cache_key(cfg, "text", data.load_texts(cfg.data))
    assert [Path(s.name).name for s in sources] == ["a.txt", "b.txt", "e.txt"]
    assert [s.nbytes for s in sources] == [len(t.encode()) for t in data.load_texts(cfg.data)]


def test_the_built_in_corpus_streams_with_the_whole_text_key(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path))
    corpus = prepare_corpus(cfg, block_size=8)
    assert corpus.key == data._cache_key(cfg, "text", data.load_texts(None))
    old = data._split_text(data.text_stream(corpus.tokenizer, data.load_texts(None), "line"), cfg.val_fraction)
    assert np.array_equal(corpus.train_ids, old["train"]) and np.array_equal(corpus.val_ids, old["val"])


def test_pieces_hold_the_text_in_order_with_eos_flags(tmp_path):
    text = "alpha beta\ngamma delta epsilon\n\n   \nzeta eta theta iota kappa lambda\nmu"
    path = write(tmp_path / "a.txt", text)
    st_ = path.stat()
    src = Source(name="a", path=path, size=st_.st_size, mtime_ns=st_.st_mtime_ns, nbytes=len(text))
    for mode in ("line", "document", "none"):
        items = list(pieces([src, src], "word", mode, size=8))
        assert "".join(p.text for p in items) == text * 2
        assert sum(p.eos_after for p in items) == (2 if mode == "document" else 0)
        assert all(p.lines == (mode == "line") for p in items)


@pytest.mark.parametrize("kind", ["word", "char"])
@pytest.mark.parametrize("eos", ["line", "document"])
def test_a_line_longer_than_a_piece_keeps_its_ids(tmp_path, monkeypatch, kind, eos):
    monkeypatch.setattr(streaming, "PIECE_CHARS", {"word": 16, "char": 16, "bpe": 16})
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 7)
    text = ("   " + "word " * 30 + "\n" + " " * 50 + "\n" + "x" * 5 + " tail\n\t\n" + "y " * 20)
    cfg = DataConfig(data=str(write(tmp_path / "c.txt", text)), tokenizer=kind, eos=eos, cache_dir=str(tmp_path / "k"))
    corpus = prepare_corpus(cfg, block_size=2)
    old = data.text_stream(corpus.tokenizer, data.load_texts(cfg.data), eos)
    assert np.concatenate([corpus.train_ids, corpus.val_ids]).tolist() == old.tolist()


# ---------------------------------------------------------------------------------------------- parallel, BPE sample


@pytest.mark.parametrize("kind, eos", [("word", "line"), ("word", "document"), ("char", "document"),
                                       ("char", "line"), ("bpe", "line")])
def test_parallel_tokenizing_gives_the_ids_of_one_process(tmp_path, monkeypatch, kind, eos):
    monkeypatch.setattr(streaming, "PIECE_CHARS", {"word": 4096, "char": 4096, "bpe": 4096})
    monkeypatch.setattr(tokenizing, "PARALLEL_MIN_BYTES", 0)
    text = prose(60_000) + "\nGr\u00fc\u00dfe, na\u00efve \U0001F916 <eos> x\n"
    path = write(tmp_path / "c.txt", text)
    runs = [prepare_corpus(DataConfig(data=str(path), tokenizer=kind, eos=eos, workers=w, bpe_vocab_size=300,
                                      cache_dir=str(tmp_path / f"cache{w}")), block_size=8) for w in (1, 2)]
    assert runs[0].key == runs[1].key and runs[0].tokenizer.to_dict() == runs[1].tokenizer.to_dict()
    assert np.array_equal(runs[0].train_ids, runs[1].train_ids) and np.array_equal(runs[0].val_ids, runs[1].val_ids)


def test_bpe_on_a_large_corpus_learns_from_a_sample_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tokenizing, "BPE_SAMPLE_BYTES", 20_000)
    monkeypatch.setattr(streaming, "PIECE_CHARS", {"word": 4096, "char": 4096, "bpe": 2048})
    text = prose(100_000)
    cfg = DataConfig(data=str(write(tmp_path / "c.txt", text)), tokenizer="bpe", bpe_vocab_size=300,
                     cache_dir=str(tmp_path / "k"))
    with caplog.at_level(logging.INFO, logger="wordformer.tokenizing"):
        corpus = prepare_corpus(cfg, block_size=8)
    assert re.search(r"BPE merges learned from a 0 MB sample of the 0 MB corpus", caplog.text)
    assert corpus.tokenizer.decode(np.concatenate([corpus.train_ids, corpus.val_ids]).tolist()) == text + "<eos>"
    whole = BPETokenizer.train([text], vocab_size=300)
    assert corpus.tokenizer.to_dict() != whole.to_dict()  # it did learn from less


def test_workers_must_be_positive(capsys, small_text):
    with pytest.raises(WordformerError, match="workers=0"):
        DataConfig(workers=0)
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--workers", "0", "--max-steps", "1")
    assert_one_line_error(code, err, "workers=0")


# ---------------------------------------------------------------------------------------------- progress


def test_progress_off_a_terminal_prints_mb_rate_and_time_left(tmp_path):
    out = io.StringIO()
    cfg = DataConfig(data=str(write(tmp_path / "c.txt", prose(1_000_000))), tokenizer="char", cache_dir=str(tmp_path))
    prepare_corpus(cfg, block_size=8, progress=Progress(stream=out, every=0.0))
    lines = out.getvalue().splitlines()
    assert lines and all(re.fullmatch(r"wordformer: [a-z ]+: [\d,]+ of [\d,]+ MB \(\d+%\), [\d.]+ MB/s, (\d+|nan) s left",
                                      ln) for ln in lines), lines
    assert any(ln.startswith("wordformer: tokenizing:") for ln in lines)


def test_progress_on_a_terminal_is_a_bar_with_mb_per_second(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    cfg = DataConfig(data=str(write(tmp_path / "c.txt", prose(1_000_000))), tokenizer="char", cache_dir=str(tmp_path))
    prepare_corpus(cfg, block_size=8, progress=Progress(stream=out, every=0.0))
    assert re.search(r"tokenizing: +\d+%\|[^|]*\| [\d.]+[kM]?B/466kB \[[^\]]*<[^\]]*, [\d.]+[kMG]?B/s\]",
                     out.getvalue())
    assert "wordformer: tokenizing:" not in out.getvalue()  # a bar redrawn in place, not the periodic lines


# ---------------------------------------------------------------------------------------------- failures


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file() and p.name != ".lock")


def test_too_little_free_disk_space_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, capsys, small_text):
    monkeypatch.setattr(streaming, "free_bytes", lambda path: 1000)
    cache = tmp_path / "cache"
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--cache-dir", cache, "--out", tmp_path / "run",
                           "--max-steps", "1", "--no-progress")
    assert_one_line_error(code, err, "GB are free", "--cache-dir")
    assert cache_files(cache) == []


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_a_disk_that_fills_up_while_writing_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, kind):
    real, calls = tokenizing.append_ids, []

    def fills_up(out, ids):
        calls.append(len(ids))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(out, ids)

    monkeypatch.setattr(streaming, "PIECE_CHARS", {"word": 64, "char": 64, "bpe": 64})
    monkeypatch.setattr(tokenizing, "append_ids", fills_up)
    cache = tmp_path / "cache"
    cfg = DataConfig(data=str(write(tmp_path / "c.txt", "some words here.\n" * 50)), cache_dir=str(cache),
                     tokenizer=kind, bpe_vocab_size=300)
    with pytest.raises(WordformerError, match=r"disk holding .* is full .*--cache-dir"):
        prepare_corpus(cfg, block_size=4)
    assert len(calls) == 2 and cache_files(cache) == []
    monkeypatch.setattr(tokenizing, "append_ids", real)
    assert not prepare_corpus(cfg, block_size=4).from_cache  # and the next run builds the entry


# the pass that finds the file changed: the scan (1); words: the one tokenizing pass (2); char: collecting the
# characters (2), tokenizing (3)
@pytest.mark.parametrize("kind, at_call", [("word", 1), ("word", 2), ("char", 2), ("char", 3)])
def test_a_file_that_changes_while_read_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, capsys, kind, at_call):
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 1 << 10)
    path = write(tmp_path / "c.txt", "some words here and there.\n" * 200)  # 5.4 kB: several chunks per pass
    calls = []

    def grows(p, offset):
        calls.append(offset)
        if offset == 1 << 10 and len([c for c in calls if c == 1 << 10]) == at_call:
            with open(path, "ab") as fh:
                fh.write(b"appended while reading\n")

    monkeypatch.setattr(streaming, "after_chunk", grows)
    cache = tmp_path / "cache"
    code, _, err = run_cli(capsys, "train", "--data", path, "--cache-dir", cache, "--out", tmp_path / "run",
                           "--tokenizer", kind, "--max-steps", "1", "--no-progress")
    assert_one_line_error(code, err, "changed while it was being read", str(path))
    assert calls.count(1 << 10) == at_call  # it was found in the pass that saw the change
    assert cache_files(cache) == []


def test_an_entry_being_built_is_waited_for_then_read(tmp_path):
    """Processes preparing the same corpus at once (the ranks of a run) tokenize it once: the others wait."""
    cfg = DataConfig(data=str(write(tmp_path / "c.txt", "some words here.\n" * 50)), cache_dir=str(tmp_path / "k"))
    sources, key = scan(cfg.data, None, data._key_header(cfg, "text"))
    entry = corpus_cache_dir(cfg.cache_dir) / f"corpus-{key}"
    entry.mkdir(parents=True)
    results = []
    with data._CacheLock(entry / ".lock"):
        waiter = threading.Thread(target=lambda: results.append(prepare_corpus(cfg, block_size=4)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not results  # blocked on the lock
        data._build_text_entry(entry, key, cfg, sources, Progress(enabled=False))
    waiter.join(30)
    assert results and results[0].from_cache


def test_an_unwritable_cache_streams_through_a_temporary_folder(tmp_path, caplog):
    blocker = write(tmp_path / "not-a-dir", "x")
    cfg = DataConfig(data=str(write(tmp_path / "c.txt", "some words here.\n" * 50)), cache_dir=str(blocker))
    with caplog.at_level(logging.WARNING, logger="wordformer.data"):
        corpus = prepare_corpus(cfg, block_size=8)
    assert corpus.cache_path is None and "continuing without it" in caplog.text
    old = data._split_text(data.text_stream(corpus.tokenizer, data.load_texts(cfg.data), "line"), 0.1)
    assert np.array_equal(corpus.train_ids, old["train"]) and np.array_equal(corpus.val_ids, old["val"])


# ---------------------------------------------------------------------------------------------- evaluate --data


def test_evaluate_data_streams_to_the_same_figures(trained_run, tmp_path, small_pieces):
    import torch

    from wordformer.checkpoint import load_checkpoint
    from wordformer.evaluate import _score, evaluate

    loaded = load_checkpoint(trained_run / "best.ckpt")
    held_out = write(tmp_path / "held.txt", "the cat sat on the log .\nthe dog ran to the mat .\n" * 9)
    got = evaluate(loaded, str(held_out), batch_size=3)
    ids = torch.from_numpy(data.text_stream(loaded.tokenizer, data.load_texts(str(held_out)), "line").astype("int64"))
    block = loaded.model_config.block_size
    n = (len(ids) - 1) // block
    seqs = ids[(torch.arange(n) * block)[:, None] + torch.arange(block + 1)]
    expected = _score(loaded.model, [(seqs[i:i + 3, :-1], seqs[i:i + 3, 1:]) for i in range(0, n, 3)])
    assert got == expected
    assert not list(corpus_cache_dir(loaded.data_config.cache_dir).glob("wordformer-eval-*"))  # temporary ids gone
