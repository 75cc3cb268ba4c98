"""Task checkpoints: ours (plain dicts of tensors and primitives) and the tutorial's, behind one loader.

Our files hold only what ``torch.load(weights_only=True)`` accepts, so reading them never runs code:
``{"format", "version", "task", "model_config", "state_dict", "hparams", "data", "metrics"}``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor

from ..errors import WordformerError
from .encoder import EncoderConfig, EncoderPredictor
from .loading import safe_load
from .tutorial import import_tutorial, is_tutorial_checkpoint

PathLike = Union[str, Path]
FORMAT = "wordformer-task"
FORMAT_VERSION = 1
TASKS = ("reverse", "anomaly")


@dataclass
class TaskCheckpoint:
    """A loaded task model, whichever file format it came from."""

    task: str
    model: EncoderPredictor
    source: str  # "wordformer" or "tutorial"
    hparams: dict[str, Any] = field(default_factory=dict)  # optimiser settings (lr, warmup, max_iters, ...)
    data: dict[str, Any] = field(default_factory=dict)  # how the task data was made (lengths, splits, ...)
    metrics: dict[str, Any] = field(default_factory=dict)


def save_task_checkpoint(
    path: PathLike,
    *,
    task: str,
    model: EncoderPredictor,
    hparams: Mapping[str, Any],
    data: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> Path:
    """Write a weights-only-loadable checkpoint atomically (a crash never leaves half a file)."""
    if task not in TASKS:
        raise WordformerError(f"task={task!r} must be one of: {', '.join(TASKS)}")
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
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _ours(raw: dict[str, Any], path: Path) -> TaskCheckpoint:
    if raw.get("version") != FORMAT_VERSION:
        raise WordformerError(f"{path} is a wordformer task checkpoint of version {raw.get('version')!r}: this build reads {FORMAT_VERSION}")
    task = raw.get("task")
    if task not in TASKS:
        raise WordformerError(f"{path} names an unknown task {task!r}: expected one of {', '.join(TASKS)}")
    model = EncoderPredictor(EncoderConfig.from_dict(raw["model_config"]))
    state: dict[str, Tensor] = raw["state_dict"]
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
    if expect is not None and loaded.task != expect:
        raise WordformerError(f"{p} holds a {loaded.task} model, not a {expect} model: use `wordformer task {loaded.task} test`")
    return loaded
