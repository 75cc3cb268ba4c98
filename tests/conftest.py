"""Shared fixtures: small corpora, an isolated cache, one tiny trained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tiny test models run fastest on one thread, and extra threads thrash a busy 2-core machine.
torch.set_num_threads(1)

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"

TOY_PAIRS = "what is statquest\tawesome\nstatquest is what\tawesome\n"

SMALL_TEXT = "\n".join(
    [
        "the cat sat on the mat .",
        "the dog sat on the log .",
        "a cat and a dog ran to the park .",
        "the bird sang in the tree , and the cat watched .",
        "what is the cat doing ? the cat is sleeping .",
    ]
    * 12
)


def one_thread_env() -> dict[str, str]:
    """The environment for subprocesses (read when called: fixtures set WORDFORMER_CACHE per test), one thread."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``wordformer ARGV`` in-process: (exit code, stdout, stderr)."""
    from wordformer.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *words: str) -> str:
    """Exit 2, exactly one ``wordformer: error:`` line holding ``words``, no traceback."""
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("wordformer: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own corpus cache, so no test sees another's cached tokenization."""
    monkeypatch.setenv("WORDFORMER_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def small_text(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(SMALL_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def toy_pairs(tmp_path) -> Path:
    path = tmp_path / "toy.tsv"
    path.write_text(TOY_PAIRS, encoding="utf-8")
    return path


TINY_TRAIN = [
    "--d-model", "16", "--num-heads", "2", "--num-layers", "1", "--block-size", "8", "--batch-size", "4",
    "--max-steps", "12", "--eval-interval", "6", "--eval-batches", "2", "--warmup-steps", "2", "--no-progress",
]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny word-level run shared by the tests that only read a checkpoint."""
    from wordformer.cli import main

    root = tmp_path_factory.mktemp("run")
    data = root / "small.txt"
    data.write_text(SMALL_TEXT, encoding="utf-8")
    out = root / "out"
    code = main(["train", "--data", str(data), "--out", str(out), "--cache-dir", str(root / "cache"), *TINY_TRAIN])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def reverse_run(tmp_path_factory):
    """One short reverse-task training run (3 epochs, ~2 s), shared by the task tests."""
    from wordformer.tasks import ReverseConfig, train_reverse

    out = tmp_path_factory.mktemp("reverse")
    config = ReverseConfig(train_size=4800, val_size=256, test_size=1000, batch_size=64, lr=1e-2, warmup=10)
    return train_reverse(out, epochs=3, seed=0, config=config, accelerator="cpu")  # 1.0 for seeds 0-5
