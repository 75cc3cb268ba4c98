"""Several worker processes on one study: PostgreSQL (a real server), journal files, and heartbeats.

Workers run this file as a script (``python tests/test_tune_workers.py URL STUDY N LOG MODE START_AT``) with
a cheap objective, so the tests exercise storage and coordination, not training.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg import postgres_server, postgres_url  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.slow  # real processes and servers: make test runs it, make test-fast does not

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT = 1  # seconds between heartbeats
GRACE = 1  # seconds without a heartbeat before a trial is stale (safe here: one running worker at a time
# in the kill tests; the others run trials of a few milliseconds)
STALE_WAIT = GRACE + 1.3  # heartbeat times are stored to the second, so wait a little over GRACE + 1
SPACE = {"params": {
    "lr": {"target": "train.lr", "type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "layers": {"target": "model.num_layers", "type": "int", "low": 1, "high": 8},
}}


def cheap_value(layers: int, lr: float) -> float:
    return (math.log10(lr) + 3) ** 2 + 0.1 * layers


def wait_for_heartbeat(trial: optuna.Trial, timeout: float = 60) -> None:
    """Block until the trial's first heartbeat is stored: Optuna never fails a trial that has none."""
    from sqlalchemy import text

    backend = getattr(trial.study._storage, "_backend", trial.study._storage)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with backend.engine.connect() as conn:
            query = text("SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = :t")
            if conn.execute(query, {"t": trial._trial_id}).scalar():
                return
        time.sleep(0.05)
    raise RuntimeError(f"trial {trial.number} recorded no heartbeat in {timeout} s")


def worker(storage: str, study: str, trials: int, log: str, mode: str, start_at: float) -> None:
    """One worker: ``normal`` evaluates the cheap objective, ``hang`` blocks in its first trial.

    It starts its study no earlier than ``start_at`` (epoch seconds), so the test can launch it
    while an earlier worker's heartbeat is still going stale and overlap the waiting with imports.
    """
    from wordformer.tune.space import parse_space
    from wordformer.tune.study import StudySettings, run_study

    space = parse_space(SPACE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        model, _, train = space.configs(space.suggest(trial))
        with open(log, "a", encoding="utf-8") as fh:
            if mode == "hang":
                wait_for_heartbeat(trial)
                fh.write(f"started {os.getpid()} {trial.number}\n")
                fh.flush()
                time.sleep(3600)  # killed by the test
            value = cheap_value(model.num_layers, train.lr)
            time.sleep(0.02)
            fh.write(f"done {os.getpid()} {trial.number} {value!r}\n")
        return value

    settings = StudySettings(out_dir=Path(log).parent, study_name=study, storage=storage, sampler="random",
                             pruner="none", n_trials=trials, heartbeat_interval=HEARTBEAT, grace_period=GRACE,
                             gc_after_trial=False)
    time.sleep(max(0.0, start_at - time.time()))
    run_study(settings, space, objective)


def start_worker(storage: str, study: str, trials: int, log: Path, mode: str = "normal",
                 start_at: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, __file__, storage, study, str(trials), str(log), mode, repr(start_at)]
    return subprocess.Popen(argv, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]


def wait_for_line(log: Path, prefix: str, proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text().splitlines():
                if line.startswith(prefix):
                    return line
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.communicate()[0][-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {prefix!r} in {log} after {timeout} s")


def kill(proc: subprocess.Popen) -> float:
    """SIGKILL the worker; returns when the next worker may start (its trial's heartbeat is stale)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return time.time() + STALE_WAIT


def load(storage: str, study: str) -> optuna.Study:
    from wordformer.tune.study import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat_interval=None))


def check_workers_share_study(storage: str, tmp_path: Path, *, workers: int = 2, trials: int = 6) -> None:
    """N workers x ``trials`` each: every evaluation is one trial, none lost, none twice."""
    logs = [tmp_path / f"worker{i}.log" for i in range(workers)]
    procs = [start_worker(storage, "shared", trials, log) for log in logs]
    for proc in procs:
        finish(proc)
    study = load(storage, "shared")
    states = [t.state for t in study.trials]
    assert len(study.trials) == workers * trials
    assert states == [optuna.trial.TrialState.COMPLETE] * (workers * trials)
    assert sorted(t.number for t in study.trials) == list(range(workers * trials))
    done: dict[int, tuple[int, float]] = {}
    for log in logs:
        lines = [line.split() for line in log.read_text().splitlines() if line.startswith("done")]
        assert len(lines) == trials  # each worker ran its own share
        for _, pid, number, value in lines:
            assert int(number) not in done, f"trial {number} evaluated twice"
            done[int(number)] = (int(pid), float(value))
    assert sorted(done) == list(range(workers * trials))
    for t in study.trials:  # the stored value is the one its worker computed for its parameters
        assert t.value == done[t.number][1]
        assert t.value == cheap_value(t.params["layers"], t.params["lr"])
    assert len({pid for pid, _ in done.values()}) == workers


def check_killed_worker_is_failed_and_retried_once(storage: str, tmp_path: Path) -> None:
    """SIGKILL a worker mid-trial twice: the trial is failed by heartbeat, retried once, then not again."""
    log = tmp_path / "hb.log"
    first = start_worker(storage, "hb", 1, log, mode="hang")
    wait_for_line(log, "started", first)
    stale = kill(first)
    # The next worker fails the stale trial 0, re-queues it as trial 1 and hangs in that retry too.
    second = start_worker(storage, "hb", 1, log, mode="hang", start_at=stale)
    line = wait_for_line(log, f"started {second.pid}", second)
    assert line.split()[2] == "1"
    stale = kill(second)
    third = start_worker(storage, "hb", 2, log, start_at=stale)
    finish(third)
    study = load(storage, "hb")
    trials = study.trials
    assert [t.state for t in trials] == [
        optuna.trial.TrialState.FAIL, optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.COMPLETE,
    ]
    assert trials[1].params == trials[0].params  # the retry re-ran the same configuration
    assert trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].system_attrs["retry_history"] == [0]
    assert "failed_trial" not in trials[2].system_attrs  # the retry was not retried again
    assert "failed_trial" not in trials[3].system_attrs


def check_killed_worker_retry_completes(storage: str, tmp_path: Path) -> None:
    log = tmp_path / "retry.log"
    first = start_worker(storage, "retry", 1, log, mode="hang")
    wait_for_line(log, "started", first)
    finish(start_worker(storage, "retry", 1, log, start_at=kill(first)))
    trials = load(storage, "retry").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0


def test_postgres_two_worker_processes_share_one_study(postgres_url: str, tmp_path: Path) -> None:
    check_workers_share_study(postgres_url, tmp_path)


def test_postgres_killed_worker_retry_completes(postgres_url: str, tmp_path: Path) -> None:
    check_killed_worker_retry_completes(postgres_url, tmp_path)


def test_sqlite_killed_worker_failed_by_heartbeat_and_retried_once(tmp_path: Path) -> None:
    check_killed_worker_is_failed_and_retried_once(f"sqlite:///{tmp_path / 'hb.db'}", tmp_path)


def test_journal_two_worker_processes_share_one_study(tmp_path: Path) -> None:
    check_workers_share_study(f"journal:{tmp_path / 'journal.log'}", tmp_path, trials=4)


def _light_package() -> None:
    """Register ``wordformer`` without running its ``__init__`` (which imports torch and Lightning).

    Workers only need the tuning modules; skipping the eager imports saves seconds per process.
    """
    import types

    package = types.ModuleType("wordformer")
    package.__path__ = [str(ROOT / "src" / "wordformer")]
    sys.modules["wordformer"] = package


if __name__ == "__main__":
    _light_package()
    storage_arg, study_arg, trials_arg, log_arg, mode_arg, start_arg = sys.argv[1:7]
    worker(storage_arg, study_arg, int(trials_arg), log_arg, mode_arg, float(start_arg))
