"""Loading text and pairs, tokenized-corpus caching and splitting, and the batches the trainer sees."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import wordformer.data as data
from wordformer.config import DataConfig
from wordformer.data import Corpus, WordDataModule, load_pairs, load_texts, prepare_corpus
from wordformer.errors import WordformerError

TOY_PAIRS = "what is statquest\tawesome\nstatquest is what\tawesome\n"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def text_cfg(tmp_path: Path, text: str = "", **kw) -> DataConfig:
    """A config over a file holding ``text`` (default: 300 numbered lines), cached under tmp_path."""
    text = text or "".join(f"line {i} of the corpus, word{i % 7}.\n" for i in range(300))
    return DataConfig(data=str(write(tmp_path / "corpus.txt", text)), cache_dir=str(tmp_path / "cache"), **kw)


def pairs_cfg(tmp_path: Path, text: str = TOY_PAIRS, **kw) -> DataConfig:
    return DataConfig(data=str(write(tmp_path / "pairs.txt", text)), pairs=True, cache_dir=str(tmp_path / "cache"), **kw)


# ---------------------------------------------------------------------------------------------- loading


def test_builtin_corpus_is_the_python_docs_with_over_50000_words():
    texts = load_texts(None)
    assert len(texts) > 50
    assert sum(len(t.split()) for t in texts) > 50_000


def test_a_file_is_one_document_with_crlf_and_cr_normalised(tmp_path: Path):
    path = write(tmp_path / "a.txt", b"\xef\xbb\xbfone\r\ntwo\rthree\n")
    assert load_texts(str(path)) == ["one\ntwo\nthree\n"]


def test_a_folder_gives_its_txt_files_sorted_and_recursively(tmp_path: Path):
    write(tmp_path / "b.txt", "bee")
    write(tmp_path / "a.txt", "ay")
    write(tmp_path / "sub" / "c.txt", "sea")
    write(tmp_path / "notes.md", "ignored")
    write(tmp_path / "empty.txt", "  \n")
    assert load_texts(str(tmp_path)) == ["ay", "bee", "sea"]


def test_a_single_huge_line_loads(tmp_path: Path):
    path = write(tmp_path / "big.txt", "word " * 4_000_000)  # 20 MB, one line
    assert len(load_texts(str(path))[0]) == 20_000_000


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda p: p / "missing.txt", "does not exist"),
        (lambda p: (p / "d").mkdir() or p / "d", "no .txt files"),
        (lambda p: write(p / "e.txt", " \n\t\n"), "empty"),
        (lambda p: write(p / "bin.txt", b"abc\x00def"), "binary"),
    ],
)
def test_bad_text_inputs_are_refused(tmp_path: Path, setup, match: str):
    with pytest.raises(WordformerError, match=match):
        load_texts(str(setup(tmp_path)))


def test_non_utf8_names_the_file_and_offset_and_suggests_replace(tmp_path: Path):
    path = write(tmp_path / "latin1.txt", "café".encode("latin-1"))
    with pytest.raises(WordformerError, match=r"latin1\.txt.*offset 3.*--encoding-errors replace"):
        load_texts(str(path))
    assert load_texts(str(path), encoding_errors="replace") == ["caf\ufffd"]


def test_binary_files_are_refused_even_with_replace(tmp_path: Path):
    with pytest.raises(WordformerError, match="binary"):
        load_texts(str(write(tmp_path / "x.txt", b"\xff\x00")), encoding_errors="replace")


def test_pairs_load_with_blank_lines_skipped(tmp_path: Path):
    path = write(tmp_path / "p.txt", "\nwhat is statquest\tawesome\r\n\n  \nhi\tthere\tfriend\n")
    assert load_pairs(str(path)) == [("what is statquest", "awesome"), ("hi", "there\tfriend")]


@pytest.mark.parametrize(
    "content, match",
    [
        ("a\tb\nno tab here\n", r"p\.txt line 2 has no TAB"),
        ("a\tb\n\t answer\n", "line 2 has an empty prompt"),
        ("a\t \n", "line 1 has an empty answer"),
        ("\n\n", "no pairs"),
    ],
)
def test_bad_pairs_lines_are_refused_with_their_line_number(tmp_path: Path, content: str, match: str):
    with pytest.raises(WordformerError, match=match):
        load_pairs(str(write(tmp_path / "p.txt", content)))


# ---------------------------------------------------------------------------------------------- corpus


def test_text_corpus_splits_the_tail_for_validation_as_uint16(tmp_path: Path):
    corpus = prepare_corpus(text_cfg(tmp_path, val_fraction=0.2), block_size=8)
    n = len(corpus.train_ids) + len(corpus.val_ids)
    assert corpus.mode == "text" and corpus.train_ids.dtype == np.uint16
    assert len(corpus.val_ids) == int(n * 0.2)
    assert corpus.tokenizer.decode(corpus.val_ids[-3:].tolist()) == "word5. <eos>"


def test_second_prepare_loads_from_cache_without_retraining(tmp_path: Path, monkeypatch):
    cfg = text_cfg(tmp_path)
    first = prepare_corpus(cfg, block_size=8)
    monkeypatch.setattr(data, "build_tokenizer", lambda *a, **k: pytest.fail("tokenizer retrained"))
    second = prepare_corpus(cfg, block_size=8)
    assert not first.from_cache and second.from_cache
    assert isinstance(second.train_ids, np.memmap)
    assert np.array_equal(first.train_ids, second.train_ids) and first.tokenizer.to_dict() == second.tokenizer.to_dict()


def test_changing_an_option_or_the_text_misses_the_cache(tmp_path: Path):
    prepare_corpus(text_cfg(tmp_path), block_size=8)
    assert not prepare_corpus(text_cfg(tmp_path, min_freq=2), block_size=8).from_cache
    assert not prepare_corpus(text_cfg(tmp_path, "other text. " * 100), block_size=8).from_cache


def test_unwritable_cache_falls_back_to_no_cache(tmp_path: Path, caplog):
    blocker = write(tmp_path / "not-a-dir", "x")
    cfg = DataConfig(data=str(write(tmp_path / "c.txt", "some words here.\n" * 50)), cache_dir=str(blocker))
    with caplog.at_level(logging.WARNING, logger="wordformer.data"):
        corpus = prepare_corpus(cfg, block_size=8)
    assert len(corpus.train_ids) > 9 and not corpus.from_cache
    assert "without it" in caplog.text


@pytest.mark.parametrize("eos, expected", [("line", 2), ("document", 1), ("none", 0)])
def test_eos_mode_places_eos_after_lines_documents_or_nowhere(tmp_path: Path, eos: str, expected: int):
    corpus = prepare_corpus(text_cfg(tmp_path, "a b c d e f g h\n\ni j k l m n o p\n", eos=eos, val_fraction=0.5), block_size=2)
    ids = np.concatenate([corpus.train_ids, corpus.val_ids])
    assert int((ids == corpus.tokenizer.eos_id).sum()) == expected


def test_char_and_bpe_corpora_default_to_document_eos(tmp_path: Path):
    for kind in ("char", "bpe"):
        corpus = prepare_corpus(text_cfg(tmp_path, tokenizer=kind, bpe_vocab_size=300), block_size=16)
        assert corpus.val_ids[-1] == corpus.tokenizer.eos_id
        assert int((corpus.train_ids == corpus.tokenizer.eos_id).sum()) == 0


def test_a_corpus_too_short_for_the_block_size_is_refused_with_counts(tmp_path: Path):
    with pytest.raises(WordformerError, match=r"training and \d+ validation tokens.*smaller --block-size"):
        prepare_corpus(text_cfg(tmp_path, "only a few words here\n"), block_size=8)


def test_a_long_single_line_char_corpus_tokenizes_quickly(tmp_path: Path):
    corpus = prepare_corpus(text_cfg(tmp_path, "abcdefghij " * 500_000, tokenizer="char"), block_size=64)
    assert len(corpus.train_ids) + len(corpus.val_ids) == 5_500_001


# ---------------------------------------------------------------------------------------------- pairs


def test_chapter_toy_pairs_train_and_validate_on_the_same_two_pairs(tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="wordformer.data"):
        corpus = prepare_corpus(pairs_cfg(tmp_path), block_size=8)
    tok = corpus.tokenizer
    assert corpus.mode == "pairs" and corpus.val_is_train and "reuses the training pairs" in caplog.text
    assert [tok.decode(p.tolist()) for p in corpus.train_pairs] == [
        "what is statquest <eos> awesome <eos>",
        "statquest is what <eos> awesome <eos>",
    ]
    assert corpus.train_answer_starts == [4, 4]
    x, y = next(iter(WordDataModule(corpus, block_size=8, batch_size=4).train_dataloader()))
    assert x.shape == y.shape == (4, 5) and x.dtype == torch.long


def test_enough_pairs_keep_at_least_one_on_each_side(tmp_path: Path):
    lines = "".join(f"prompt {i}\tanswer {i}\n" for i in range(10))
    corpus = prepare_corpus(pairs_cfg(tmp_path, lines, val_fraction=0.2), block_size=16)
    assert (len(corpus.train_pairs), len(corpus.val_pairs)) == (8, 2) and not corpus.val_is_train


def test_pairs_are_padded_with_pad_and_ignored_targets(tmp_path: Path):
    corpus = prepare_corpus(pairs_cfg(tmp_path, "a b c d\tyes\nq\tno\n"), block_size=16)
    pad = corpus.tokenizer.pad_id
    x, y = data.pad_pairs(corpus.train_pairs, pad)  # lengths 7 and 4
    assert x.shape == y.shape == (2, 6)
    assert x[1, 3:].tolist() == [pad] * 3 and y[1, 3:].tolist() == [-100] * 3
    assert y[1, :3].tolist() == corpus.train_pairs[1][1:].tolist()
    assert torch.equal(x[0, 1:], y[0, :-1])


def test_long_prompts_are_cut_from_the_left(tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="wordformer.data"):
        corpus = prepare_corpus(pairs_cfg(tmp_path, "one two three four five six\tok\n"), block_size=4)
    assert corpus.tokenizer.decode(corpus.train_pairs[0].tolist()) == "five six <eos> ok <eos>"  # 5 = block_size + 1
    assert corpus.train_answer_starts == [3] and "cut from the left" in caplog.text


def test_an_answer_too_long_for_the_block_is_refused(tmp_path: Path):
    with pytest.raises(WordformerError, match="pair 1.*larger --block-size"):
        prepare_corpus(pairs_cfg(tmp_path, "q\ta b c d e f\n"), block_size=4)


def test_pairs_mode_needs_a_data_file():
    with pytest.raises(WordformerError, match="--data"):
        prepare_corpus(DataConfig(pairs=True), block_size=8)


def test_pairs_validation_covers_every_val_pair_in_fixed_batches(tmp_path: Path):
    lines = "".join(f"p {i}\ta {i}\n" for i in range(30))
    corpus = prepare_corpus(pairs_cfg(tmp_path, lines, val_fraction=0.5), block_size=8)
    batches = list(WordDataModule(corpus, 8, batch_size=4).val_dataloader())
    assert [len(b[0]) for b in batches] == [4, 4, 4, 3]


# ---------------------------------------------------------------------------------------------- batches


@pytest.fixture()
def text_corpus(tmp_path: Path) -> Corpus:
    return prepare_corpus(text_cfg(tmp_path), block_size=8)


def test_text_batches_are_long_windows_with_y_shifted_by_one(text_corpus: Corpus):
    x, y = next(iter(WordDataModule(text_corpus, block_size=8, batch_size=5).train_dataloader()))
    assert x.shape == y.shape == (5, 8) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    ids = torch.from_numpy(np.asarray(text_corpus.train_ids).astype(np.int64))
    for row_x, row_y in zip(x, y):  # every window is a real slice of the training stream
        starts = [s for s in range(len(ids) - 8) if torch.equal(ids[s:s + 8], row_x)]
        assert any(torch.equal(ids[s + 1:s + 9], row_y) for s in starts)


def test_the_same_seed_and_batch_number_give_the_same_batch(text_corpus: Corpus):
    a = WordDataModule(text_corpus, 8, 4, seed=7).train_set
    b = WordDataModule(text_corpus, 8, 4, seed=7).train_set
    assert all(torch.equal(p, q) for p, q in zip(a.batch(3), b.batch(3)))
    assert not torch.equal(a.batch(3)[0], a.batch(4)[0])
    assert not torch.equal(a.batch(3)[0], WordDataModule(text_corpus, 8, 4, seed=8).train_set.batch(3)[0])


def test_start_batch_resumes_the_batch_sequence(text_corpus: Corpus):
    dm = WordDataModule(text_corpus, 8, 4, seed=1)
    it = iter(dm.train_dataloader())
    full = [next(it)[0] for _ in range(6)]
    dm.trainer = SimpleNamespace(global_step=2, global_rank=0, world_size=1)  # a resumed trainer, 2 optimiser steps in
    dm.grad_accum = 2
    resumed = next(iter(dm.train_dataloader()))[0]
    assert dm.train_set.start_batch == 4 and torch.equal(resumed, full[4])


def test_text_validation_batches_are_fixed(text_corpus: Corpus):
    dm = WordDataModule(text_corpus, 8, 3, eval_batches=5)
    first, second = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert len(first) == 5 and first[0][0].shape == (3, 8)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"block_size": True}, {"eval_batches": -1}, {"grad_accum": 1.5}])
def test_data_module_refuses_bad_sizes(text_corpus: Corpus, kw):
    args = {"block_size": 8, "batch_size": 4, **kw}
    extra = {k: args.pop(k) for k in ("eval_batches", "grad_accum") if k in args}
    with pytest.raises(WordformerError, match="must be an integer"):
        WordDataModule(text_corpus, args["block_size"], args["batch_size"], **extra)


def test_data_module_refuses_a_block_size_the_corpus_cannot_fill(text_corpus: Corpus):
    with pytest.raises(WordformerError, match="smaller --block-size"):
        WordDataModule(text_corpus, block_size=10_000, batch_size=2)


def _recording_module(seen: list[torch.Tensor], vocab_size: int):
    """The smallest LightningModule that trains and records every training batch it sees."""
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(vocab_size, 1)

        def training_step(self, batch, batch_idx):
            seen.append(batch[0].clone())
            return self.emb(batch[0]).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


def _fit(corpus: Corpus, root: Path, max_steps: int, ckpt: str | None = None) -> tuple[list[torch.Tensor], object]:
    """Train with grad_accum=2 (two batches per step) and return the batches seen and the trainer."""
    import lightning as L

    seen: list[torch.Tensor] = []
    trainer = L.Trainer(max_steps=max_steps, accumulate_grad_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=str(root))
    trainer.fit(_recording_module(seen, corpus.tokenizer.vocab_size), datamodule=WordDataModule(corpus, 8, 2, seed=3, grad_accum=2), ckpt_path=ckpt)
    return seen, trainer


def test_a_resumed_lightning_run_continues_the_same_batches(text_corpus: Corpus, tmp_path: Path):
    straight, _ = _fit(text_corpus, tmp_path, max_steps=3)
    first, trainer = _fit(text_corpus, tmp_path, max_steps=1)
    trainer.save_checkpoint(tmp_path / "step1.ckpt")
    resumed, _ = _fit(text_corpus, tmp_path, max_steps=3, ckpt=str(tmp_path / "step1.ckpt"))
    assert len(straight) == 6 and len(first) == 2 and len(resumed) == 4
    assert all(torch.equal(a, b) for a, b in zip(first + resumed, straight))


def test_epoch_sampling_sees_every_window_once_per_epoch(text_corpus):
    dm = WordDataModule(text_corpus, 8, 4, seed=3, sampling="epoch")
    order = dm.train_set.order
    windows = (len(text_corpus.train_ids) - 1) // 8
    starts = torch.cat([order.items(n) for n in range(order.per_epoch)])
    assert len(set(starts.tolist())) == len(starts) == order.per_epoch * 4 <= windows
    second = torch.cat([order.items(n) for n in range(order.per_epoch, 2 * order.per_epoch)])
    assert not torch.equal(starts, second)  # reshuffled
    x, y = dm.train_set.batch(0)
    assert torch.equal(x[:, 1:], y[:, :-1])
    fresh = WordDataModule(text_corpus, 8, 4, seed=3, sampling="epoch").train_set
    assert torch.equal(fresh.batch(order.per_epoch + 1)[0], dm.train_set.batch(order.per_epoch + 1)[0])
