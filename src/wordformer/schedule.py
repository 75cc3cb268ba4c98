"""Learning-rate schedule: linear warm-up, then cosine decay to a floor, stepped once per batch.

Warm-up keeps the first updates small while Adam's moment estimates are still noisy; the cosine
decay then anneals towards ``min_lr`` (as in uvadlc tutorial 6's CosineWarmupScheduler and nanoGPT).
"""

from __future__ import annotations

import math


def learning_rate(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based)."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
