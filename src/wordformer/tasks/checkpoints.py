"""Task checkpoints: ours (plain dicts of tensors and primitives) and the tutorial's, behind one loader.

Our files hold only what ``torch.load(weights_only=True)`` accepts, so reading them never runs code:
``{"format", "version", "task", "model_config", "state_dict", "hparams", "data", "metrics"}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor

from ..errors import WordformerError
from ..files import atomic_torch_save, check_writable_folder, file_in_the_way, make_folder
from .encoder import EncoderConfig, EncoderPredictor
from .loading import safe_load
from .tutorial import import_tutorial, is_tutorial_checkpoint

PathLike = Union[str, Path]
FORMAT = "wordformer-task"
FORMAT_VERSION = 1
TASKS = ("reverse", "anomaly")
REQUIRED = ("model_config", "state_dict")  # without these a file cannot make a model


@dataclass
class TaskCheckpoint:
    """A loaded task model, whichever file format it came from."""

    task: str
    model: EncoderPredictor
    source: str  # "wordformer" or "tutorial"
    hparams: dict[str, Any] = field(default_factory=dict)  # optimiser settings (lr, warmup, max_iters, ...)
    data: dict[str, Any] = field(default_factory=dict)  # how the task data was made (lengths, splits, ...)
    metrics: dict[str, Any] = field(default_factory=dict)


def with_article(word: str) -> str:
    """``an anomaly``, ``a reverse``: messages name the task with the right article."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def check_task_out(out_dir: PathLike, name: str, *, task: str, overwrite: bool) -> Path:
    """Make ``out_dir`` for a training run, refusing to replace its ``name`` unless ``overwrite``.

    Checked before training, so a refusal costs nothing; returns the checkpoint path to write.
    """
    out = Path(out_dir)
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise WordformerError(f"--out {out} cannot be a folder: {blocker} is a file; choose another --out")
    target = out / name
    if target.is_dir():
        raise WordformerError(f"{target} is a folder, so the {task} checkpoint cannot be written there; choose another --out")
    if target.exists() and not overwrite:
        raise WordformerError(
            f"{out} already holds {with_article(task)} checkpoint ({name}); choose another --out, "
            "or pass --overwrite to replace it"
        )
    check_writable_folder(out, advice="choose another --out")  # before the training it would otherwise waste
    return target


def non_finite_weights(model: torch.nn.Module) -> list[str]:
    """Names of the weights holding NaN or infinity: such a model only ever predicts garbage."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _names(names: list[str]) -> str:
    return ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")


def save_task_checkpoint(
    path: PathLike,
    *,
    task: str,
    model: EncoderPredictor,
    hparams: Mapping[str, Any],
    data: Mapping[str, Any],
    metrics: Mapping[str, Any],
    overwrite: bool = True,
) -> Path:
    """Write a weights-only-loadable checkpoint atomically (a crash never leaves half a file).

    ``overwrite=False`` re-checks at the end of a run that no other process wrote ``path`` meanwhile;
    a model with NaN or infinite weights is refused, so it can never replace a working one.
    """
    if task not in TASKS:
        raise WordformerError(f"task={task!r} must be one of: {', '.join(TASKS)}")
    broken = non_finite_weights(model)
    if broken:
        raise WordformerError(
            f"training diverged: weights {_names(broken)} hold NaN or infinite values, "
            "so no checkpoint was written; try another --seed"
        )
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "task": task,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "hparams": dict(hparams),
        "data": dict(data),
        "metrics": dict(metrics),
    }
    target = Path(path)
    if target.exists() and not overwrite:
        raise WordformerError(f"{target} appeared while training; it was kept: choose another --out, or pass --overwrite")
    make_folder(target.parent, advice="choose another --out")
    atomic_torch_save(payload, target)  # temp file, fsync, rename; the usual file permissions; one-line errors
    return target


def _damaged(path: Path, problem: str) -> WordformerError:
    return WordformerError(f"{path} is not a complete wordformer task checkpoint: {problem}; retrain it or use another file")


def _ours(raw: dict[str, Any], path: Path) -> TaskCheckpoint:
    if raw.get("version") != FORMAT_VERSION:
        raise WordformerError(f"{path} is a wordformer task checkpoint of version {raw.get('version')!r}: this build reads {FORMAT_VERSION}")
    task = raw.get("task")
    if task not in TASKS:
        raise WordformerError(f"{path} names an unknown task {task!r}: expected one of {', '.join(TASKS)}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise _damaged(path, f"it lacks the entry {missing[0]!r}")
    for key in ("model_config", "hparams", "data", "metrics"):
        if not isinstance(raw.get(key, {}), Mapping):
            raise _damaged(path, f"{key} must be a mapping, not {type(raw[key]).__name__}")
    state = raw["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise _damaged(path, "state_dict must map weight names to tensors")
    model = EncoderPredictor(EncoderConfig.from_dict(raw["model_config"]))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise WordformerError(f"{path}: weights do not match its model_config; the file is damaged") from None
    model.eval()
    return TaskCheckpoint(task, model, "wordformer", dict(raw.get("hparams", {})), dict(raw.get("data", {})), dict(raw.get("metrics", {})))


def load_task_checkpoint(path: PathLike, *, expect: Optional[str] = None) -> TaskCheckpoint:
    """Load ours or a tutorial checkpoint (never running pickled code); ``expect`` checks the task."""
    p = Path(path)
    raw = safe_load(p)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        loaded = _ours(raw, p)
    elif is_tutorial_checkpoint(raw):
        tut = import_tutorial(raw)
        hparams = {k: tut.hparams[k] for k in ("lr", "warmup", "max_iters") if k in tut.hparams}
        meta = {"lightning_version": tut.lightning_version}
        loaded = TaskCheckpoint(tut.task, tut.model, "tutorial", hparams, {}, meta)
    else:
        raise WordformerError(f"{p} is neither a wordformer task checkpoint nor a tutorial 6 TransformerPredictor checkpoint")
    broken = non_finite_weights(loaded.model)
    if broken:
        raise WordformerError(
            f"{p} holds NaN or infinite weights ({_names(broken)}): the model is unusable; "
            "retrain it or use another checkpoint"
        )
    if expect is not None and loaded.task != expect:
        raise WordformerError(
            f"{p} holds {with_article(loaded.task)} model, not {with_article(expect)} model: "
            f"use `wordformer task {loaded.task} test`"
        )
    return loaded
