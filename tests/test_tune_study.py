"""Studies with a cheap synthetic objective: samplers, grid, failures, resume, journal, report, pruning."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import optuna
import pytest
import torch

from wordformer.errors import WordformerError
from wordformer.tune import objective as objective_module
from wordformer.tune.objective import (
    CheckpointPruner, ObjectiveSettings, StepPruningCallback, TrainingObjective, metric_value,
)
from wordformer.tune.report import write_report
from wordformer.tune.space import parse_space
from wordformer.tune.study import (
    FAIL_REASON, SAMPLERS, StudySettings, best_trial, fail_trial, load_existing_study, open_storage, run_study,
)
from wordformer.training import TrainResult

from stand_ins import train_result

SPACE = parse_space({"params": {
    "lr": {"target": "train.lr", "type": "float", "low": 1e-4, "high": 1e-2, "log": True, "default": 1e-3},
    "layers": {"target": "model.num_layers", "type": "int", "low": 1, "high": 4, "default": 2},
    "pos": {"target": "model.positional", "type": "categorical", "choices": ["sinusoidal", "learned"]},
    "tie": {"target": "model.tie_weights", "type": "bool", "default": True},
}}, source="test-space")

GRID_SPACE = parse_space({"params": {
    "dropout": {"target": "model.dropout", "type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
    "layers": {"target": "model.num_layers", "type": "int", "low": 1, "high": 2},
}}, source="grid-space")


def cheap_value(model: Any, train: Any) -> float:
    return ((math.log10(train.lr) + 3) ** 2 + 0.1 * model.num_layers + 0.05 * model.dropout * 10
            + (0.3 if model.positional == "learned" else 0.0) + (0.05 if model.tie_weights else 0.0))


def cheap_objective(space: Any) -> Any:
    def objective(trial: optuna.Trial) -> float:
        model, _, train = space.configs(space.suggest(trial))
        value = cheap_value(model, train)
        for step in (1, 2, 3):
            trial.report(value + 1.0 / step, step)
        return value

    return objective


MEMORY = "sqlite:///:memory:"  # fast; tests about files and resuming use the default OUT/study.db


def settings(tmp_path: Path, **kw: Any) -> StudySettings:
    base = dict(out_dir=tmp_path, pruner="none", n_trials=4, seed=0, heartbeat_interval=None, gc_after_trial=False,
                storage=MEMORY)
    base.update(kw)
    return StudySettings(**base)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_are_seeded_and_reproducible(tmp_path: Path, sampler: str) -> None:
    space = GRID_SPACE if sampler == "grid" else SPACE
    if sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        with pytest.raises(WordformerError, match=r"sampler cmaes needs the cmaes package: `pip install cmaes`"):
            run_study(settings(tmp_path, sampler=sampler), space, cheap_objective(space))
        return
    n = 6
    runs = []
    for name in ("a", "b"):
        study = run_study(settings(tmp_path / name, sampler=sampler, seed=7, n_trials=n, n_startup_trials=3),
                          space, cheap_objective(space))
        runs.append([t.params for t in study.trials])
    assert len(runs[0]) == n and runs[0] == runs[1]
    if sampler in ("random", "qmc", "tpe"):
        other = run_study(settings(tmp_path / "c", sampler=sampler, seed=8, n_trials=n, n_startup_trials=3),
                          space, cheap_objective(space))
        assert [t.params for t in other.trials] != runs[0]


def test_grid_visits_every_point_once_and_stops(tmp_path: Path) -> None:
    study = run_study(settings(tmp_path, sampler="grid", n_trials=50), GRID_SPACE, cheap_objective(GRID_SPACE))
    points = sorted((t.params["dropout"], t.params["layers"]) for t in study.trials)
    assert points == [(d, n) for d in (0.0, 0.1, 0.2) for n in (1, 2)]


def test_grid_refuses_float_without_step(tmp_path: Path) -> None:
    with pytest.raises(WordformerError, match=r"grid sampler: float parameter 'lr' has no step"):
        run_study(settings(tmp_path, sampler="grid"), SPACE, cheap_objective(SPACE))


def fake_train(model: Any, data: Any, train: Any, out_dir: Path, **kw: Any) -> TrainResult:
    """Stands in for wordformer.training.train: fails on some configurations, writes checkpoint files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if model.num_layers == 2:
        raise WordformerError("num_layers=2 is a bad combination here")
    if model.num_layers == 3:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    (out_dir / "best.ckpt").write_bytes(b"x")
    (out_dir / "last.ckpt").write_bytes(b"x")
    value = math.nan if model.num_layers == 4 else cheap_value(model, train)
    return train_result(out_dir, value, {"val_loss": value, "val_acc": 0.5})


def test_failed_trials_recorded_with_reason_and_study_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    freed: list[int] = []
    monkeypatch.setattr(objective_module, "_free_memory", lambda: freed.append(1))  # gc.collect is slow
    objective = TrainingObjective(ObjectiveSettings(space=SPACE, out_dir=tmp_path, prune=False), train_fn=fake_train)
    study = run_study(settings(tmp_path, sampler="random", n_trials=16), SPACE, objective)
    assert len(study.trials) == 16
    by_layers: dict[int, set] = {}
    for t in study.trials:
        by_layers.setdefault(t.params["layers"], set()).add(t.state)
        if t.state == optuna.trial.TrialState.FAIL:
            reason = t.user_attrs[FAIL_REASON]
            expected = {2: "bad combination", 3: "out of memory: CUDA out of memory", 4: "val_loss is nan"}
            assert expected[t.params["layers"]] in reason
        else:
            assert t.params["layers"] == 1 and t.state == optuna.trial.TrialState.COMPLETE
            assert Path(t.user_attrs["checkpoint"]).name == "best.ckpt"
            assert t.user_attrs["config"]["model"]["num_layers"] == 1
    assert set(by_layers) == {1, 2, 3, 4}  # every kind happened and the study kept going
    assert best_trial(study).params["layers"] == 1
    assert len(freed) == sum(t.params["layers"] == 3 for t in study.trials)  # memory freed after each OOM


def test_unexpected_errors_are_not_swallowed(tmp_path: Path) -> None:
    def broken(*args: Any, **kw: Any) -> None:
        raise KeyError("a bug")

    objective = TrainingObjective(ObjectiveSettings(space=SPACE, out_dir=tmp_path, prune=False), train_fn=broken)
    with pytest.raises(KeyError):
        run_study(settings(tmp_path, n_trials=2), SPACE, objective)


def test_ctrl_c_records_the_trial_as_interrupted_and_says_how_to_go_on(tmp_path: Path) -> None:
    def interrupted(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt

    objective = TrainingObjective(ObjectiveSettings(space=SPACE, out_dir=tmp_path, prune=False), train_fn=interrupted)
    db = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(KeyboardInterrupt, match="run the same command again"):
        run_study(settings(tmp_path, n_trials=3, storage=db), SPACE, objective)
    study = load_existing_study(settings(tmp_path, storage=db))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]  # not left RUNNING, no more trials
    assert study.trials[0].user_attrs[FAIL_REASON] == "interrupted (Ctrl-C)"


def test_checkpoint_pruner_keeps_only_the_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objective_module, "_free_memory", lambda: None)
    objective = TrainingObjective(ObjectiveSettings(space=SPACE, out_dir=tmp_path, prune=False), train_fn=fake_train)
    study = run_study(settings(tmp_path, sampler="random", n_trials=12), SPACE, objective,
                      callbacks=[CheckpointPruner()])
    best = best_trial(study)
    left = sorted(p.parent.name for p in tmp_path.rglob("*.ckpt"))
    assert left == [f"trial_{best.number:04d}"] * 2
    assert Path(best.user_attrs["checkpoint"]).is_file()


def test_sqlite_resume_keeps_completed_trials(tmp_path: Path) -> None:
    first = run_study(settings(tmp_path, n_trials=2, sampler="random", storage=None), SPACE, cheap_objective(SPACE))
    before = [(t.number, t.params, t.value, t.datetime_complete) for t in first.trials]
    assert (tmp_path / "study.db").is_file()
    again = run_study(settings(tmp_path, n_trials=2, sampler="random", storage=None), SPACE, cheap_objective(SPACE))
    after = [(t.number, t.params, t.value, t.datetime_complete) for t in again.trials]
    assert len(after) == 4 and after[:2] == before
    # the seed moves on with the study, so a resumed run does not repeat its first draws
    assert after[2][1] != after[0][1]
    assert len(load_existing_study(settings(tmp_path, storage=None)).trials) == 4


def test_journal_storage_resumes(tmp_path: Path) -> None:
    journal = f"journal:{tmp_path / 'j' / 'study.log'}"
    run_study(settings(tmp_path, storage=journal, n_trials=2), SPACE, cheap_objective(SPACE))
    study = run_study(settings(tmp_path, storage=journal, n_trials=3), SPACE, cheap_objective(SPACE))
    assert len(study.trials) == 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert not (tmp_path / "study.db").exists()


def test_enqueue_defaults_runs_defaults_first_only_once(tmp_path: Path) -> None:
    s = settings(tmp_path, n_trials=2, enqueue_defaults=True, storage=None)
    run_study(s, SPACE, cheap_objective(SPACE))
    study = run_study(s, SPACE, cheap_objective(SPACE))
    assert study.trials[0].params == SPACE.defaults()
    assert sum(t.params == SPACE.defaults() for t in study.trials) == 1


def test_metric_sets_direction_and_a_study_keeps_its_metric(tmp_path: Path) -> None:
    assert settings(tmp_path, metric="val_acc").resolved_direction == "maximize"
    assert settings(tmp_path, metric="val_ppl").resolved_direction == "minimize"
    assert settings(tmp_path, metric="val_acc", direction="minimize").resolved_direction == "minimize"
    db = f"sqlite:///{tmp_path / 'm.db'}"
    run_study(settings(tmp_path, metric="val_acc", n_trials=1, storage=db), SPACE, cheap_objective(SPACE))
    with pytest.raises(WordformerError, match=r"optimises val_acc, not val_loss; pass --metric val_acc"):
        run_study(settings(tmp_path, metric="val_loss", direction="maximize", n_trials=1, storage=db), SPACE,
                  cheap_objective(SPACE))
    with pytest.raises(WordformerError, match=r"was created to maximize, not minimize"):
        run_study(settings(tmp_path, metric="val_loss", n_trials=1, storage=db), SPACE, cheap_objective(SPACE))


def test_metric_value_per_metric() -> None:
    result = train_result(Path("."), 2.0, {"val_loss": 2.5, "val_acc": 0.4})
    assert metric_value(result, "val_loss") == 2.0
    assert math.isclose(metric_value(result, "val_ppl"), math.exp(2.0))
    assert metric_value(result, "val_acc") == 0.4


def test_bad_settings_and_storages(tmp_path: Path) -> None:
    with pytest.raises(WordformerError, match=r"sampler 'bayes' is not one of"):
        settings(tmp_path, sampler="bayes")
    with pytest.raises(WordformerError, match=r"storage 'nowhere' is not a database URL"):
        open_storage("nowhere", tmp_path)
    with pytest.raises(WordformerError, match=r"cannot open storage postgresql\+psycopg2://u:\*\*\*@127.0.0.1:1/x"):
        open_storage("postgresql+psycopg2://u:secret@127.0.0.1:1/x", tmp_path)
    with pytest.raises(WordformerError, match=r"no study database at"):
        load_existing_study(settings(tmp_path / "empty", storage=None))
    run_study(settings(tmp_path, n_trials=1, storage=None), SPACE, cheap_objective(SPACE))
    with pytest.raises(WordformerError, match=r"no study 'other' in .* \(studies there: wordformer\)"):
        load_existing_study(settings(tmp_path, study_name="other", storage=None))


def test_no_completed_trial_is_a_clear_error(tmp_path: Path) -> None:
    def always_fails(trial: optuna.Trial) -> float:
        fail_trial(trial, "nothing works")

    study = run_study(settings(tmp_path, n_trials=2), SPACE, always_fails)
    assert [t.user_attrs[FAIL_REASON] for t in study.trials] == ["nothing works"] * 2
    with pytest.raises(WordformerError, match=r"has no completed trial yet"):
        best_trial(study)


@pytest.mark.slow
def test_report_writes_table_csv_and_plots(tmp_path: Path) -> None:
    objective = cheap_objective(SPACE)

    def sometimes_fails(trial: optuna.Trial) -> float:
        if trial.number == 2:
            fail_trial(trial, "boom")
        return objective(trial)

    study = run_study(settings(tmp_path, n_trials=6), SPACE, sometimes_fails)
    report = write_report(study, tmp_path / "report")
    assert report.csv_path.is_file()
    lines = report.csv_path.read_text().splitlines()
    assert len(lines) == 7 and lines[0].startswith("rank,trial,state,value,duration_s,param:")
    assert {p.name for p in report.pngs} == {
        "history.png", "importances.png", "parallel_coordinate.png", "slice.png", "intermediate_values.png"}
    assert all(p.stat().st_size > 1000 for p in report.pngs)
    header = report.table.splitlines()[0].split()
    assert header[:6] == ["rank", "trial", "state", "value", "duration", "parameters"]
    assert report.rows[0].rank == 1 and report.best is report.rows[0]
    failed = [r for r in report.rows if r.state == "FAIL"]
    assert failed and failed[0].rank is None and failed[0].note == "boom"
    values = [r.value for r in report.rows if r.rank is not None]
    assert values == sorted(values)
    if importlib.util.find_spec("plotly") is None:
        assert any("plotly is not installed: wrote PNG only" in n for n in report.notes)
        assert report.htmls == []
    else:
        assert {p.name for p in report.htmls} == {p.with_suffix(".html").name for p in report.pngs}


def test_step_pruning_callback_reports_each_validation_by_step() -> None:
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=5.0))
    trial = study.ask()
    callback = StepPruningCallback(trial, monitor="val_loss")
    trainer = SimpleNamespace(sanity_checking=False, global_step=10, callback_metrics={"val_loss": torch.tensor(3.0)})
    callback.on_validation_end(trainer, None)
    trainer.global_step, trainer.callback_metrics = 20, {"val_loss": torch.tensor(2.0)}
    callback.on_validation_end(trainer, None)
    trainer.global_step, trainer.callback_metrics = 30, {"val_loss": torch.tensor(9.0)}
    with pytest.raises(optuna.TrialPruned, match="pruned at step 30"):
        callback.on_validation_end(trainer, None)
    stored = study._storage.get_trial(trial._trial_id).intermediate_values
    assert stored == {10: 3.0, 20: 2.0, 30: 9.0}


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_pruners_stop_bad_trials(tmp_path: Path, pruner: str) -> None:
    def objective(trial: optuna.Trial) -> float:
        base = 0.0 if trial.number < 6 else 10.0  # later trials are clearly worse
        for step in range(1, 10):
            trial.report(base + 1.0 / step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return base

    study = run_study(settings(tmp_path, pruner=pruner, n_trials=10), SPACE, objective)
    states = [t.state.name for t in study.trials]
    assert "PRUNED" in states[6:] and "PRUNED" not in states[:1]


def test_nopruner_never_prunes(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        trial.report(float(trial.number), 1)
        assert not trial.should_prune()
        return float(trial.number)

    study = run_study(settings(tmp_path, pruner="none", n_trials=8), SPACE, objective)
    assert all(t.state.name == "COMPLETE" for t in study.trials)


def test_threads_share_a_sqlite_study(tmp_path: Path) -> None:
    study = run_study(settings(tmp_path, storage=None, n_trials=8, n_jobs=2, heartbeat_interval=1, sampler="random"),
                      SPACE, cheap_objective(SPACE))
    assert len(study.trials) == 8 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert sorted(t.number for t in study.trials) == list(range(8))


# ------------------------------------------------------------------------------------------ bug fixes


def test_another_study_never_overwrites_trial_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objective_module, "_free_memory", lambda: None)
    space = parse_space({"params": {"lr": SPACE.param("lr").as_dict(), "pos": SPACE.param("pos").as_dict()},
                         "fixed": {"model.num_layers": 1}})
    objective = TrainingObjective(ObjectiveSettings(space=space, out_dir=tmp_path, prune=False), train_fn=fake_train)
    run_study(settings(tmp_path, storage=None, n_trials=1), space, objective)
    ckpt = tmp_path / "wordformer" / "trial_0000" / "best.ckpt"
    ckpt.write_bytes(b"study one's weights")
    journal = tmp_path / "j.log"
    with pytest.raises(WordformerError, match=r"holds the trials of another study named 'wordformer' \(storage "
                                              r"sqlite:///.*\); this study would overwrite them: choose another --out"):
        run_study(settings(tmp_path, storage=f"journal:{journal}", n_trials=1), space, objective)
    assert ckpt.read_bytes() == b"study one's weights"
    assert not optuna.study.get_all_study_names(open_storage(f"journal:{journal}"))  # refused before creating it

    (tmp_path / "study.db").rename(tmp_path / "moved.db")  # the same storage, made anew
    with pytest.raises(WordformerError, match=r"\(the same storage, since deleted or made anew, started "):
        run_study(settings(tmp_path, storage=None, n_trials=1), space, objective)
    assert ckpt.read_bytes() == b"study one's weights"

    (tmp_path / "study.db").unlink()
    (tmp_path / "moved.db").rename(tmp_path / "study.db")  # the original study resumes, into new folders
    study = run_study(settings(tmp_path, storage=None, n_trials=1), space, objective)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert ckpt.read_bytes() == b"study one's weights"
    assert (tmp_path / "wordformer" / "trial_0001" / "best.ckpt").is_file()

    # a folder of trials without a study file (from before study files) is no new study's either
    (tmp_path / "old" / "wordformer" / "trial_0000").mkdir(parents=True)
    with pytest.raises(WordformerError, match=r"already holds trial folders \(trial_0000\) that study 'wordformer'"):
        run_study(settings(tmp_path / "old", storage=None, n_trials=1), space, objective)


def test_report_folder_of_another_study_is_refused(tmp_path: Path) -> None:
    from wordformer.tune.study import check_study_dir

    mine = run_study(settings(tmp_path / "a", n_trials=1), SPACE, cheap_objective(SPACE))
    other = run_study(settings(tmp_path / "b", n_trials=1), SPACE, cheap_objective(SPACE))
    check_study_dir(tmp_path / "a" / "wordformer", mine)
    with pytest.raises(WordformerError, match=r"belongs to another study named 'wordformer'"):
        check_study_dir(tmp_path / "a" / "wordformer", other)


@pytest.mark.parametrize("name", ["../../evil", "a/b", "a\\b", "..", ".", "", "  "])
def test_study_name_must_be_a_plain_folder_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(WordformerError, match=r"study name .*(must not be|is empty)") as info:
        settings(tmp_path / "out", study_name=name)
    assert "\n" not in str(info.value)
    with pytest.raises(WordformerError):
        ObjectiveSettings(space=SPACE, out_dir=tmp_path / "out", study_name=name)
    assert not list(tmp_path.iterdir())


def test_changed_choices_refused_before_any_trial(tmp_path: Path) -> None:
    s = settings(tmp_path, storage=None, n_trials=2)
    run_study(s, SPACE, cheap_objective(SPACE))
    changed = parse_space({"params": {**SPACE.as_dict()["params"],
                                      "pos": {"target": "model.positional", "type": "categorical",
                                              "choices": ["learned"]}}}, source="changed.yaml")
    with pytest.raises(WordformerError, match=r"search space changed.yaml: parameter 'pos' has choices \['learned'\], "
                                              r"but study 'wordformer' already ran trial 0 with choices "
                                              r"\['sinusoidal', 'learned'\]; use the space the study started with"):
        run_study(s, changed, cheap_objective(changed))
    log_lr = parse_space({"params": {**SPACE.as_dict()["params"],
                                     "lr": {"target": "train.lr", "type": "float", "low": 1e-4, "high": 1e-2}}})
    with pytest.raises(WordformerError, match=r"parameter 'lr' has float in \[0.0001, 0.01\], but .* on a log scale"):
        run_study(s, log_lr, cheap_objective(log_lr))
    assert len(load_existing_study(s).trials) == 2  # no junk FAIL trial
    wider = parse_space({"params": {**SPACE.as_dict()["params"],
                                    "layers": {"target": "model.num_layers", "type": "int", "low": 1, "high": 6}}})
    assert len(run_study(s, wider, cheap_objective(wider)).trials) == 4  # a new range is fine (Optuna allows it)


def test_bare_postgresql_url_uses_the_installed_driver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    from wordformer.tune.study import with_default_driver

    real = importlib.util.find_spec
    installed = {"psycopg": None, "psycopg2": real("psycopg2")}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: installed[name] if name in installed else real(name, *a))
    assert with_default_driver("postgresql://u:p@h:5/db") == "postgresql+psycopg2://u:p@h:5/db"
    assert with_default_driver("postgresql+pg8000://h/db") == "postgresql+pg8000://h/db"
    assert with_default_driver("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(WordformerError, match=r"^cannot open storage postgresql\+psycopg2://u:\*\*\*@127.0.0.1:1/x: "
                                              r".*Connection refused.*; check the URL and that the server is running$"):
        open_storage("postgresql://u:secret@127.0.0.1:1/x", tmp_path)
    installed["psycopg"] = real("json")  # psycopg (3) present: SQLAlchemy's own choice stays
    assert with_default_driver("postgresql://h/db") == "postgresql://h/db"


@pytest.mark.parametrize("url,module,package", [
    ("postgresql+psycopg2://u@127.0.0.1:1/x", "psycopg2", "`pip install psycopg2-binary`"),
    ("postgresql+psycopg://u@127.0.0.1:1/x", "psycopg", "`pip install 'psycopg[binary]'`"),
    ("mysql://u@127.0.0.1:1/x", "MySQLdb", "`pip install mysqlclient`"),
    ("mysql+pymysql://u@127.0.0.1:1/x", "pymysql", "`pip install PyMySQL`"),
])
def test_missing_driver_names_its_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, module: str,
                                          package: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it now fails, as when it is not installed
    with pytest.raises(WordformerError, match=r"the database driver is not installed; (.*)") as info:
        open_storage(url, tmp_path)
    assert package in str(info.value) and "\n" not in str(info.value)


TEXT = "The quick brown fox.\nA second line of text.\n"


@pytest.mark.slow
@pytest.mark.parametrize("spec,message,when_reading", [
    ("sqlite:///{file}/x.db", r"cannot make folder .*: .*data.txt is a file, not a folder", r"unable to open database"),
    ("journal:{file}/j.log", r"cannot make folder .*: .*data.txt is a file, not a folder", r"no journal file at"),
    ("journal:", r"storage journal: needs a file path", None),
    ("journal:{dir}", r"is a folder; give the journal a file name", None),
    ("journal:{file}", r"data.txt is not an Optuna journal file \(left unchanged\)", None),
    ("journal:{oneline}", r"oneline.txt is not an Optuna journal file", None),
    ("sqlite:///{file}", r"cannot open storage sqlite:///.*: .*file is not a database", None),
])
@pytest.mark.parametrize("create", [True, False])
def test_storage_paths_through_files_are_one_line_errors(tmp_path: Path, spec: str, message: str,
                                                         when_reading: Optional[str], create: bool) -> None:
    data, oneline = tmp_path / "data.txt", tmp_path / "oneline.txt"
    data.write_text(TEXT)
    oneline.write_text("no newline at the end")  # Optuna would read no entry here, then append to it
    (tmp_path / "folder").mkdir()
    spec = spec.format(file=data, dir=tmp_path / "folder", oneline=oneline)
    with pytest.raises(WordformerError, match=message if create or not when_reading else when_reading) as info:
        open_storage(spec, tmp_path, create=create)  # create=False: `tune report` and --retrain-best
    assert "\n" not in str(info.value)
    assert data.read_text() == TEXT and oneline.read_text() == "no newline at the end"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt", "folder", "oneline.txt"]


def test_out_that_is_a_file_is_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text(TEXT)
    with pytest.raises(WordformerError, match=r"cannot make folder .*data.txt: .*data.txt is a file, not a folder; "
                                              r"choose another --out"):
        run_study(settings(data, storage=None), SPACE, cheap_objective(SPACE))
    with pytest.raises(WordformerError, match=r"data.txt is a file, not a folder"):
        run_study(settings(data, storage=f"journal:{tmp_path / 'j.log'}"), SPACE, cheap_objective(SPACE))
    assert data.read_text() == TEXT
