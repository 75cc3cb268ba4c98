"""Run folders: what ``wordformer train`` writes where, and the guards that keep a folder truthful.

A run folder ``OUT`` holds ``best.ckpt`` (lowest validation loss), ``last.ckpt`` (the latest evaluation,
what ``--resume`` continues from) and ``logs/csv/metrics.csv`` + ``logs/tensorboard``. The guards here
decide, before any slow work, whether a command may write into it: an earlier run is never replaced
without ``--overwrite``, a resume keeps its architecture and optimizer, ``wordformer demo`` replaces only
folders it made itself. No Lightning here: these checks run before the trainer is built.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from .config import DataConfig, ModelConfig, TrainConfig
from .errors import WordformerError
from .files import check_writable_folder, temp_prefix

log = logging.getLogger(__name__)

BEST, LAST = "best.ckpt", "last.ckpt"
METRICS_CSV = Path("logs") / "csv" / "metrics.csv"
TENSORBOARD = Path("logs") / "tensorboard"
DEMO_MARK = ".wordformer-demo"  # `wordformer demo` marks the folders it may replace on its next run


def run_checkpoint(path: Path) -> Path:
    """What ``--checkpoint`` means by a run folder (the ``--out`` of ``wordformer train``): its ``best.ckpt``;
    any other path is returned as it is."""
    return path / BEST if path.is_dir() and (path / BEST).is_file() else path


def check_out_dir(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an earlier run, and an output folder that cannot be written (making the folder)."""
    refuse_earlier_run(out_dir, resume=resume, overwrite=overwrite)
    check_writable_folder(out_dir, advice="choose another --out")


def refuse_earlier_run(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an earlier run without --overwrite; reads only, so it may run before anything else."""
    existing = [p for p in (out_dir / BEST, out_dir / LAST, out_dir / METRICS_CSV) if p.exists()]
    tensorboard = out_dir / TENSORBOARD
    if not existing and tensorboard.is_dir() and any(tensorboard.iterdir()):
        existing = [tensorboard]
    if existing and not resume and not overwrite:
        go_on = f"continue it with --resume {out_dir}, " if (out_dir / LAST).is_file() else ""
        raise WordformerError(
            f"{out_dir} already holds a run ({existing[0].relative_to(out_dir)}); {go_on}"
            "choose another --out, or pass --overwrite to replace it"
        )


def check_demo_out(out: Path) -> None:
    """The demo replaces its own earlier output, never a run that ``wordformer train`` made."""
    if not out.is_dir() or (out / DEMO_MARK).exists():
        return
    held = [p for p in (out / LAST, out / BEST, out / "logs") if p.exists()]
    if held:  # `wordformer train` into the folder (a resume too) removes the mark: the run is the user's now
        raise WordformerError(f"{out} holds a training run that `wordformer demo` did not make (or one it did not "
                              "finish); choose another --out for the demo, or delete the folder")


def mark_demo(out: Path) -> None:
    """Say in the folder that ``wordformer demo`` made it, so its next run may replace it."""
    (out / DEMO_MARK).write_text("made by `wordformer demo`, which replaces this folder on its next run\n")


def claim_for_training(out: Path) -> None:
    """The folder now holds a run of ``wordformer train``: the demo must never replace it."""
    (out / DEMO_MARK).unlink(missing_ok=True)


def remove_stale_temp_checkpoints(out_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint saves that a killed process never renamed into place.

    Only the names :func:`wordformer.files.atomic_write` makes for this run's checkpoints
    (``.best.ckpt.*.tmp``, ``.last.ckpt.*.tmp``); the checkpoints themselves were never touched by a
    half-finished save.
    """
    removed = []
    for name in (BEST, LAST):
        for tmp in out_dir.glob(f"{temp_prefix(Path(name))}*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:  # gone already, or not ours to remove: harmless either way
                pass
    if removed:
        log.info("removed %d unfinished checkpoint save(s) in %s", len(removed), out_dir)
    return removed


def interrupted_message(step: int, out_dir: Path, saved: int | None) -> str:
    """Where an interrupted run stands: what was reached, what ``last.ckpt`` holds (``saved``), how to go on."""
    last = out_dir / LAST
    if saved is None:
        return f"at step {step}, before the first checkpoint; nothing was saved"
    if saved == step:
        return f"at step {step}, saved in {last} — continue with: wordformer train --resume {out_dir}"
    return (f"at step {step}; {last} holds step {saved} (Ctrl-C once saves the step reached; a second Ctrl-C stops at "
            f"once) — continue with: wordformer train --resume {out_dir}")


# ------------------------------------------------------------------------------------------ resume


def resume_folder(folder: str, out: str | None) -> Path:
    """The run folder ``--resume`` names, refused in one line when it holds nothing to continue."""
    path = Path(folder)
    if not folder.strip() or not (path / LAST).is_file():
        raise WordformerError(f"nothing to resume in {folder!r}: it holds no {LAST}; give the --out folder of an "
                              "earlier `wordformer train`")
    if out is not None and Path(out).resolve() != path.resolve():
        raise WordformerError(f"--resume {path} continues that run in its own folder; drop --out {out} (to branch "
                              "off, copy the folder first and resume the copy)")
    return path


RESTORED_OPTIMIZER = ("lr", "beta1", "beta2", "weight_decay",  # Lightning restores these with the optimizer state
                      "optimizer", "muon_lr", "muon_momentum", "muon_momentum_start", "muon_momentum_warmup",
                      "muon_weight_decay", "muon_split_qkv")


def check_same_optimizer(train: TrainConfig, saved: TrainConfig, checkpoint: Path) -> None:
    """The optimizer resumes with its saved settings; a new value would be recorded but never used."""
    changed = [f"{k} {getattr(saved, k)!r} -> {getattr(train, k)!r}" for k in RESTORED_OPTIMIZER
               if getattr(train, k) != getattr(saved, k)]
    if changed:
        raise WordformerError(f"cannot change the optimizer when resuming ({', '.join(changed)}): it continues with "
                              f"the settings saved in {checkpoint}; drop those options, or start a new run with --out")


def check_same_model(model: ModelConfig, saved: ModelConfig, checkpoint: Path) -> None:
    """A resumed run keeps its architecture: other sizes would not load, and some (heads) would load and
    silently reinterpret the weights."""
    mine, theirs = asdict(model), asdict(saved)
    changed = [f"{k} {theirs[k]!r} -> {mine[k]!r}" for k in mine if k != "vocab_size" and mine[k] != theirs[k]]
    if changed:
        raise WordformerError(f"cannot change the model when resuming ({', '.join(changed)}); {checkpoint} was "
                              "trained with the former: drop those options, or start a new run with --out")


def check_resumable(model: ModelConfig, data: DataConfig, train: TrainConfig, saved: tuple[ModelConfig, TrainConfig],
                    step: int, checkpoint: Path) -> None:
    """Everything a resume must keep, checked before any work: architecture, optimizer, steps left, corpus."""
    check_same_model(model, saved[0], checkpoint)
    check_same_optimizer(train, saved[1], checkpoint)
    if train.max_steps <= step:
        raise WordformerError(f"{checkpoint} is already at step {step}; to train further, resume with --max-steps "
                              f"above {step}")
    if data.data and not Path(data.data).exists():
        raise WordformerError(f"{checkpoint} was trained on {data.data}, which is gone; resume with --data PATH "
                              "pointing at the same text")
