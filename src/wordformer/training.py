"""Training: the LightningModule (next-token cross entropy) and the ``train`` function around the Trainer.

The chapter's training signal: at every position the known next token gives the error. The loss is
the cross entropy between the output layer's logits and that token.
Shape legend: B = batch, T = tokens, V = vocabulary.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import shutil
import signal
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, Timer, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics.classification import MulticlassAccuracy

from .checkpoint import KEY, atomic_torch_save, parse_entry, read_checkpoint, wordformer_entry
from .config import DataConfig, ModelConfig, TrainConfig
from .data import WordDataModule, check_same_corpus, prepare_corpus
from .errors import WordformerError, make_folder
from .model import WordPredictor
from .optim import build_optimizer, build_scheduler
from .tokenizers import Tokenizer

log = logging.getLogger(__name__)
IGNORE_INDEX = -100  # targets at padding positions (prompt/answer pairs) carry no error


class NonFiniteLossError(WordformerError):
    """The loss became NaN or infinite; training stopped before saving the broken weights."""


class WordPredictorModule(L.LightningModule):
    """Trains a :class:`WordPredictor` with AdamW (or Muon) and a warm-up + cosine (or WSD) learning-rate schedule."""

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, *,
                 data_config: Optional[DataConfig] = None, tokenizer: Optional[Tokenizer] = None):
        super().__init__()
        self.model_config = model_config
        self.train_config = train_config
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
        scheduler = build_scheduler(optimizer, self.train_config)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Optional[str] = None) -> None:
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
        info: dict[str, Any] = {"step": int(self.global_step), "metrics": metrics}
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that replaces files atomically (temp file, fsync, rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        atomic_torch_save(checkpoint, path)


class _KeepingWriter(ExperimentWriter):
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
                                else _KeepingWriter(self.log_dir, self._keep_until))
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


def resolve_precision(precision: str) -> str:
    """"auto" is bf16-mixed on GPUs that support it and 32-true elsewhere, CPUs included (bit-for-bit the
    chapter's float32 arithmetic; ask for bf16-mixed on CPUs with native bf16, see cpu_has_native_bf16)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 matmuls run natively and bf16-mixed trains faster than
    float32 (1.3x at the benchmark sizes on an AMD EPYC); elsewhere bf16 is emulated and slower."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # older torch: no way to tell
        return False


DEMO_MARK = ".wordformer-demo"  # `wordformer demo` marks the folders it may replace on its next run


def is_rank_zero() -> bool:
    """False in the extra processes Lightning starts for multi-device training (they re-run the command): those
    neither check the output folder nor print reports, so both happen once."""
    return rank_zero_only.rank == 0


def check_out_dir(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an earlier run, and an output folder that cannot be written."""
    existing = [p for p in (out_dir / "best.ckpt", out_dir / "last.ckpt", out_dir / "logs" / "csv" / "metrics.csv")
                if p.exists()]
    tensorboard = out_dir / "logs" / "tensorboard"
    if not existing and tensorboard.is_dir() and any(tensorboard.iterdir()):
        existing = [tensorboard]
    if existing and not resume and not overwrite:
        go_on = f"continue it with --resume {out_dir}, " if (out_dir / "last.ckpt").is_file() else ""
        raise WordformerError(
            f"{out_dir} already holds a run ({existing[0].relative_to(out_dir)}); {go_on}"
            "choose another --out, or pass --overwrite to replace it"
        )
    make_folder(out_dir, advice="choose another --out")
    try:
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise WordformerError(f"cannot write to output folder {out_dir}: {exc.strerror or exc}; choose another --out") from None


def remove_stale_temp_checkpoints(out_dir: Path) -> list[Path]:
    """Delete the temp files of checkpoint saves that a killed process never renamed into place.

    Only the names ``atomic_write_bytes`` makes for this run's checkpoints (``.best.ckpt.*.tmp``,
    ``.last.ckpt.*.tmp``); the checkpoints themselves were never touched by a half-finished save.
    """
    removed = []
    for name in ("best.ckpt", "last.ckpt"):
        for tmp in out_dir.glob(f".{name}.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:  # gone already, or not ours to remove: harmless either way
                pass
    if removed:
        log.info("removed %d unfinished checkpoint save(s) in %s", len(removed), out_dir)
    return removed


def interrupted_message(step: int, last: Path, out_dir: Path) -> str:
    """Where an interrupted run stands: what was reached, what is saved, how to go on."""
    try:
        saved = int(read_checkpoint(last)[KEY]["info"]["step"]) if last.is_file() else None
    except (WordformerError, KeyError, TypeError, ValueError):
        saved = None
    if saved is None:
        return f"at step {step}, before the first checkpoint; nothing was saved"
    return (f"at step {step}; {last} holds step {saved} (a lower --eval-interval saves more often) — continue "
            f"with: wordformer train --resume {out_dir}")


def memory_available() -> Optional[int]:
    """Bytes this machine can still give (Linux's MemAvailable), or None where that is unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_fits(model: ModelConfig, batch_size: int, accelerator: str) -> None:
    """Refuse, on CPU, a batch whose activations cannot fit in memory: the kernel's OOM killer would end the
    process without a word. A lower bound in float32: logits with their softmax and gradient (3V per token),
    and per layer the ~18 d_model-sized tensors a block keeps for its backward pass."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                      and not torch.backends.mps.is_available())
    free = memory_available() if on_cpu else None
    per_token = 3 * model.vocab_size + (18 * model.num_layers + 2) * model.d_model
    need = 4 * batch_size * model.block_size * per_token
    if free is not None and need > free:
        raise WordformerError(
            f"batch_size={batch_size} x block_size={model.block_size} needs at least {need / 2**30:.1f} GiB for "
            f"activations, more than the {free / 2**30:.1f} GiB free here; use a smaller --batch-size (--grad-accum N "
            "keeps the effective batch)")


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


def config_from_checkpoint(path: Path) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    model_config, data_config, train_config, _, _ = parse_entry(read_checkpoint(path), path)
    return model_config, data_config, train_config


def train(
    model: ModelConfig,
    data: DataConfig,
    train: TrainConfig,
    out_dir: str | Path,
    *,
    callbacks: Sequence[L.Callback] = (),
    resume: bool = False,
    overwrite: bool = False,
    logger: bool = True,
) -> TrainResult:
    """Train a word predictor and write ``out_dir/best.ckpt``, ``out_dir/last.ckpt`` and logs.

    With ``resume`` the run continues from ``out_dir/last.ckpt``: step, optimiser, schedule, RNG state
    and data position (batches are a pure function of seed and batch number).
    """
    out_dir = Path(out_dir)
    if data.data:  # checkpoints record where the corpus is, for resume and evaluate from any folder
        data = replace(data, data=str(Path(data.data).expanduser().absolute()))
    existed = out_dir.exists()
    if is_rank_zero():
        check_out_dir(out_dir, resume=resume, overwrite=overwrite)
        remove_stale_temp_checkpoints(out_dir)
        (out_dir / DEMO_MARK).unlink(missing_ok=True)  # the folder now holds this run: `demo` must not replace it
    try:
        return _fit(model, data, train, out_dir, callbacks=callbacks, resume=resume, overwrite=overwrite,
                    logger=logger)
    except BaseException:
        if not existed and is_rank_zero():  # a refused or failed first run leaves no empty folder behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if empty: anything written stays
        raise


def _fit(model: ModelConfig, data: DataConfig, train: TrainConfig, out_dir: Path, *, callbacks: Sequence[L.Callback],
         resume: bool, overwrite: bool, logger: bool) -> TrainResult:
    """The body of :func:`train`, once the output folder is checked."""
    last = out_dir / "last.ckpt"
    if resume and not last.exists():
        raise WordformerError(f"nothing to resume in {out_dir}: there is no last.ckpt")
    recorded: Optional[dict[str, Any]] = None
    done: Optional[int] = None  # the step a resumed run continues from
    if resume:
        # one clear line for a damaged or code-carrying file, before any work
        saved_model, _, saved_train, saved_tokenizer, recorded = parse_entry(read_checkpoint(last), last)
        check_same_model(model, saved_model, last)
        check_same_optimizer(train, saved_train, last)
        done = int(recorded.get("step", 0))
        if train.max_steps <= done:
            raise WordformerError(f"{last} is already at step {done}; to train further, resume with --max-steps "
                                  f"above {done}")
    if resume and data.data and not Path(data.data).exists():
        raise WordformerError(f"{last} was trained on {data.data}, which is gone; resume with --data PATH pointing "
                              "at the same text")
    started = time.perf_counter()
    L.seed_everything(train.seed, verbose=False)
    corpus = prepare_corpus(data, model.block_size)
    if recorded is not None:
        check_same_corpus(corpus, recorded.get("corpus"), data, last, saved_tokenizer,
                          advice="restore that text (--data PATH if it moved), or start a new run with --out")
    model = replace(model, vocab_size=corpus.tokenizer.vocab_size)
    check_batch_fits(model, train.batch_size, train.accelerator)
    module = WordPredictorModule(model, train, data_config=data, tokenizer=corpus.tokenizer)
    module.corpus_key = corpus.key
    datamodule = WordDataModule(corpus, model.block_size, train.batch_size, seed=train.seed,
                                eval_batches=train.eval_batches, grad_accum=train.grad_accum, sampling=data.sampling)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer

    best_cb = RunCheckpoint(dirpath=out_dir, filename="best", monitor="val_loss", mode="min", save_top_k=1,
                            enable_version_counter=False, auto_insert_metric_name=False)
    # last.ckpt from its own callback: Lightning's save_last=True rewrites it only when best.ckpt improves, so
    # once validation stops improving a resume would go back to the best step, not the latest
    last_cb = RunCheckpoint(dirpath=out_dir, filename="last", monitor=None, save_top_k=1,
                            enable_version_counter=False, auto_insert_metric_name=False)
    loggers: Any = False
    all_callbacks: list[L.Callback] = [ValidateOnLastStep(), best_cb, last_cb, *callbacks]
    if train.max_time:
        all_callbacks.append(SessionTimer(duration={"seconds": train.max_time}, interval="step", verbose=False))
    if train.progress:
        all_callbacks.append(StepProgressBar())
    if logger:
        loggers = [RunCSVLogger(out_dir, name="logs", version="csv", keep_until=done),
                   TensorBoardLogger(out_dir, name="logs", version="tensorboard")]
        all_callbacks.append(LearningRateMonitor(logging_interval="step"))
    eval_interval = min(train.eval_interval, train.max_steps)
    try:
        trainer = L.Trainer(
            max_steps=train.max_steps,
            accelerator=train.accelerator,
            devices=train.devices if train.devices == "auto" else int(train.devices),
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
            callbacks=all_callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=train.progress,
            enable_model_summary=False,
            default_root_dir=out_dir,
        )
    except (ValueError, MisconfigurationException) as exc:  # unknown precision, unavailable accelerator, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WordformerError(f"cannot set up training: {first}") from None
    if (str(trainer.precision).startswith("bf16") and trainer.strategy.root_device.type == "cpu"
            and not cpu_has_native_bf16()):
        log.warning("this CPU has no native bf16 (AVX512-BF16 or AMX): --precision %s will train slower than "
                    "32-true here", trainer.precision)
    if overwrite and not resume and is_rank_zero():
        # everything checked, training starts: the replaced run goes now, so its curves never mix with this
        # run's and an interruption before the first checkpoint cannot point --resume at the old run
        for folder in ("csv", "tensorboard"):
            shutil.rmtree(out_dir / "logs" / folder, ignore_errors=True)
        for name in ("best.ckpt", "last.ckpt"):
            (out_dir / name).unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*IterableDataset.*__len__.*")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None,
                        weights_only=True)
        except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after a graceful shutdown
            if not trainer.interrupted:
                raise
        finally:
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # Lightning ignores further Ctrl-C; undo that
                signal.signal(signal.SIGINT, signal.default_int_handler)
    if trainer.interrupted:
        if not last.exists() and is_rank_zero():  # nothing to resume: leave no half run that blocks a rerun
            shutil.rmtree(out_dir / "logs", ignore_errors=True)
        raise KeyboardInterrupt(interrupted_message(trainer.global_step, last, out_dir))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    best = float(best_cb.best_model_score) if best_cb.best_model_score is not None else metrics.get("val_loss", math.nan)
    return TrainResult(
        out_dir=out_dir,
        best_checkpoint=out_dir / "best.ckpt",
        last_checkpoint=last,
        val_loss=best,
        metrics=metrics,
        steps=int(trainer.global_step),
        seconds=time.perf_counter() - started,
        num_parameters=module.model.num_parameters(),
    )
