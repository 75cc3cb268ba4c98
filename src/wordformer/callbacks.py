"""The Lightning pieces that make a training run behave: atomic checkpoints, a CSV history that survives
``--resume``, a checkpoint callback that survives a moved folder, a per-session time budget, validation on
the final step, and progress that reads well in a terminal and in a log file.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any, Optional, TextIO

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, Timer, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .errors import WordformerError
from .files import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that replaces files atomically (temp file, fsync, rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        atomic_torch_save(checkpoint, path)


class KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes ``metrics.csv`` whenever it opens a folder that has one; a resumed run
    keeps the rows up to its checkpoint's step instead, and appends after them."""

    def __init__(self, log_dir: str, keep_until: int) -> None:
        self._keep_until = keep_until
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.exists():
            return
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                fields, rows = list(reader.fieldnames or []), list(reader)
            kept = [r for r in rows if r.get("step") not in (None, "") and float(r["step"]) <= self._keep_until]
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
            raise WordformerError(f"cannot keep the training history in {path} ({exc}); move that file away and "
                                  "resume again") from None
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
        self.metrics_keys = fields  # so save() appends under the same header (or rewrites it for new keys)


class RunCSVLogger(CSVLogger):
    """``logs/csv/metrics.csv`` of a run; with ``keep_until`` (a resume) the earlier history stays."""

    def __init__(self, *args: Any, keep_until: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_until = keep_until

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = (ExperimentWriter(self.log_dir) if self._keep_until is None
                                else KeepingWriter(self.log_dir, self._keep_until))
        return self._experiment


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that survives a moved or copied run folder. Lightning forgets the best score when the
    folder's path changed since the checkpoint, so the first evaluation after ``--resume`` would replace
    ``best.ckpt`` with whatever it scores; here the saved state is re-rooted in the current folder instead."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_dir = state_dict.get("dirpath")
        if saved_dir is None or self.dirpath is None or saved_dir == self.dirpath:
            return super().load_state_dict(state_dict)

        def here(path: Optional[str]) -> str:
            return str(Path(self.dirpath) / Path(path).name) if path else ""

        moved = dict(state_dict, dirpath=self.dirpath, best_model_path=here(state_dict.get("best_model_path")),
                     kth_best_model_path=here(state_dict.get("kth_best_model_path")),
                     last_model_path=here(state_dict.get("last_model_path")),
                     best_k_models={here(k): v for k, v in (state_dict.get("best_k_models") or {}).items()})
        super().load_state_dict(moved)


class SessionTimer(Timer):
    """``max_time`` counts this session's training only: Lightning's own timer carries the time used before a
    ``--resume`` over, so a run stopped by its time budget resumed into nothing at all."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class ValidateOnLastStep(L.Callback):
    """Stop (and so validate and checkpoint) on the final step, even between evaluation intervals."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class StepProgressBar(TQDMProgressBar):
    """Progress in batches out of ``max_steps`` (the training loader is endless), without Lightning's v_num."""

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps * self.trainer.accumulate_grad_batches

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("training")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class LineProgress(L.Callback):
    """Progress for a log file or pipe: one short line every ``every`` steps and after each validation, instead
    of a progress bar that writes a line per refresh when stderr is not a terminal."""

    def __init__(self, every: int, stream: Optional[TextIO] = None) -> None:
        self.every = max(1, every)
        self.stream = stream
        self._started = time.perf_counter()
        self._last = -1  # the step last reported (with --grad-accum several batches end one step)

    def _say(self, trainer: L.Trainer, text: str) -> None:
        if trainer.is_global_zero:
            stream = self.stream or sys.stderr  # where a progress bar would draw
            stream.write(f"step {trainer.global_step}/{trainer.max_steps}  {text}  "
                         f"({time.perf_counter() - self._started:.0f} s)\n")
            stream.flush()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if step and step % self.every == 0 and step != self._last:
            self._last = step
            loss = trainer.callback_metrics.get("train_loss")  # the latest logged value
            self._say(trainer, f"train_loss {float(loss):.4f}" if loss is not None else "training")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        shown = [f"{k} {float(trainer.callback_metrics[k]):.4f}" for k in ("val_loss", "val_acc")
                 if k in trainer.callback_metrics]
        if shown:
            self._say(trainer, "  ".join(shown))
