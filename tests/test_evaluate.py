"""evaluate.py: held-out loss is the mean cross entropy over every target token once, accuracy the share of
argmax hits; the validation split of the training corpus is scored the same way."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import SMALL_TEXT
from wordformer.checkpoint import load_checkpoint
from wordformer.data import text_stream
from wordformer.errors import WordformerError
from wordformer.evaluate import evaluate

HELD_OUT = "the cat sat on the log .\nthe dog ran to the mat .\n" * 4


def by_hand(loaded, text: str) -> tuple[float, float, int]:
    """Non-overlapping windows of block_size + 1 tokens, scored in one batch."""
    ids = torch.from_numpy(text_stream(loaded.tokenizer, [text], loaded.data_config.eos_mode()).astype("int64"))
    block = loaded.model_config.block_size
    n = (len(ids) - 1) // block
    seqs = torch.stack([ids[i * block: i * block + block + 1] for i in range(n)])  # (N, T+1)
    with torch.no_grad():
        logits = loaded.model(seqs[:, :-1])  # (N, T, V)
    flat, target = logits.reshape(-1, logits.size(-1)), seqs[:, 1:].reshape(-1)
    return float(F.cross_entropy(flat, target)), float((flat.argmax(-1) == target).float().mean()), n * block


def test_held_out_text_is_scored_token_by_token(trained_run, tmp_path):
    loaded = load_checkpoint(trained_run / "best.ckpt")
    path = tmp_path / "held_out.txt"
    path.write_text(HELD_OUT)
    metrics = evaluate(loaded, str(path), batch_size=3)  # several batches: the sums must still add up
    loss, accuracy, tokens = by_hand(loaded, HELD_OUT)
    assert metrics["tokens"] == tokens
    assert metrics["loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert metrics["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)


def test_without_data_the_validation_split_of_the_training_text_is_scored(trained_run):
    loaded = load_checkpoint(trained_run / "best.ckpt")
    metrics = evaluate(loaded)
    assert metrics["tokens"] > 0 and math.isfinite(metrics["loss"])
    one_by_one = evaluate(loaded, batch_size=1)  # batching changes nothing but float rounding
    assert one_by_one["tokens"] == metrics["tokens"] and one_by_one["accuracy"] == metrics["accuracy"]
    assert one_by_one["loss"] == pytest.approx(metrics["loss"], rel=1e-6)
    assert metrics["tokens"] < len(text_stream(loaded.tokenizer, [SMALL_TEXT], "line")) / 2  # the tail, not all


def test_text_shorter_than_one_window_is_one_line(trained_run, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("the cat")
    with pytest.raises(WordformerError, match="fewer than block_size"):
        evaluate(load_checkpoint(trained_run / "best.ckpt"), str(path))
