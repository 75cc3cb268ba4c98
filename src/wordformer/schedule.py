"""Learning-rate schedules, stepped once per batch: linear warm-up, then cosine decay or warm-up–stable–decay.

Warm-up keeps the first updates small while Adam's moment estimates are still noisy. ``cosine`` then anneals
towards ``min_lr`` over the rest of the run (as in uvadlc tutorial 6's CosineWarmupScheduler and nanoGPT).
``wsd`` (warm-up, stable, decay; MiniCPM, the modded-nanogpt speedruns) holds the peak rate and decays linearly
to ``min_lr`` only over the last ``cooldown_fraction`` of the steps: most of the run learns at full speed, and
the cool-down at the end harvests it.

A resumed run that trains past (or short of) the ``max_steps`` it was started with does not recompute
that curve for the new length, which would make the rate jump (from the floor at step 599 of a 600-step
run to 3.6e-4 ten steps later): its :class:`Schedule` goes on as saved (``continue``, the default: at the
floor once the old curve ends), or appends a new cosine decay from the resume step to the new
``max_steps`` (``decay``: starting at the rate reached; ``restart``: starting at the peak ``lr`` again).
The schedule travels in the checkpoint, so a second resume continues the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

from .config import TrainConfig
from .errors import WordformerError, check_choice

RESUME_SCHEDULES = ("continue", "decay", "restart")


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


def cosine_decay(step: int, *, start: int, end: int, start_lr: float, min_lr: float) -> float:
    """Half a cosine from ``start_lr`` at step ``start`` down to ``min_lr`` at step ``end``, the floor after it."""
    if step >= end:
        return min_lr
    progress = max(0, step - start) / max(1, end - start)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (start_lr - min_lr)


@dataclass(frozen=True)
class Decay:
    """A cosine decay a resume started: from ``start_lr`` at step ``start`` to ``min_lr`` at step ``end``."""

    start: int
    end: int
    start_lr: float
    min_lr: float


@dataclass(frozen=True)
class Schedule:
    """The rate of every optimiser step of a run: the warm-up + cosine curve of its options, then the decays
    that resumes with another ``--max-steps`` added (the latest one that has begun governs)."""

    lr: float
    min_lr: float
    warmup_steps: int
    max_steps: int
    decays: tuple[Decay, ...] = ()
    kind: str = "cosine"  # the run's own curve: "cosine" or "wsd" (decays a resume adds are cosine)
    cooldown_fraction: float = 0.2  # wsd: the share of the steps that decay

    @classmethod
    def of(cls, train: TrainConfig) -> "Schedule":
        """The curve a run's options describe, before any resume changed its length."""
        return cls(train.lr, train.min_lr, train.warmup_steps, train.max_steps, kind=train.schedule,
                   cooldown_fraction=train.cooldown_fraction)

    def rate(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based)."""
        for decay in reversed(self.decays):
            if step >= decay.start:
                return cosine_decay(step, start=decay.start, end=decay.end, start_lr=decay.start_lr,
                                    min_lr=decay.min_lr)
        return learning_rate(step, lr=self.lr, min_lr=self.min_lr, warmup_steps=self.warmup_steps,
                             max_steps=self.max_steps, schedule=self.kind, cooldown_fraction=self.cooldown_fraction)

    def resumed(self, step: int, max_steps: int, how: str, *, min_lr: Optional[float] = None) -> "Schedule":
        """The schedule of a run resumed at ``step`` to train until ``max_steps``; ``how`` is one of
        ``RESUME_SCHEDULES`` (``min_lr``: the floor of a new decay, default the schedule's own)."""
        check_choice("resume_schedule", how, RESUME_SCHEDULES)
        if how == "continue":
            return self
        # step `step` itself runs at the rate its checkpoint's optimizer holds (the saved schedule's): the new
        # decay starts with the next one, at the rate reached (decay) or at the peak (restart)
        start_lr = self.rate(step) if how == "decay" else self.lr
        floor = self.min_lr if min_lr is None else min_lr
        return replace(self, decays=self.decays + (Decay(step + 1, max_steps, start_lr, floor),))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the checkpoint (``info["lr_schedule"]``)."""
        return {"lr": self.lr, "min_lr": self.min_lr, "warmup_steps": self.warmup_steps, "max_steps": self.max_steps,
                "decays": [[d.start, d.end, d.start_lr, d.min_lr] for d in self.decays], "kind": self.kind,
                "cooldown_fraction": self.cooldown_fraction}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> "Schedule":
        try:
            decays = tuple(Decay(int(s), int(e), float(a), float(b)) for s, e, a, b in raw.get("decays", ()))
            return cls(float(raw["lr"]), float(raw["min_lr"]), int(raw["warmup_steps"]), int(raw["max_steps"]), decays,
                       str(raw.get("kind", "cosine")), float(raw.get("cooldown_fraction", 0.2)))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise WordformerError(f"{where} holds a damaged learning-rate schedule ({raw!r:.80}); start a new run "
                                  "with --out") from None


def saved_schedule(info: dict[str, Any], train: TrainConfig, where: str) -> Schedule:
    """The schedule a checkpoint trained with: recorded in its info, or (older files) its training options."""
    raw = info.get("lr_schedule")
    return Schedule.from_dict(raw, where) if raw is not None else Schedule.of(train)


def describe_resume(saved: Schedule, step: int, old_max: int, new_max: int, how: str,
                    min_lr: Optional[float] = None) -> str:
    """One line for a resume that changes ``max_steps``: what the rate does now, and what the other choices
    would do, with the numbers (``min_lr``: the floor of a new decay)."""
    def course(other: str) -> str:
        schedule = saved.resumed(step, new_max, other, min_lr=min_lr)
        first, last = step + 1, new_max - 1
        return f"{schedule.rate(first):.2e} at step {first} -> {schedule.rate(last):.2e} at step {last}"

    what = {"continue": "continues its saved schedule", "decay": "decays anew from the rate reached",
            "restart": "restarts at the peak lr and decays anew"}[how]
    others = "; ".join(f"{other}: {course(other)}" for other in RESUME_SCHEDULES if other != how)
    return (f"resuming at step {step} with --max-steps {new_max} (the run was set for {old_max}): the learning rate "
            f"{what}, {course(how)} (--resume-schedule {others})")


__all__ = ["Decay", "RESUME_SCHEDULES", "Schedule", "cosine_decay", "describe_resume", "learning_rate",
           "saved_schedule"]
