"""Learning-rate schedules, stepped once per batch: linear warm-up, then cosine decay or warm-up–stable–decay.

Warm-up keeps the first updates small while Adam's moment estimates are still noisy. ``cosine`` then anneals
towards ``min_lr`` over the rest of the run (as in uvadlc tutorial 6's CosineWarmupScheduler and nanoGPT).
``wsd`` (warm-up, stable, decay; MiniCPM, the modded-nanogpt speedruns) holds the peak rate and decays linearly
to ``min_lr`` only over the last ``cooldown_fraction`` of the steps: most of the run learns at full speed, and
the cool-down at the end harvests it.
"""

from __future__ import annotations

import math


def learning_rate(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int,
                  schedule: str = "cosine", cooldown_fraction: float = 0.2) -> float:
    """Learning rate for optimiser step ``step`` (0-based)."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= max_steps:
        return min_lr
    if schedule == "wsd":
        cooldown = max(1, round(cooldown_fraction * max_steps))
        start = max(warmup_steps, max_steps - cooldown)  # the decay never eats into the warm-up
        if step < start:
            return lr
        progress = (step - start) / max(1, max_steps - start)  # 0 -> 1
        return lr + (min_lr - lr) * progress
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}")
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
