"""Studies: storage, samplers, pruners and the optimisation loop around any objective.

Storage decides who can join a study:

* default: an embedded SQLite file ``OUT/study.db``; rerunning the same command continues it;
* any SQLAlchemy URL (``postgresql://user@host/db``): start the same ``wordformer tune --storage
  URL --study NAME`` on as many machines as you like and each is one more worker;
* ``journal:PATH``: Optuna's JournalFileBackend, several local processes without a server.

RDB storages (SQLite, PostgreSQL, ...) send heartbeats: a worker that dies mid-trial leaves a
trial whose heartbeat goes stale; the next worker to start a trial marks it FAIL and re-queues
its parameters once (``RetryHeartbeatStaleTrialCallback(max_retry=1)``). Journal storages have no
heartbeats in Optuna: there a killed worker's trial stays RUNNING. Any of these storages
opens in ``optuna-dashboard URL`` (for the default: ``optuna-dashboard sqlite:///OUT/study.db``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn, Optional, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import WordformerError
from .space import SearchSpace

METRICS: dict[str, str] = {"val_loss": "minimize", "val_ppl": "minimize", "val_acc": "maximize"}
DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("tpe", "gp", "random", "qmc", "grid", "cmaes")
PRUNERS = ("median", "hyperband", "none")
JOURNAL_PREFIX = "journal:"
FAIL_REASON = "fail_reason"  # trial user attr that says why a trial failed

Objective = Callable[[optuna.Trial], float]


class TrialFailed(Exception):
    """Raised by an objective for a trial that cannot finish; the study records FAIL and goes on."""


def fail_trial(trial: optuna.Trial, reason: str) -> NoReturn:
    """Record why a trial failed (user attr ``fail_reason``) and end it as FAIL."""
    trial.set_user_attr(FAIL_REASON, reason)
    raise TrialFailed(reason) from None  # the reason says it all; no chained traceback in the log


@dataclass
class StudySettings:
    """Everything about a study except what one trial does."""

    out_dir: Path = Path("runs/tune")
    study_name: str = "wordformer"
    storage: Optional[str] = None  # None: sqlite OUT/study.db; a SQLAlchemy URL; or journal:PATH
    sampler: str = "tpe"
    pruner: str = "median"
    seed: Optional[int] = None
    metric: str = "val_loss"
    direction: Optional[str] = None  # None: from the metric (loss/ppl minimise, acc maximise)
    n_trials: Optional[int] = None  # trials this run adds (each worker adds its own)
    timeout: Optional[float] = None  # seconds this run may start new trials
    n_jobs: int = 1  # threads in this process
    enqueue_defaults: bool = False  # first trial = the space's defaults (skipped if already run)
    heartbeat_interval: int = 60  # seconds between heartbeats of a running trial (RDB storage)
    grace_period: Optional[int] = None  # stale after this many seconds; None: 2 * heartbeat_interval
    max_retry: int = 1  # a trial whose worker died is re-run at most this often
    show_progress_bar: bool = False
    n_startup_trials: Optional[int] = None  # random trials before tpe/gp model the results
    pruner_min_resource: int = 1  # hyperband: fewest steps before a trial may be stopped
    gc_after_trial: bool = True  # free each trial's tensors before the next (costs ~0.5 s per trial)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.metric not in METRICS:
            raise WordformerError(f"metric {self.metric!r} is not one of: {', '.join(METRICS)}")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise WordformerError(f"direction {self.direction!r} is not one of: {', '.join(DIRECTIONS)}")
        if self.sampler not in SAMPLERS:
            raise WordformerError(f"sampler {self.sampler!r} is not one of: {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise WordformerError(f"pruner {self.pruner!r} is not one of: {', '.join(PRUNERS)}")
        if not self.study_name:
            raise WordformerError("study name is empty; pass --study NAME")
        for name in ("n_trials", "n_jobs", "heartbeat_interval", "grace_period", "n_startup_trials",
                     "pruner_min_resource"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise WordformerError(f"{name}={value!r} must be an integer >= 1")
        if self.timeout is not None and self.timeout <= 0:
            raise WordformerError(f"timeout={self.timeout!r} must be a positive number of seconds")
        if self.max_retry < 0:
            raise WordformerError(f"max_retry={self.max_retry!r} must be >= 0")

    @property
    def resolved_direction(self) -> str:
        return self.direction or METRICS[self.metric]

    @property
    def storage_spec(self) -> str:
        """The storage as the user would pass it again (the default SQLite file spelled out)."""
        if self.storage:
            return self.storage
        return "sqlite:///" + str((self.out_dir / "study.db").resolve())


def safe_url(spec: str) -> str:
    """The storage URL with any password hidden, for messages."""
    if spec.startswith(JOURNAL_PREFIX) or "://" not in spec:
        return spec
    try:
        from sqlalchemy.engine import make_url

        return make_url(spec).render_as_string(hide_password=True)
    except Exception:
        return spec.split("://", 1)[0] + "://..."


def open_storage(
    spec: Optional[str],
    out_dir: Path | str = Path("runs/tune"),
    *,
    heartbeat_interval: Optional[int] = 60,
    grace_period: Optional[int] = None,
    max_retry: int = 1,
    create: bool = True,
) -> optuna.storages.BaseStorage:
    """Open (and for RDB create) the storage named by ``spec``; heartbeats on for RDB storages."""
    out_dir = Path(out_dir)
    if not spec:
        db = out_dir / "study.db"
        if create:
            out_dir.mkdir(parents=True, exist_ok=True)
        elif not db.is_file():
            raise WordformerError(
                f"no study database at {db}; run `wordformer tune --out {out_dir}` first or pass --storage URL"
            )
        spec = "sqlite:///" + str(db.resolve())
    if spec.startswith(JOURNAL_PREFIX):
        path = Path(spec[len(JOURNAL_PREFIX):])
        if not str(path):
            raise WordformerError("storage journal: needs a file path, e.g. --storage journal:runs/tune/journal.log")
        if not create and not path.is_file():
            raise WordformerError(f"no journal file at {path}; run `wordformer tune --storage {spec}` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        # The open-lock works on every local file system, where the default symlink lock may not.
        backend = JournalFileBackend(str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path)))
        return JournalStorage(backend)
    if "://" not in spec:
        raise WordformerError(
            f"storage {spec!r} is not a database URL: use sqlite:///PATH.db, postgresql://USER@HOST/DB "
            f"(any SQLAlchemy URL) or journal:PATH"
        )
    if spec.startswith("sqlite:///") and create:
        Path(spec[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if spec.startswith("sqlite"):
        # Threads and heartbeats write at once; wait for the file lock instead of failing at once.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if heartbeat_interval:
                    kwargs.update(
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                            max_retry=max_retry
                        ),
                    )
                return optuna.storages.RDBStorage(spec, **kwargs)
        except ImportError as exc:
            raise WordformerError(
                f"storage {safe_url(spec)}: the database driver is missing ({exc}); for PostgreSQL "
                f"`pip install psycopg2-binary`"
            ) from None
        except Exception as exc:  # SQLAlchemy's connection and URL errors
            if attempt < 2 and any(s in str(exc) for s in ("already exists", "duplicate key", "UniqueViolation")):
                # Two workers creating the tables at the same moment: the other one won, open again.
                time.sleep(0.5 + attempt)
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WordformerError(
                f"cannot open storage {safe_url(spec)}: {first}; check the URL and that the server is running"
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def make_sampler(
    name: str, space: SearchSpace, seed: Optional[int] = None, *, n_startup_trials: Optional[int] = None
) -> optuna.samplers.BaseSampler:
    """Build a sampler by name; the same seed on a fresh study gives the same parameters."""
    startup = {} if n_startup_trials is None else {"n_startup_trials": n_startup_trials}
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **startup)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        # Without a seed use the unscrambled Sobol sequence: every worker then shares one sequence.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                seed=seed, scramble=seed is not None, warn_independent_sampling=False, warn_asynchronous_seeding=False
            )
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  (Optuna's CmaEsSampler needs it)
        except ImportError:
            raise WordformerError(
                "sampler cmaes needs the cmaes package: `pip install cmaes`, or use --sampler tpe or gp"
            ) from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **startup)
    raise WordformerError(f"sampler {name!r} is not one of: {', '.join(SAMPLERS)}")


def make_pruner(name: str, *, min_resource: int = 1) -> optuna.pruners.BasePruner:
    """Build a pruner by name; steps are training steps as reported at each validation."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource="auto", reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise WordformerError(f"pruner {name!r} is not one of: {', '.join(PRUNERS)}")


def _reseed(seed: Optional[int], done: int, sampler: str) -> Optional[int]:
    """Offset the seed by the trials already run, so a resumed study does not repeat its first draws.

    QMC keeps its seed: its position in the sequence is stored with the study instead.
    """
    if seed is None or sampler == "qmc" or done == 0:
        return seed
    return (seed + done) % (2**32)


def open_study(settings: StudySettings, space: SearchSpace) -> optuna.Study:
    """Create the study or load it to continue; refuses a metric or direction it was not made with."""
    storage = open_storage(
        settings.storage, settings.out_dir, heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace_period, max_retry=settings.max_retry,
    )
    direction = settings.resolved_direction
    try:
        study = optuna.create_study(
            storage=storage, study_name=settings.study_name, direction=direction, load_if_exists=True,
            sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.NopPruner(),
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WordformerError(f"cannot open study {settings.study_name!r} in {safe_url(settings.storage_spec)}: {first}") from None
    if study.direction.name.lower() != direction:
        raise WordformerError(
            f"study {settings.study_name!r} was created to {study.direction.name.lower()}, not {direction}; "
            f"pass --direction {study.direction.name.lower()} or a new --study NAME"
        )
    attrs = study.user_attrs
    if "metric" in attrs and attrs["metric"] != settings.metric:
        raise WordformerError(
            f"study {settings.study_name!r} optimises {attrs['metric']}, not {settings.metric}; "
            f"pass --metric {attrs['metric']} or a new --study NAME"
        )
    if "metric" not in attrs:
        study.set_user_attr("metric", settings.metric)
    if "space" not in attrs:
        study.set_user_attr("space", space.as_dict())
    done = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(
        settings.sampler, space, _reseed(settings.seed, done, settings.sampler),
        n_startup_trials=settings.n_startup_trials,
    )
    study.pruner = make_pruner(settings.pruner, min_resource=settings.pruner_min_resource)
    return study


def load_existing_study(settings: StudySettings) -> optuna.Study:
    """Load a study that must already exist (for reports and retraining)."""
    storage = open_storage(settings.storage, settings.out_dir, heartbeat_interval=None, create=False)
    names = optuna.study.get_all_study_names(storage)
    if settings.study_name not in names:
        known = ", ".join(names) if names else "none"
        raise WordformerError(
            f"no study {settings.study_name!r} in {safe_url(settings.storage_spec)} (studies there: {known}); "
            f"pass --study NAME"
        )
    return optuna.load_study(study_name=settings.study_name, storage=storage)


def run_study(
    settings: StudySettings,
    space: SearchSpace,
    objective: Objective,
    *,
    callbacks: Iterable[Callable[[optuna.Study, FrozenTrial], None]] = (),
    catch: Sequence[type[Exception]] = (),
) -> optuna.Study:
    """Run ``settings.n_trials`` more trials (or until ``timeout``) and return the study.

    Trials that raise :class:`TrialFailed` (or any type in ``catch``) are recorded as FAIL and
    the study continues; completed trials are in the storage as soon as they finish.
    """
    if settings.sampler == "grid":
        space.grid()  # refuse a float without step before anything is created
    study = open_study(settings, space)
    if settings.enqueue_defaults:
        study.enqueue_trial(space.defaults(), skip_if_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            objective,
            n_trials=settings.n_trials,
            timeout=settings.timeout,
            n_jobs=settings.n_jobs,
            catch=(TrialFailed, *catch),
            callbacks=list(callbacks),
            gc_after_trial=settings.gc_after_trial,
            show_progress_bar=settings.show_progress_bar,
        )
    return study


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best completed trial, or a message saying there is none yet."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise WordformerError(
            f"study {study.study_name!r} has no completed trial yet; run `wordformer tune` (more trials) first"
        )
    return study.best_trial


__all__ = [
    "DIRECTIONS", "FAIL_REASON", "METRICS", "PRUNERS", "SAMPLERS", "StudySettings", "TrialFailed",
    "best_trial", "fail_trial", "load_existing_study", "make_pruner", "make_sampler", "open_storage",
    "open_study", "run_study", "safe_url",
]
