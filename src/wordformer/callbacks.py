"""The Lightning pieces that make a training run behave: atomic checkpoints, a CSV history that survives
``--resume``, a checkpoint callback that survives a moved folder, a per-session time budget, validation on
the final step, Ctrl-C that saves where it stopped, progress that reads well in a terminal and in a log
file, and a Trainer that keeps its console chatter to itself.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, Timer, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .errors import WordformerError
from .files import atomic_torch_save

log = logging.getLogger(__name__)

LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
# Lightning's warnings that say nothing to a wordformer user: the run folder is guarded by runs.py, not by them
QUIET_WARNINGS = (r".*Checkpoint directory .* exists and is not empty.*", r".*does not have many workers.*",
                  r".*IterableDataset.*__len__.*", r".*isinstance\(treespec, LeafSpec\).*")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Keep Lightning's console chatter ("GPU available", the litlogger tip, "`Trainer.fit` stopped", a
    checkpoint folder "not empty") out of a training run started from Python, as the command line does.

    Lightning sets its loggers to INFO when imported; they go to WARNING for the run and back afterwards. A
    level the user chose (any other than INFO) is left alone, and so are the user's handlers and root logger.
    """
    raised = []
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.INFO:
            logger.setLevel(logging.WARNING)
            raised.append(logger)
    try:
        with warnings.catch_warnings():
            for pattern in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for logger in raised:
            logger.setLevel(logging.INFO)


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


class SaveOnCtrlC(L.Callback):
    """Ctrl-C (SIGINT) ends the step under way, saves ``last.ckpt`` at the step reached and then stops, so
    ``--resume`` loses nothing and continues exactly (batches are a pure function of seed and batch number,
    the RNG state is in the checkpoint). A second Ctrl-C stops at once, keeping the last saved checkpoint.

    The save happens where Lightning's own step-interval checkpoints do, after the optimizer and the
    schedule stepped (``on_train_batch_end``), and the run stops before the next batch, once the step's
    metrics are logged; a step that is due to validate first validates and saves through the checkpoint
    callbacks. The first Ctrl-C is only noted: an interrupt in the middle of an optimizer step would leave
    weights and schedule one step apart, which no checkpoint should hold.
    """

    def __init__(self, path: Path, eval_interval: int) -> None:
        self.path = Path(path)
        self.eval_interval = max(1, eval_interval)
        self.requested = False
        self._stop = False  # saved on a Ctrl-C: stop before the next batch
        self._step_at_start = -1
        self._saved_at = -1

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """Catch Ctrl-C during ``trainer.fit`` (main thread only: Python delivers signals there); the handler
        in place before is restored afterwards (Lightning leaves Ctrl-C ignored after its shutdown)."""
        previous = signal.getsignal(signal.SIGINT)
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread and callable(previous):  # not when Ctrl-C is ignored (a background job) or not ours to catch
            def noted(signum: int, frame: Any) -> None:
                self.requested = True
                signal.signal(signal.SIGINT, previous)  # the next Ctrl-C interrupts at once
                log.warning("Ctrl-C: stopping after this step and saving %s (Ctrl-C again to stop at once)",
                            self.path)

            signal.signal(signal.SIGINT, noted)
        try:
            yield
        finally:
            if main_thread and previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _stop_now(self, trainer: L.Trainer) -> bool:
        if trainer.world_size > 1:  # every process stops at the same step, or they would wait on each other
            return bool(trainer.strategy.reduce_boolean_decision(self.requested, all=False))
        return self.requested

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        # the stop comes here, once the step saved below has been logged (and a validation has saved its step)
        just_validated = self.requested and trainer.world_size == 1 and self._saved_at == trainer.global_step
        if self._stop or just_validated:
            raise KeyboardInterrupt
        self._step_at_start = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not self._stop_now(trainer) or trainer.global_step == self._step_at_start:
            return  # no Ctrl-C, or still accumulating gradients: no optimizer step yet
        step = trainer.global_step
        if step % self.eval_interval == 0 or step >= trainer.max_steps:
            return  # this step validates and saves through the checkpoint callbacks; stop after that
        trainer.save_checkpoint(self.path)
        self._stop = True

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._saved_at = trainer.global_step
