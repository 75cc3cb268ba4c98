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

Trials train in ``OUT/STUDY/trial_NNNN``, and trial numbers restart in every study, so the study
folder records whose it is (``OUT/STUDY/study.json``: the study's ``uid`` user attribute and
storage). A study of the same name in another storage, or made anew after its database was
deleted, is refused there before any trial instead of overwriting the first one's checkpoints.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn, Optional, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import WordformerError, check_int
from ..files import make_folder
from .choices import DIRECTIONS, METRICS, PRUNERS, SAMPLERS
from .fixed import check_fixed, record_fixed
from .space import SearchSpace

logger = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:"
FAIL_REASON = "fail_reason"  # trial user attr that says why a trial failed
DIR_ATTR = "out_dir"  # trial user attr: the folder the trial trains in (OUT/STUDY/trial_NNNN)
UID_ATTR = "uid"  # study user attr: tells a study from another of the same name (other storage, recreated)
STUDY_FILE = "study.json"  # in OUT/STUDY: which study the trial folders there belong to
TRIAL_DIR = re.compile(r"trial_\d+")
# pip package of each SQLAlchemy driver, for the message when one is missing
DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary", "psycopg": "'psycopg[binary]'", "pg8000": "pg8000", "asyncpg": "asyncpg",
    "mysqldb": "mysqlclient", "pymysql": "PyMySQL", "mysqlconnector": "mysql-connector-python",
    "mariadbconnector": "mariadb", "asyncmy": "asyncmy", "aiomysql": "aiomysql", "pyodbc": "pyodbc",
    "pymssql": "pymssql", "oracledb": "oracledb", "cx_oracle": "cx_Oracle",
}

Objective = Callable[[optuna.Trial], float]


class TrialFailed(Exception):
    """Raised by an objective for a trial that cannot finish; the study records FAIL and goes on."""


def fail_trial(trial: optuna.Trial, reason: str) -> NoReturn:
    """Record why a trial failed (user attr ``fail_reason``) and end it as FAIL."""
    trial.set_user_attr(FAIL_REASON, reason)
    raise TrialFailed(reason) from None  # the reason says it all; no chained traceback in the log


def _first_line(exc: BaseException) -> str:
    """An exception's first line, for one-line messages."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


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
    fixed: Optional[dict[str, Any]] = None  # what every trial shares (tune.fixed.fixed_options); None: not checked

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
        check_study_name(self.study_name)
        for name in ("n_trials", "n_jobs", "heartbeat_interval", "grace_period", "n_startup_trials",
                     "pruner_min_resource"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if self.timeout is not None and self.timeout <= 0:
            raise WordformerError(f"timeout={self.timeout!r} must be a positive number of seconds")
        if self.max_retry < 0:
            raise WordformerError(f"max_retry={self.max_retry!r} must be >= 0")

    @property
    def resolved_direction(self) -> str:
        return self.direction or METRICS[self.metric]

    @property
    def study_dir(self) -> Path:
        """Where the trials train: OUT/STUDY (trial_NNNN folders, the report, the retrained best)."""
        return self.out_dir / self.study_name

    @property
    def storage_spec(self) -> str:
        """The storage as the user would pass it again (the default SQLite file spelled out)."""
        if self.storage:
            return self.storage
        return "sqlite:///" + str((self.out_dir / "study.db").resolve())


def check_study_name(name: Any) -> None:
    """Refuse a study name that is no plain folder name: it becomes OUT/STUDY, and must stay inside OUT."""
    if not isinstance(name, str) or not name.strip():
        raise WordformerError("study name is empty; pass --study NAME")
    if name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
        raise WordformerError(
            f"study name {name!r} is also the folder OUT/{name}: it must not be '.' or '..' or contain '/' or '\\'; "
            f"pass a plain name such as --study my_study"
        )


def safe_url(spec: str) -> str:
    """The storage URL with any password hidden, for messages."""
    if spec.startswith(JOURNAL_PREFIX) or "://" not in spec:
        return spec
    try:
        from sqlalchemy.engine import make_url

        return make_url(spec).render_as_string(hide_password=True)
    except Exception:
        return spec.split("://", 1)[0] + "://..."


def with_default_driver(spec: str) -> str:
    """Name psycopg2 in a ``postgresql://`` URL when psycopg (3) is missing but psycopg2 is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg (3), while wordformer installs
    psycopg2-binary: without this the URL the README shows would fail for a missing driver.
    """
    if not spec.startswith("postgresql://"):
        return spec
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + spec[len("postgresql://"):]
    return spec


def _missing_driver_advice(spec: str) -> str:
    """What to install for the driver the URL names (or its dialect's default driver)."""
    try:
        from sqlalchemy.engine import make_url

        dialect = make_url(spec).get_dialect()
    except Exception:
        return "install the database driver its dialect needs, or name one in the URL (dialect+driver://)"
    package = DRIVER_PACKAGES.get(dialect.driver, dialect.driver)
    return f"`pip install {package}` (the {dialect.driver} driver of {dialect.name}), or name another driver in the URL"


def _check_journal_file(path: Path, spec: str, *, create: bool) -> None:
    """Refuse a journal path that is a folder, or a file that is not an Optuna journal (it would be appended to)."""
    if path.is_dir():
        raise WordformerError(
            f"storage {spec}: {path} is a folder; give the journal a file name, e.g. --storage journal:{path / 'journal.log'}"
        )
    if not path.exists():
        if not create:
            raise WordformerError(f"no journal file at {path}; run `wordformer tune --storage {spec}` first")
        return
    first = b""
    for _ in range(20):
        try:
            with path.open("rb") as fh:
                first = fh.readline(1 << 20)
        except OSError as exc:
            raise WordformerError(f"storage {spec}: cannot read {path}: {exc.strerror or exc}") from None
        if not first or first.endswith(b"\n") or len(first) >= 1 << 20:
            break
        time.sleep(0.05)  # another worker may be writing the journal's first line
    if not first:
        return  # empty: a new journal
    try:
        entry = json.loads(first)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or "op_code" not in entry:
        raise WordformerError(
            f"storage {spec}: {path} is not an Optuna journal file (left unchanged); pass the file that "
            f"`wordformer tune --storage journal:PATH` wrote, or a path that does not exist yet"
        )


def _open_journal(spec: str, *, create: bool) -> optuna.storages.BaseStorage:
    raw = spec[len(JOURNAL_PREFIX):]
    if not raw.strip():
        raise WordformerError("storage journal: needs a file path, e.g. --storage journal:runs/tune/journal.log")
    path = Path(raw).expanduser()
    _check_journal_file(path, spec, create=create)
    make_folder(path.parent, advice="give --storage journal: a path whose folders can be made")
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    try:
        # The open-lock works on every local file system, where the default symlink lock may not.
        backend = JournalFileBackend(str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path)))
        return JournalStorage(backend)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable, or a damaged journal
        raise WordformerError(f"storage {spec}: cannot read the journal {path}: {_first_line(exc)}") from None


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
            make_folder(out_dir, advice="choose another --out")
        elif not db.is_file():
            raise WordformerError(
                f"no study database at {db}; run `wordformer tune --out {out_dir}` first or pass --storage URL"
            )
        spec = "sqlite:///" + str(db.resolve())
    if spec.startswith(JOURNAL_PREFIX):
        return _open_journal(spec, create=create)
    if "://" not in spec:
        raise WordformerError(
            f"storage {spec!r} is not a database URL: use sqlite:///PATH.db, postgresql://USER@HOST/DB "
            f"(any SQLAlchemy URL) or journal:PATH"
        )
    spec = with_default_driver(spec)
    if spec.startswith("sqlite:///") and create and spec != "sqlite:///:memory:":
        db_path = Path(spec[len("sqlite:///"):]).expanduser()
        if db_path.is_dir():
            raise WordformerError(f"storage {safe_url(spec)}: {db_path} is a folder; give the database a file name")
        make_folder(db_path.parent, advice="give --storage sqlite:/// a path whose folders can be made")
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
        except ImportError:
            raise WordformerError(
                f"storage {safe_url(spec)}: the database driver is not installed; {_missing_driver_advice(spec)}"
            ) from None
        except Exception as exc:  # SQLAlchemy's connection and URL errors
            if attempt < 2 and any(s in str(exc) for s in ("already exists", "duplicate key", "UniqueViolation")):
                # Two workers creating the tables at the same moment: the other one won, open again.
                time.sleep(0.5 + attempt)
                continue
            raise WordformerError(
                f"cannot open storage {safe_url(spec)}: {_first_line(exc)}; check the URL and that the server is running"
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


def _create_or_load(storage: optuna.storages.BaseStorage, name: str, direction: str) -> tuple[optuna.Study, bool]:
    """The study and whether this call created it (only one of several racing workers does)."""
    quiet = {"sampler": optuna.samplers.RandomSampler(), "pruner": optuna.pruners.NopPruner()}
    try:
        return optuna.create_study(storage=storage, study_name=name, direction=direction, **quiet), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, **quiet), False


def study_uid(study: optuna.Study, *, created: bool, wait: float = 5.0) -> str:
    """The study's identity (user attr ``uid``), set once by the worker that created the study.

    A study of the same name in another storage, or made again after its database was deleted, gets
    another uid, so its trials cannot be mistaken for this one's. Other workers wait for the creator
    to store it; a study without one (made before uids, or by Optuna directly) gets one derived from
    its id, the same in every worker, so racing workers agree.
    """
    if created:
        uid = uuid.uuid4().hex
        study.set_user_attr(UID_ATTR, uid)
        return uid
    deadline = time.monotonic() + wait
    while True:
        attrs = study.user_attrs
        if UID_ATTR in attrs:
            return str(attrs[UID_ATTR])
        if "metric" in attrs or study.get_trials(deepcopy=False) or time.monotonic() > deadline:
            break  # not being created right now: no creator will store a uid
        time.sleep(0.1)
    uid = f"study-{study._study_id}"
    study.set_user_attr(UID_ATTR, uid)
    return uid


def _read_owner(folder: Path) -> Optional[dict[str, Any]]:
    """The study file of a study folder (None when there is none yet)."""
    path = folder / STUDY_FILE
    for _ in range(20):
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise WordformerError(f"cannot read {path}: {exc.strerror or exc}; choose another --out or --study") from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and UID_ATTR in data:
            return data
        time.sleep(0.05)  # another worker is writing it
    raise WordformerError(
        f"{path} is not a study file written by wordformer tune; choose another --out or --study, or move it away"
    )


def _foreign(folder: Path, owner: dict[str, Any], where: str) -> WordformerError:
    other = f"storage {owner.get('storage')}" if owner.get("storage") != where else "the same storage, since deleted or made anew"
    return WordformerError(
        f"{folder} holds the trials of another study named {owner.get('study')!r} ({other}, started "
        f"{owner.get('created')}); this study would overwrite them: choose another --out or --study, "
        f"or move {folder} away"
    )


def _unrecorded_trial_dirs(folder: Path, trials: Sequence[FrozenTrial]) -> list[str]:
    """trial_NNNN folders that none of ``trials`` trained in (by name: the folder may have moved)."""
    try:
        found = sorted(p.name for p in folder.iterdir() if p.is_dir() and TRIAL_DIR.fullmatch(p.name))
    except (FileNotFoundError, NotADirectoryError):
        return []
    recorded = {Path(str(t.user_attrs[DIR_ATTR])).name for t in trials if DIR_ATTR in t.user_attrs}
    return [name for name in found if name not in recorded]


def _refuse_unknown_trials(folder: Path, unknown: list[str], name: str, where: str) -> NoReturn:
    shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
    raise WordformerError(
        f"{folder} already holds trial folders ({shown}) that study {name!r} in {where} did not write; "
        f"choose another --out or --study, or move {folder} away"
    )


def claim_study_dir(folder: Path, study: optuna.Study, uid: str, where: str) -> None:
    """Make ``folder`` this study's (writing STUDY_FILE), or refuse if another study's trials are there."""
    owner = _read_owner(folder)
    if owner is None:
        listed = _unrecorded_trial_dirs(folder, [])  # list the folders before reading the trials (races)
        if listed:
            unknown = _unrecorded_trial_dirs(folder, study.get_trials(deepcopy=False))
            if unknown:
                _refuse_unknown_trials(folder, unknown, study.study_name, where)
        make_folder(folder, advice="choose another --out or --study")
        record = {"study": study.study_name, UID_ATTR: uid, "storage": where,
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            fd = os.open(folder / STUDY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass  # another worker was first
        except OSError as exc:
            raise WordformerError(f"cannot write {folder / STUDY_FILE}: {exc.strerror or exc}; choose another --out") from None
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, indent=1)
                fh.write("\n")
            return
        owner = _read_owner(folder)
        assert owner is not None
    if owner.get(UID_ATTR) != uid:
        raise _foreign(folder, owner, where)


def check_study_dir(folder: Path, study: optuna.Study) -> None:
    """Refuse to write (report, retrained model) into a study folder that belongs to another study."""
    uid = study.user_attrs.get(UID_ATTR)
    owner = _read_owner(folder)
    if uid is not None and owner is not None and owner.get(UID_ATTR) != uid:
        raise WordformerError(
            f"{folder} belongs to another study named {owner.get('study')!r} (storage {owner.get('storage')}); "
            f"pass the --out that study {study.study_name!r} ran with, or another --out"
        )


def _describe_distribution(dist: optuna.distributions.BaseDistribution) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    kind = "int" if isinstance(dist, optuna.distributions.IntDistribution) else "float"
    return f"{kind} in [{dist.low}, {dist.high}]" + (" on a log scale" if getattr(dist, "log", False) else "")


def check_space_matches(study: optuna.Study, space: SearchSpace) -> None:
    """Refuse a space whose parameters the study's trials sampled in an incompatible way.

    Optuna would refuse it too, but only inside the first trial: a traceback, and a FAIL trial per attempt.
    Ranges may change (Optuna allows that); a parameter's kind, log scale or choices may not.
    """
    new = {p.name: p.distribution() for p in space.params}
    seen: set[tuple[str, str]] = set()
    for trial in study.get_trials(deepcopy=False):
        for name, old in trial.distributions.items():
            key = (name, optuna.distributions.distribution_to_json(old))
            if name not in new or key in seen:
                continue
            seen.add(key)
            try:
                optuna.distributions.check_distribution_compatibility(old, new[name])
            except ValueError:
                raise WordformerError(
                    f"search space {space.source}: parameter '{name}' has {_describe_distribution(new[name])}, but "
                    f"study {study.study_name!r} already ran trial {trial.number} with "
                    f"{_describe_distribution(old)}; use the space the study started with, or a new --study NAME"
                ) from None


def open_study(settings: StudySettings, space: SearchSpace) -> optuna.Study:
    """Create the study or load it to continue; refuses a metric, direction, space or fixed options
    (corpus, tokenizer, pairs, options it does not tune) it was not made with, and a study folder that
    holds another study's trials (before any trial starts)."""
    storage = open_storage(
        settings.storage, settings.out_dir, heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace_period, max_retry=settings.max_retry,
    )
    where = safe_url(settings.storage_spec)
    folder = settings.study_dir
    owner = _read_owner(folder)  # before the names: a folder's owner was created before its file was written
    try:
        exists = settings.study_name in optuna.study.get_all_study_names(storage)
    except Exception as exc:
        raise WordformerError(f"cannot read the studies in {where}: {_first_line(exc)}") from None
    if not exists:  # a new study: nothing in the folder can be its own
        if owner is not None:
            raise _foreign(folder, owner, where)
        unknown = _unrecorded_trial_dirs(folder, [])
        if unknown:
            _refuse_unknown_trials(folder, unknown, settings.study_name, where)
    make_folder(folder, advice="choose another --out or --study")
    direction = settings.resolved_direction
    try:
        study, created = _create_or_load(storage, settings.study_name, direction)
    except Exception as exc:
        raise WordformerError(f"cannot open study {settings.study_name!r} in {where}: {_first_line(exc)}") from None
    uid = study_uid(study, created=created)
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
    check_space_matches(study, space)
    note = check_fixed(study, settings.fixed, where) if settings.fixed is not None else None
    claim_study_dir(folder, study, uid, where)
    if settings.fixed is not None:
        record_fixed(study, settings.fixed, where)
    if note:
        logger.warning("%s", note)
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
    try:
        names = optuna.study.get_all_study_names(storage)
    except Exception as exc:
        raise WordformerError(f"cannot read the studies in {safe_url(settings.storage_spec)}: {_first_line(exc)}") from None
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
    on_open: Optional[Callable[[optuna.Study], None]] = None,
) -> optuna.Study:
    """Run ``settings.n_trials`` more trials (or until ``timeout``) and return the study.

    Trials that raise :class:`TrialFailed` (or any type in ``catch``) are recorded as FAIL and
    the study continues; completed trials are in the storage as soon as they finish. ``on_open``
    is called once the study passed its checks, before the first trial (the CLI's header line,
    so that a refused study prints only its error).
    """
    if settings.sampler == "grid":
        space.grid()  # refuse a float without step before anything is created
    study = open_study(settings, space)
    if on_open is not None:
        on_open(study)
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
    "DIR_ATTR", "DIRECTIONS", "FAIL_REASON", "METRICS", "PRUNERS", "SAMPLERS", "STUDY_FILE", "StudySettings",
    "TrialFailed", "UID_ATTR", "best_trial", "check_space_matches", "check_study_dir", "check_study_name",
    "claim_study_dir", "fail_trial", "load_existing_study", "make_pruner", "make_sampler",
    "open_storage", "open_study", "run_study", "safe_url", "study_uid", "with_default_driver",
]
