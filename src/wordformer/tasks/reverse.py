"""Tutorial 6's sequence-reversal task: output position i must copy input position T-1-i.

A model can only solve it by attending from each position to its mirror, so a trained model's attention
map is the anti-diagonal, which makes the task a clean check of the attention mechanism.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import WordformerError, check_int
from .checkpoints import check_task_out, load_task_checkpoint, save_task_checkpoint
from .encoder import EncoderConfig
from .module import TaskModule, evaluate_module, fit

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
TEST_SEED = 1234  # fixed, so every model is tested on the same 10,000 sequences
CHECKPOINT_NAME = "reverse.ckpt"


def _stream_seed(seed: int, stream: int) -> int:
    """Independent seeds for the train/val/test streams of one run (no overlap for neighbouring seeds)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


@dataclass
class ReverseConfig:
    """Data, model and optimiser settings; the defaults are the tutorial's."""

    num_categories: int = 10
    seq_len: int = 16
    train_size: int = 50_000
    val_size: int = 1_000
    test_size: int = 10_000
    batch_size: int = 128
    model_dim: int = 32
    num_heads: int = 1
    num_layers: int = 1
    dropout: float = 0.0
    input_dropout: float = 0.0
    lr: float = 5e-4
    warmup: int = 50
    gradient_clip: float = 5.0

    def __post_init__(self) -> None:
        for name in ("num_categories", "seq_len", "train_size", "val_size", "test_size", "batch_size"):
            check_int(name, getattr(self, name))
        if self.train_size < self.batch_size:
            raise WordformerError(f"train_size={self.train_size} is below batch_size={self.batch_size}: no full batch to train on")
        if isinstance(self.gradient_clip, bool) or not isinstance(self.gradient_clip, (int, float)) or self.gradient_clip < 0:
            raise WordformerError(f"gradient_clip={self.gradient_clip!r} must be a number >= 0 (0 turns clipping off)")
        self.model_config()  # validates the architecture fields

    def model_config(self) -> EncoderConfig:
        return EncoderConfig(
            input_dim=self.num_categories,
            model_dim=self.model_dim,
            num_classes=self.num_categories,
            num_heads=self.num_heads,
            num_layers=self.num_layers,
            dropout=self.dropout,
            input_dropout=self.input_dropout,
            positional_encoding=True,
        )


class ReverseDataset(Dataset):
    """``size`` random sequences of ``seq_len`` categories; the label is the sequence reversed."""

    def __init__(self, num_categories: int, seq_len: int, size: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.data = torch.randint(num_categories, (size, seq_len), generator=generator)  # (N, T)
        self.labels = torch.flip(self.data, dims=(1,))  # (N, T)

    def __len__(self) -> int:
        return self.data.size(0)

    def __getitem__(self, idx: int) -> tuple[Tensor, Tensor]:
        return self.data[idx], self.labels[idx]


class ReverseModule(TaskModule):
    """Token ids in (one-hot by ``prepare_input``), one class per position out; cross-entropy over every position."""

    def _calculate_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        inputs, labels = batch[0], batch[-1]  # (B, T), (B, T)
        preds = self(inputs)  # (B, T, K)
        loss = F.cross_entropy(preds.reshape(-1, preds.size(-1)), labels.reshape(-1))
        acc = (preds.argmax(dim=-1) == labels).float().mean()
        return loss, acc


@dataclass
class ReverseResult:
    """What :func:`train_reverse` produced."""

    checkpoint: Path
    test_accuracy: float
    test_loss: float
    val_accuracy: float
    seconds: float


def train_reverse(
    out_dir: PathLike,
    *,
    epochs: int = 10,
    seed: int = 42,
    config: Optional[ReverseConfig] = None,
    accelerator: str = "auto",
    test_seed: int = TEST_SEED,
    overwrite: bool = False,
) -> ReverseResult:
    """Train the tutorial's reverse predictor, test it, and write ``out_dir/reverse.ckpt``.

    An existing ``reverse.ckpt`` is refused before training unless ``overwrite``: a short run must not
    silently replace a better model.
    """
    check_int("epochs", epochs)
    check_int("seed", seed, 0)
    cfg = config or ReverseConfig()
    out = Path(out_dir)
    target = check_task_out(out, CHECKPOINT_NAME, task="reverse", overwrite=overwrite)
    start = time.perf_counter()
    torch.manual_seed(seed)  # model init and dropout
    train_set = ReverseDataset(cfg.num_categories, cfg.seq_len, cfg.train_size, _stream_seed(seed, 0))
    val_set = ReverseDataset(cfg.num_categories, cfg.seq_len, cfg.val_size, _stream_seed(seed, 1))
    test_set = ReverseDataset(cfg.num_categories, cfg.seq_len, cfg.test_size, _stream_seed(test_seed, 2))
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed)
    )
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size)
    module = ReverseModule(cfg.model_config().to_dict(), lr=cfg.lr, warmup=cfg.warmup, max_iters=epochs * len(train_loader))
    val_acc = fit(module, train_loader, val_loader, epochs=epochs, gradient_clip=cfg.gradient_clip, out_dir=out, accelerator=accelerator)
    test = evaluate_module(module, DataLoader(test_set, batch_size=512))
    seconds = time.perf_counter() - start
    log.info("reverse: test accuracy %.4f after %d epochs (%.1fs)", test["accuracy"], epochs, seconds)
    path = save_task_checkpoint(
        target,
        overwrite=overwrite,
        task="reverse",
        model=module.model,
        hparams={**dict(module.hparams), "epochs": epochs, "seed": seed},
        data={"num_categories": cfg.num_categories, "seq_len": cfg.seq_len, "test_seed": test_seed, "config": asdict(cfg)},
        metrics={"test_accuracy": test["accuracy"], "test_loss": test["loss"], "val_accuracy": val_acc},
    )
    return ReverseResult(path, test["accuracy"], test["loss"], val_acc, seconds)


def load_reverse_module(checkpoint_path: PathLike) -> tuple[ReverseModule, dict[str, Any]]:
    """A :class:`ReverseModule` with the weights of ours or the tutorial's ``ReverseTask.ckpt``, plus data info."""
    loaded = load_task_checkpoint(checkpoint_path, expect="reverse")
    module = ReverseModule(loaded.model.config.to_dict())
    module.model.load_state_dict(loaded.model.state_dict())
    module.eval()
    return module, loaded.data


def evaluate_reverse(
    checkpoint_path: PathLike,
    *,
    num_test: int = 10_000,
    seed: int = TEST_SEED,
    seq_len: Optional[int] = None,
    batch_size: int = 512,
    device: str = "cpu",
) -> dict[str, float]:
    """Accuracy and loss of a reverse checkpoint on ``num_test`` fresh random sequences.

    ``seq_len`` defaults to the length the model was trained on (16 for the tutorial's checkpoint).
    """
    check_int("num_test", num_test)
    check_int("batch_size", batch_size)
    module, data = load_reverse_module(checkpoint_path)
    length = seq_len if seq_len is not None else data.get("seq_len", 16)  # a damaged file may hold anything
    check_int("seq_len", length)
    test_set = ReverseDataset(module.model.config.input_dim, length, num_test, _stream_seed(seed, 2))
    result = evaluate_module(module, DataLoader(test_set, batch_size=batch_size), device)
    return {"accuracy": result["accuracy"], "loss": result["loss"], "num_sequences": float(num_test)}


def reverse_attention_maps(checkpoint_path: PathLike, sequences: Tensor) -> list[Tensor]:
    """Per-layer attention (B, H, T, T) of a reverse checkpoint on token ids ``sequences`` (B, T)."""
    if not isinstance(sequences, Tensor) or sequences.dim() != 2 or sequences.is_floating_point():
        raise WordformerError("sequences must be an integer tensor of token ids with shape (batch, length)")
    module, _ = load_reverse_module(checkpoint_path)
    vocab = module.model.config.input_dim
    if int(sequences.min()) < 0 or int(sequences.max()) >= vocab:
        raise WordformerError(f"token ids must lie in [0, {vocab}): the model knows {vocab} categories")
    return module.get_attention_maps(sequences)
