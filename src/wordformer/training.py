"""Training: the LightningModule (next-token cross entropy) and the ``train`` function around the Trainer.

The chapter's training signal: at every position the known next token gives the error. The loss is
the cross entropy between the output layer's logits and that token.
Shape legend: B = batch, T = tokens, V = vocabulary.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassAccuracy

from .batches import IGNORE_INDEX
from .callbacks import (AtomicCheckpointIO, LineProgress, RunCheckpoint, RunCSVLogger, SaveOnCtrlC, SessionTimer,
                        StepProgressBar, ValidateOnLastStep, quiet_lightning)
from .checkpoint import KEY, parse_entry, read_checkpoint, saved_step, wordformer_entry
from .config import DataConfig, ModelConfig, TrainConfig
from .data import Corpus, WordDataModule, check_same_corpus, prepare_corpus
from . import distributed
from .distributed import check_cluster, check_same_global_batch, is_fsdp, lightning_strategy, resolve_accelerator
from .errors import WordformerError, check_choice
from .hardware import check_batch_fits, cpu_has_native_bf16, resolve_precision
from .model import WordPredictor
from .optim import build_optimizer, build_scheduler
from .runs import (BEST, LAST, METRICS_CSV, TENSORBOARD, check_out_dir, check_resumable, claim_for_training,
                   interrupted_message, remove_stale_temp_checkpoints)
from .schedule import RESUME_SCHEDULES, Schedule, describe_resume, saved_schedule
from .streaming import Progress
from .tokenizers import Tokenizer

log = logging.getLogger(__name__)


class NonFiniteLossError(WordformerError):
    """The loss became NaN or infinite; training stopped before saving the broken weights."""


class WordPredictorModule(L.LightningModule):
    """Trains a :class:`WordPredictor` with AdamW (or Muon) and a warm-up + cosine (or WSD) learning-rate schedule."""

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, *,
                 data_config: Optional[DataConfig] = None, tokenizer: Optional[Tokenizer] = None,
                 schedule: Optional[Schedule] = None):
        super().__init__()
        self.model_config = model_config
        self.train_config = train_config
        self.schedule = schedule or Schedule.of(train_config)  # a resume may have extended it (see schedule.py)
        self.data_config = data_config or DataConfig()
        self.tokenizer = tokenizer
        self.corpus_key: Optional[str] = None  # recorded in checkpoints so resume/evaluate notice a changed corpus
        self.model = WordPredictor(model_config)
        self._forward = torch.compile(self.model) if train_config.compile else self.model
        self.val_accuracy = MulticlassAccuracy(num_classes=model_config.vocab_size, average="micro",
                                               ignore_index=IGNORE_INDEX)
        self._nonfinite = torch.zeros((), dtype=torch.bool)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch  # (B, T), (B, T)
        logits = self._forward(x)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=IGNORE_INDEX)
        return loss, logits, y

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch)
        # no host-device sync on the hot path: the finite check is read only at logging intervals
        self._nonfinite = self._nonfinite.to(loss.device) | ~torch.isfinite(loss.detach())
        if batch_idx % self.train_config.log_every == 0:
            if bool(self._nonfinite):
                raise NonFiniteLossError(
                    f"the training loss became NaN or infinite at or before step {self.global_step}; "
                    "lower --lr, raise --warmup-steps or set --grad-clip; the last good checkpoint is kept"
                )
            self.log("train_loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, logits, y = self._loss(batch)
        self.val_accuracy.update(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        # sync_dist: with several devices every rank scores its own share of the validation batches; the mean
        # over all of them is the figure to report and to choose best.ckpt by (one device: nothing to do)
        self.log("val_loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_accuracy.reset()
            return
        val_loss = self.trainer.callback_metrics.get("val_loss")
        if val_loss is not None and not math.isfinite(float(val_loss)):
            raise NonFiniteLossError(
                f"the validation loss is {float(val_loss)} at step {self.global_step}; "
                "lower --lr or raise --warmup-steps; the last good checkpoint is kept"
            )
        self.log("val_acc", self.val_accuracy.compute(), prog_bar=True, sync_dist=True)  # equal on every rank
        self.val_accuracy.reset()
        if val_loss is not None:
            self.log("val_ppl", torch.exp(torch.as_tensor(float(val_loss))))  # from the synced val_loss

    def configure_optimizers(self) -> Any:
        # AdamW, or Muon for the hidden matrices + AdamW for the rest; warm-up then cosine or WSD (wordformer.optim)
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        optimizer = build_optimizer(self.model, self.train_config, device_type=self.device.type, precision=precision)
        scheduler = build_scheduler(optimizer, self.train_config, rate=self.schedule.rate)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Optional[str] = None) -> None:
        # FSDP: only the root module sees every shard, so the norm is its to compute (Lightning refuses "norm")
        if gradient_clip_val and is_fsdp(self.trainer.strategy):
            self.trainer.strategy.model.clip_grad_norm_(float(gradient_clip_val))
            return
        # bf16 autocast has no loss scaler, so the gradients are the true ones and clipping them directly is
        # exact; Lightning's own path refuses a fused optimizer under any mixed precision
        if gradient_clip_val and str(self.trainer.precision).startswith("bf16"):
            torch.nn.utils.clip_grad_norm_(self.parameters(), float(gradient_clip_val))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is None:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
        info: dict[str, Any] = {"step": int(self.global_step), "metrics": metrics,
                                "world_size": int(self.trainer.world_size),  # resume checks the global batch
                                "lr_schedule": self.schedule.to_dict()}
        if self.corpus_key:
            info["corpus"] = self.corpus_key
        checkpoint[KEY] = wordformer_entry(self.model_config, self.data_config, self.train_config, self.tokenizer,
                                           **info)
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Restored just before the first resumed step, not here: Lightning draws from the global RNG when
        # it creates the dataloader iterators after this hook, which would shift every dropout mask.
        self._resume_rng = checkpoint.get("rng_states") or {}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        states = getattr(self, "_resume_rng", None)
        if states:
            if "torch" in states:
                torch.set_rng_state(states["torch"])
            if "cuda" in states and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])
        self._resume_rng = None


@dataclass
class TrainResult:
    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    val_loss: float  # best validation loss seen
    metrics: dict[str, float]  # final validation metrics: val_loss, val_ppl, val_acc
    steps: int
    seconds: float
    num_parameters: int


def is_rank_zero() -> bool:
    """False in the extra processes Lightning starts for multi-device training (they re-run the command) and on
    every other machine of a multi-node run: those neither check the output folder nor print reports, so both
    happen once."""
    return distributed.is_rank_zero()


def train(
    model: ModelConfig,
    data: DataConfig,
    train: TrainConfig,
    out_dir: str | Path,
    *,
    callbacks: Sequence[L.Callback] = (),
    resume: bool = False,
    resume_schedule: Optional[str] = None,
    overwrite: bool = False,
    logger: bool = True,
) -> TrainResult:
    """Train a word predictor and write ``out_dir/best.ckpt``, ``out_dir/last.ckpt`` and logs.

    With ``resume`` the run continues from ``out_dir/last.ckpt``: step, optimiser, schedule, RNG state
    and data position (batches are a pure function of seed and batch number). When ``train.max_steps``
    differs from the run's, ``resume_schedule`` says what the learning rate does over the new length
    (``"continue"``, the default: its saved curve, at the floor past the old end; ``"decay"``: a new cosine
    decay from the rate reached; ``"restart"``: from the peak ``lr``), and a warning gives the numbers.
    Ctrl-C (SIGINT) stops after the step under way and saves ``last.ckpt`` there; a second Ctrl-C stops at once.
    """
    out_dir = Path(out_dir)
    if data.data:  # checkpoints record where the corpus is, for resume and evaluate from any folder
        data = replace(data, data=str(Path(data.data).expanduser().absolute()))
    if resume_schedule is not None:
        check_choice("resume_schedule", resume_schedule, RESUME_SCHEDULES)
        if not resume:
            raise WordformerError("--resume-schedule applies to a resumed run only; give it with --resume DIR")
    existed = out_dir.exists()
    if is_rank_zero():
        check_out_dir(out_dir, resume=resume, overwrite=overwrite)
        remove_stale_temp_checkpoints(out_dir)
        claim_for_training(out_dir)  # the folder now holds this run: `demo` must not replace it
    try:
        with quiet_lightning():
            return _fit(model, data, train, out_dir, callbacks=callbacks, resume=resume,
                        resume_schedule=resume_schedule, overwrite=overwrite, logger=logger)
    except BaseException:
        if not existed and is_rank_zero():  # a refused or failed first run leaves no empty folder behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if empty: anything written stays
        raise


@dataclass
class _Resumed:
    """What a resumed run continues from: the step, what its checkpoint recorded of the corpus, and the
    learning-rate schedule it goes on with."""

    checkpoint: Path
    step: int
    info: dict[str, Any]
    tokenizer: Tokenizer
    batch_size: int  # per process, with info["world_size"] processes (1 before multi-process runs recorded it)
    schedule: Schedule


def _check_resume(model: ModelConfig, data: DataConfig, train: TrainConfig, last: Path,
                  how: Optional[str]) -> _Resumed:
    """Stage 1 of a resume: one clear line for a damaged file or a changed setting, before any work; a warning
    with the numbers when a new --max-steps changes the course of the learning rate."""
    if not last.exists():
        raise WordformerError(f"nothing to resume in {last.parent}: there is no {LAST}")
    saved_model, _, saved_train, saved_tokenizer, info = parse_entry(read_checkpoint(last), last)
    step = int(info.get("step", 0))
    check_resumable(model, data, train, (saved_model, saved_train), step, last)
    saved = saved_schedule(info, saved_train, str(last))
    new_decay = train.max_steps != saved_train.max_steps and (how or "continue") != "continue"
    if train.warmup_steps != saved_train.warmup_steps:
        raise WordformerError(f"cannot change the warm-up when resuming (warmup_steps {saved_train.warmup_steps} -> "
                              f"{train.warmup_steps}): the learning rate follows the schedule saved in {last}; drop "
                              "--warmup-steps, or start a new run with --out")
    if train.min_lr != saved_train.min_lr and not new_decay:
        raise WordformerError(f"--min-lr {train.min_lr:g} on resume sets the floor of a new decay only (the saved "
                              f"schedule ends at {saved_train.min_lr:g}): give a new --max-steps with "
                              "--resume-schedule decay or restart, or drop --min-lr")
    if train.max_steps == saved_train.max_steps:
        if how not in (None, "continue"):
            log.warning("--resume-schedule %s is ignored: --max-steps is what the run was set for (%d), so it "
                        "resumes exactly as saved", how, train.max_steps)
        return _Resumed(last, step, info, saved_tokenizer, saved_train.batch_size, saved)
    how = how or "continue"
    log.warning(describe_resume(saved, step, saved_train.max_steps, train.max_steps, how, min_lr=train.min_lr))
    return _Resumed(last, step, info, saved_tokenizer, saved_train.batch_size, saved.resumed(step, train.max_steps, how, min_lr=train.min_lr))


def _warn_about(model: ModelConfig, train: TrainConfig) -> None:
    """Settings that train without an error but not as the user hopes."""
    if model.d_model <= 2 and model.norm != "none":
        log.warning("with d_model=%d a layer norm maps every vector to +-(1, -1) and erases what the embedding "
                    "learned: the model will answer nothing useful; pass --norm none (the chapter's plain "
                    "residual connection)", model.d_model)
    if train.warmup_steps >= train.max_steps:
        log.warning("--warmup-steps %d is not below --max-steps %d: the learning rate climbs for the whole run, "
                    "ends at %.2e instead of peaking at --lr %g, and never decays; lower --warmup-steps",
                    train.warmup_steps, train.max_steps, Schedule.of(train).rate(train.max_steps - 1), train.lr)


def _prepare(model: ModelConfig, data: DataConfig, train: TrainConfig,
             resumed: Optional[_Resumed]) -> tuple[ModelConfig, Corpus, WordDataModule]:
    """Stage 2: tokenize (or load the cached corpus), size the vocabulary, build the batches."""
    L.seed_everything(train.seed, verbose=False)
    corpus = prepare_corpus(data, model.block_size, progress=Progress(enabled=train.progress and is_rank_zero()))
    if corpus.looks_like_pairs:
        log.warning("%s looks like prompt<TAB>answer lines; pass --pairs to train on pairs (it is trained as plain "
                    "text now)", data.data)
    if resumed is not None:
        check_same_corpus(corpus, resumed.info.get("corpus"), data, resumed.checkpoint, resumed.tokenizer,
                          advice="restore that text (--data PATH if it moved), or start a new run with --out")
    model = replace(model, vocab_size=corpus.tokenizer.vocab_size)
    check_batch_fits(model, train.batch_size, train.accelerator)
    datamodule = WordDataModule(corpus, model.block_size, train.batch_size, seed=train.seed,
                                eval_batches=train.eval_batches, grad_accum=train.grad_accum, sampling=data.sampling)
    return model, corpus, datamodule


def _run_callbacks(train: TrainConfig, out_dir: Path, extra: Sequence[L.Callback], *,
                   logger: bool) -> tuple[RunCheckpoint, SaveOnCtrlC, list[L.Callback]]:
    """Stage 3: best.ckpt, last.ckpt, Ctrl-C, the time budget, progress, the learning-rate log, the caller's own."""
    best = RunCheckpoint(dirpath=out_dir, filename=Path(BEST).stem, monitor="val_loss", mode="min", save_top_k=1,
                         enable_version_counter=False, auto_insert_metric_name=False)
    # last.ckpt from its own callback: Lightning's save_last=True rewrites it only when best.ckpt improves, so
    # once validation stops improving a resume would go back to the best step, not the latest
    last = RunCheckpoint(dirpath=out_dir, filename=Path(LAST).stem, monitor=None, save_top_k=1,
                         enable_version_counter=False, auto_insert_metric_name=False)
    ctrl_c = SaveOnCtrlC(out_dir / LAST, min(train.eval_interval, train.max_steps))
    found: list[L.Callback] = [ValidateOnLastStep(), best, last, ctrl_c, *extra]
    if train.max_time:
        found.append(SessionTimer(duration={"seconds": train.max_time}, interval="step", verbose=False))
    if train.progress:  # a bar in a terminal; in a log file a bar writes a line per refresh, so short lines there
        found.append(StepProgressBar() if sys.stderr.isatty() else LineProgress(max(train.log_every,
                                                                                     train.max_steps // 10)))
    if logger:
        found.append(LearningRateMonitor(logging_interval="step"))
    return best, ctrl_c, found


def _trainer(train: TrainConfig, out_dir: Path, callbacks: list[L.Callback], *, logger: bool,
             resumed: Optional[_Resumed]) -> L.Trainer:
    """Stage 4: the Lightning Trainer on ``num_nodes`` machines with ``strategy``, its set-up errors turned into
    one line; a resumed run must keep its global batch (processes x batch size)."""
    accelerator = resolve_accelerator(train.strategy, train.accelerator)
    loggers: Any = False
    if logger:
        loggers = [RunCSVLogger(out_dir, name="logs", version=METRICS_CSV.parent.name,
                                keep_until=resumed.step if resumed else None),
                   TensorBoardLogger(out_dir, name="logs", version=TENSORBOARD.name)]
    eval_interval = min(train.eval_interval, train.max_steps)
    try:
        trainer = L.Trainer(
            max_steps=train.max_steps,
            accelerator=accelerator,
            devices=train.devices if train.devices == "auto" else int(train.devices),
            num_nodes=train.num_nodes,
            strategy=lightning_strategy(train.strategy),
            precision=resolve_precision(train.precision),
            gradient_clip_val=train.grad_clip or None,
            accumulate_grad_batches=train.grad_accum,
            val_check_interval=eval_interval * train.grad_accum,
            check_val_every_n_epoch=None,
            limit_val_batches=train.eval_batches,
            num_sanity_val_steps=0,
            log_every_n_steps=train.log_every,
            deterministic=train.deterministic,
            logger=loggers,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=train.progress and sys.stderr.isatty(),
            enable_model_summary=False,
            default_root_dir=out_dir,
        )
    except (ValueError, MisconfigurationException) as exc:  # unknown precision, unavailable accelerator, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WordformerError(f"cannot set up training: {first}") from None
    if resumed is not None:  # the same global batch, or the resumed batches would not be the ones it had
        check_same_global_batch(resumed.batch_size, int(resumed.info.get("world_size", 1)), train.batch_size,
                                trainer.world_size, resumed.checkpoint)
    if (str(trainer.precision).startswith("bf16") and trainer.strategy.root_device.type == "cpu"
            and not cpu_has_native_bf16()):
        log.warning("this CPU has no native bf16 (AVX512-BF16 or AMX): --precision %s will train slower than "
                    "32-true here", trainer.precision)
    return trainer


def _clear_replaced_run(out_dir: Path) -> None:
    """Stage 5 (``--overwrite``): everything is checked and training starts, so the replaced run goes now; its
    curves never mix with this run's, and an interruption before the first checkpoint cannot point
    ``--resume`` at the old run."""
    for folder in (METRICS_CSV.parent, TENSORBOARD):
        shutil.rmtree(out_dir / folder, ignore_errors=True)
    for name in (BEST, LAST):
        (out_dir / name).unlink(missing_ok=True)


def _fit_until_done(trainer: L.Trainer, module: WordPredictorModule, datamodule: WordDataModule,
                    last: Optional[Path], ctrl_c: SaveOnCtrlC) -> None:
    """Stage 6: Lightning's loop (from ``last`` when resuming); Ctrl-C ends the step under way, saves it and
    becomes a KeyboardInterrupt that says where the run stands and how to continue."""
    with ctrl_c.listening():
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last else None, weights_only=True)
        except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after a graceful shutdown
            if not trainer.interrupted:
                raise
    if trainer.interrupted:
        out_dir = Path(trainer.default_root_dir)
        if not (out_dir / LAST).exists() and is_rank_zero():  # nothing to resume: no half run that blocks a rerun
            shutil.rmtree(out_dir / "logs", ignore_errors=True)
        raise KeyboardInterrupt(interrupted_message(trainer.global_step, out_dir, saved_step(out_dir / LAST)))


def _fit(model: ModelConfig, data: DataConfig, train: TrainConfig, out_dir: Path, *, callbacks: Sequence[L.Callback],
         resume: bool, resume_schedule: Optional[str], overwrite: bool, logger: bool) -> TrainResult:
    """The body of :func:`train`, once the output folder is checked: six named stages."""
    last = out_dir / LAST
    resumed = _check_resume(model, data, train, last, resume_schedule) if resume else None
    check_cluster(train.num_nodes)
    resolve_accelerator(train.strategy, train.accelerator)  # FSDP without CUDA: refused before any tokenizing
    _warn_about(model, train)
    started = time.perf_counter()
    model, corpus, datamodule = _prepare(model, data, train, resumed)
    module = WordPredictorModule(model, train, data_config=data, tokenizer=corpus.tokenizer,
                                 schedule=resumed.schedule if resumed else None)
    module.corpus_key = corpus.key
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer
    best, ctrl_c, all_callbacks = _run_callbacks(train, out_dir, callbacks, logger=logger)
    trainer = _trainer(train, out_dir, all_callbacks, logger=logger, resumed=resumed)
    if overwrite and not resume and is_rank_zero():
        _clear_replaced_run(out_dir)
    _fit_until_done(trainer, module, datamodule, last if resume else None, ctrl_c)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    score = float(best.best_model_score) if best.best_model_score is not None else metrics.get("val_loss", math.nan)
    return TrainResult(out_dir=out_dir, best_checkpoint=out_dir / BEST, last_checkpoint=last, val_loss=score,
                       metrics=metrics, steps=int(trainer.global_step), seconds=time.perf_counter() - started,
                       num_parameters=module.model.num_parameters())
