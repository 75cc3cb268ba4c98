"""The tutorial's Lightning training loop, shared by the tasks; subclasses only say how a batch is scored.

As in the tutorial, ``TaskModule`` owns the model, the Adam optimiser and the per-step cosine warm-up
schedule; ``ReverseModule`` and ``AnomalyModule`` override ``_calculate_loss`` and nothing else.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from ..errors import WordformerError, check_int
from .encoder import EncoderConfig, EncoderPredictor


def cosine_warmup_factor(step: int, warmup: int, max_iters: int) -> float:
    """Learning-rate multiplier at optimiser step ``step``: half a cosine over ``max_iters``, ramped up linearly.

    The tutorial's schedule: the cosine alone would start at full rate, and Adam's first steps on a
    post-norm transformer are unstable at full rate, hence the linear warm-up factor ``step / warmup``.
    """
    factor = 0.5 * (1.0 + math.cos(math.pi * step / max_iters))
    if warmup > 0 and step <= warmup:
        factor *= step / warmup
    return factor


class TaskModule(L.LightningModule):
    """Model + optimiser + schedule; ``_calculate_loss`` (per task) turns a batch into (loss, accuracy)."""

    def __init__(self, model_config: Mapping[str, Any], lr: float = 5e-4, warmup: int = 50, max_iters: int = 1000):
        super().__init__()
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise WordformerError(f"lr={lr!r} must be a positive number")
        check_int("warmup", warmup, 0)
        check_int("max_iters", max_iters)
        self.save_hyperparameters({"model_config": dict(model_config), "lr": lr, "warmup": warmup, "max_iters": max_iters})
        self.model = EncoderPredictor(EncoderConfig.from_dict(model_config))

    def prepare_input(self, x: Tensor) -> Tensor:
        """Raw task input -> model features (B, T, F): integer category ids (B, T) become one-hot vectors."""
        if x.is_floating_point():
            return x
        return F.one_hot(x.long(), num_classes=self.model.config.input_dim).float()  # (B, T, K)

    def _calculate_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        """(loss, accuracy) of one batch: the only method the tasks override."""
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return self.model(self.prepare_input(x), mask)  # (B, T, K)

    def get_attention_maps(self, x: Tensor, mask: Optional[Tensor] = None) -> list[Tensor]:
        """Per-layer attention (B, H, T, T) for raw task input ``x``."""
        return self.model.get_attention_maps(self.prepare_input(x), mask)

    def _step(self, batch: Any, mode: str) -> Tensor:
        loss, acc = self._calculate_loss(batch)
        size = len(batch[-1])
        self.log(f"{mode}_loss", loss, batch_size=size, on_step=False, on_epoch=True)
        self.log(f"{mode}_acc", acc, batch_size=size, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        warmup, max_iters = self.hparams.warmup, self.hparams.max_iters
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_warmup_factor(step, warmup, max_iters))
        # Stepped after every optimiser step, not every epoch, as the tutorial's optimizer_step override did.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class _KeepBest(L.Callback):
    """Remember the weights with the best validation accuracy (the tutorial's ModelCheckpoint on val_acc)."""

    def __init__(self) -> None:
        self.best_acc = -math.inf
        self.state: Optional[dict[str, Tensor]] = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        acc = trainer.callback_metrics.get("val_acc")
        if acc is not None and float(acc) > self.best_acc:
            self.best_acc = float(acc)
            self.state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}


def fit(
    module: TaskModule,
    train_loader: DataLoader,
    val_loader: DataLoader,
    *,
    epochs: int,
    gradient_clip: float,
    out_dir: Path,
    accelerator: str = "auto",
) -> float:
    """Train with Lightning, then load the best-validation weights into ``module``; returns that accuracy."""
    keep = _KeepBest()
    trainer = L.Trainer(
        default_root_dir=str(out_dir),
        max_epochs=epochs,
        gradient_clip_val=gradient_clip,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[keep],
    )
    trainer.fit(module, train_loader, val_loader)
    if keep.state is not None:
        module.load_state_dict(keep.state)
    module.cpu()
    return keep.best_acc


@torch.no_grad()
def evaluate_module(module: TaskModule, loader: DataLoader, device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean loss and accuracy over ``loader`` without a Trainer (no logging side effects)."""
    module = module.to(device)
    was_training = module.training
    module.eval()
    total_loss, total_acc, count = 0.0, 0.0, 0
    for batch in loader:
        batch = [b.to(device) if isinstance(b, Tensor) else b for b in batch]
        loss, acc = module._calculate_loss(batch)
        size = len(batch[-1])
        total_loss += float(loss) * size
        total_acc += float(acc) * size
        count += size
    module.train(was_training)
    if count == 0:
        raise WordformerError("the evaluation set is empty: use at least one test item")
    return {"accuracy": total_acc / count, "loss": total_loss / count, "count": count}

