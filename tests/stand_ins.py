"""What ``wordformer.training.train`` returns, for tuning tests that replace training by a cheap stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from wordformer.training import TrainResult


def train_result(out_dir: Path, val_loss: float, metrics: Optional[dict] = None, *, steps: int = 10,
                 num_parameters: int = 100) -> TrainResult:
    """The real result type, filled in as a run that did not train would have it."""
    out_dir = Path(out_dir)
    return TrainResult(out_dir=out_dir, best_checkpoint=out_dir / "best.ckpt", last_checkpoint=out_dir / "last.ckpt",
                       val_loss=val_loss, metrics=dict(metrics or {}), steps=steps, seconds=0.01,
                       num_parameters=num_parameters)
