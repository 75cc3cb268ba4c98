"""The tuning objective: one trial = one real Lightning training run of the sampled configuration.

A trial trains under ``OUT/STUDY/trial_NNNN`` with the sampled configs, reports every validation to
Optuna (so pruners can stop it early) and returns the chosen metric. A configuration that cannot
train (a bad combination, out of memory, a NaN loss) is recorded as FAIL with the reason in the
trial's ``fail_reason`` user attribute, and the study goes on.
"""

from __future__ import annotations

import dataclasses
import gc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import PyTorchLightningPruningCallback

from ..config import DataConfig, ModelConfig, TrainConfig, from_dict
from ..errors import WordformerError, check_int
from .space import SearchSpace, apply_overrides
from .fixed import CONFIG_ATTR
from .study import DIR_ATTR, FAIL_REASON, METRICS, check_study_name, fail_trial

CHECKPOINT_ATTR = "checkpoint"
MIN_REPORTS = 4  # validations per trial when eval_interval is chosen automatically


class StepPruningCallback(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, reporting at the training step instead of the epoch.

    wordformer validates every ``eval_interval`` steps inside one long epoch; reported per epoch,
    every validation after the first would land on step 0 and Optuna would ignore it.
    """

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.is_ddp_backend:  # the parent handles the multi-process case
            return super().on_validation_end(trainer, pl_module)
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            return
        value = float(score)
        if not math.isfinite(value):
            return  # training stops on a non-finite loss by itself; the objective records why
        step = int(trainer.global_step)
        self._trial.report(value, step=step)
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} with {self.monitor}={value:.4f}")


@dataclass
class ObjectiveSettings:
    """What every trial shares: the space, the base configs and where trials write."""

    space: SearchSpace
    out_dir: Path
    study_name: str = "wordformer"
    metric: str = "val_loss"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(progress=False))
    prune: bool = True  # attach the pruning callback (off for --pruner none)
    auto_eval_interval: bool = True  # validate at least MIN_REPORTS times per trial
    logger: bool = False  # per-trial CSV/TensorBoard logs (the study already records the metrics)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        check_study_name(self.study_name)  # it becomes a folder under out_dir
        if self.metric not in METRICS:
            raise WordformerError(f"metric {self.metric!r} is not one of: {', '.join(METRICS)}")

    def trial_dir(self, number: int) -> Path:
        return self.out_dir / self.study_name / f"trial_{number:04d}"


def first_validation(train: TrainConfig, *, auto: bool = True) -> int:
    """The step of a trial's first validation: with ``auto``, early enough for MIN_REPORTS reports.

    Pruners compare trials at the steps they report, so each trial should report several times.
    """
    if not auto:
        return max(1, min(train.eval_interval, train.max_steps))
    return max(1, min(train.eval_interval, train.max_steps // MIN_REPORTS))


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "not enough memory")
    )


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - cleanup must never hide the trial's own outcome
        pass


def metric_value(result: Any, metric: str) -> float:
    """The trial's value: best val_loss (the kept best.ckpt), its perplexity, or the final accuracy."""
    if metric == "val_loss":
        return float(result.val_loss)
    if metric == "val_ppl":
        loss = float(result.val_loss)
        return math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf
    return float(result.metrics.get(metric, math.nan))


class TrainingObjective:
    """Callable objective for ``study.optimize``: sample, build configs, train, return the metric."""

    def __init__(self, settings: ObjectiveSettings, *, train_fn: Optional[Callable[..., Any]] = None) -> None:
        self.settings = settings
        self._train_fn = train_fn

    def configs(self, trial: optuna.Trial) -> tuple[ModelConfig, DataConfig, TrainConfig]:
        s = self.settings
        raw = s.space.suggest(trial)
        try:
            model, data, train = s.space.configs(raw, s.model, s.data, s.train)
        except WordformerError as exc:
            fail_trial(trial, f"invalid configuration: {exc}")
        if s.auto_eval_interval:
            train = dataclasses.replace(train, eval_interval=first_validation(train))
        return model, data, train

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.settings
        model, data, train = self.configs(trial)
        out = s.trial_dir(trial.number).resolve()  # absolute: reports and retraining may run from elsewhere
        trial.set_user_attr(DIR_ATTR, str(out))
        trial.set_user_attr(
            CONFIG_ATTR,
            {"model": dataclasses.asdict(model), "data": dataclasses.asdict(data), "train": dataclasses.asdict(train)},
        )
        train_fn = self._train_fn
        if train_fn is None:
            from ..training import train as train_fn
        callbacks = [StepPruningCallback(trial, monitor=s.metric)] if s.prune else []
        try:
            result = train_fn(model, data, train, out, callbacks=callbacks, overwrite=True, logger=s.logger)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:  # Optuna records the trial as failed and re-raises; say why in the report
            trial.set_user_attr(FAIL_REASON, "interrupted (Ctrl-C)")
            raise KeyboardInterrupt("the trial under way was recorded as failed; run the same command again to "
                                    "continue the study") from None
        except WordformerError as exc:
            fail_trial(trial, str(exc))
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            _free_memory()
            fail_trial(trial, f"out of memory: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
        value = metric_value(result, s.metric)
        trial.set_user_attr(CHECKPOINT_ATTR, str(result.best_checkpoint))
        trial.set_user_attr("last_checkpoint", str(result.last_checkpoint))
        trial.set_user_attr("metrics", {k: float(v) for k, v in result.metrics.items()})
        trial.set_user_attr("steps", int(result.steps))
        trial.set_user_attr("seconds", float(result.seconds))
        if getattr(result, "num_parameters", None) is not None:
            trial.set_user_attr("num_parameters", int(result.num_parameters))
        if not math.isfinite(value):
            fail_trial(trial, f"{s.metric} is {value} (training diverged); lower the learning rate range")
        return value


class CheckpointPruner:
    """Study callback for --prune-checkpoints: delete checkpoints of finished trials that are not the best.

    A trial that is not the best when it finishes can never become the best later, so its
    checkpoints are safe to remove; the best trial's checkpoint is always kept.
    """

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        try:
            best = study.best_trial.number
        except ValueError:  # no completed trial yet
            best = None
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        for t in study.get_trials(deepcopy=False, states=finished):
            if t.number == best:
                continue
            folder = t.user_attrs.get(DIR_ATTR)
            if folder:
                remove_checkpoints(Path(folder))


def remove_checkpoints(folder: Path) -> int:
    """Delete the ``*.ckpt`` files under a trial folder; returns how many were removed."""
    if not folder.is_dir():
        return 0
    count = 0
    for path in folder.rglob("*.ckpt"):
        try:
            path.unlink()
            count += 1
        except OSError:
            pass
    return count


def trial_configs(trial: FrozenTrial) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """The configs a finished trial trained, from its user attributes (for --retrain-best)."""
    stored = trial.user_attrs.get(CONFIG_ATTR)
    if not isinstance(stored, dict) or not all(k in stored for k in ("model", "data", "train")):
        raise WordformerError(
            f"trial {trial.number} has no stored configuration (was it run by `wordformer tune`?); "
            f"retrain it with `wordformer train` and its parameters {trial.params}"
        )
    return (
        from_dict(ModelConfig, dict(stored["model"]), where=f"trial {trial.number}"),
        from_dict(DataConfig, dict(stored["data"]), where=f"trial {trial.number}"),
        from_dict(TrainConfig, dict(stored["train"]), where=f"trial {trial.number}"),
    )


# Options --retrain-best takes from the command line: where and how the run executes, not what it trains.
RETRAIN_RUNTIME = frozenset({
    "data.cache_dir", "train.accelerator", "train.devices", "train.precision", "train.compile", "train.log_every",
    "train.deterministic", "train.eval_interval", "train.eval_batches", "data.workers", "train.num_nodes",
    "train.strategy",
})


def retrain(
    trial: FrozenTrial,
    out_dir: Path,
    *,
    max_steps: int,
    overwrite: bool = False,
    progress: bool = True,
    train_fn: Optional[Callable[..., Any]] = None,
    corpus_key: Optional[str] = None,
    runtime: Optional[Mapping[str, Any]] = None,
    on_start: Optional[Callable[[], None]] = None,
) -> Any:
    """Train a trial's configuration again for ``max_steps`` steps; returns train()'s result.

    It trains on the data and options the trial recorded, never on others: with ``corpus_key`` (the
    study's record) a corpus whose text changed since is refused. ``runtime`` (``section.field`` ->
    value, keys from :data:`RETRAIN_RUNTIME`) changes only where and how the run executes. ``on_start``
    is called once these checks passed, just before training (the CLI's header line).
    """
    model, data, train = trial_configs(trial)
    check_int("--max-steps", max_steps)
    # The trial validated often so pruners could compare it; a long run needs that less (about 10 times).
    eval_interval = max(train.eval_interval, max_steps // 10, 1)
    train = dataclasses.replace(train, max_steps=max_steps, eval_interval=eval_interval, progress=progress)
    changes: dict[str, dict[str, Any]] = {"data": {}, "train": {}}
    for target, value in (runtime or {}).items():
        if target not in RETRAIN_RUNTIME:
            raise WordformerError(f"{target} is not an option --retrain-best can change")
        section, name = target.split(".", 1)
        changes[section][name] = value
    data = dataclasses.replace(data, **changes["data"])
    train = dataclasses.replace(train, **changes["train"])
    if corpus_key is not None:
        from ..data import prepare_corpus

        if prepare_corpus(data, model.block_size).key != corpus_key:
            raise WordformerError(
                f"the text of {data.data or 'the built-in corpus'} changed since trial {trial.number} trained on it "
                f"(its sha256 differs from the study's record); restore it, or tune anew on the new text")
    if train_fn is None:
        from ..training import train as train_fn
    if on_start is not None:
        on_start()
    return train_fn(model, data, train, Path(out_dir), overwrite=overwrite, logger=True)


def check_corpus(space: SearchSpace, model: ModelConfig, data: DataConfig) -> Optional[str]:
    """Refuse up front a corpus that no trial could train on (too short for every block size, unreadable);
    returns the corpus key (sha256 of the texts and tokenizer options) that the study records.

    When the space tunes a data option the corpus differs from trial to trial: nothing is refused then,
    and the key is that of the base data options (it still changes whenever the text does), or None
    when those options cannot tokenize it.
    The tokenized corpus goes to the cache, where the trials find it.
    """
    from ..data import prepare_corpus  # torch and Lightning: only once a study really starts

    fixed = {k: v for k, v in space.fixed.items() if k.startswith("data.") or k == "model.block_size"}
    model, data, _ = apply_overrides(fixed, model, data)
    if any(p.section == "data" for p in space.params):
        # Any block fits for the key alone: 1 needs two tokens of text, a huge one cuts no pair.
        try:
            return prepare_corpus(data, 2**30 if data.pairs else 1).key
        except WordformerError:
            return None
    sizes = [model.block_size]
    for p in space.params:
        if p.target == "model.block_size":
            sizes = [p.to_value(p.low), p.to_value(p.high)]
    # Text needs block_size + 1 tokens (the smallest block is the easiest); pairs must fit in one (the largest).
    block = max(sizes) if data.pairs else min(sizes)
    try:
        return prepare_corpus(data, int(block)).key
    except WordformerError as exc:
        raise WordformerError(f"every trial would fail: {exc}") from None


__all__ = [
    "CHECKPOINT_ATTR", "CONFIG_ATTR", "CheckpointPruner", "ObjectiveSettings", "RETRAIN_RUNTIME", "StepPruningCallback",
    "TrainingObjective", "check_corpus", "first_validation", "metric_value", "remove_checkpoints", "retrain", "trial_configs",
]
