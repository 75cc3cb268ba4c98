"""The hyperparameter table of ``wordformer tune report`` (as spotpython's result table), on cheap studies."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from wordformer.tune.report import (
    PARAM_COLUMNS, TABLE_WIDTH, format_param_table, param_importances, param_rows, write_report,
)
from wordformer.tune.space import parse_space
from wordformer.tune.study import StudySettings, run_study

SPACE = parse_space({
    "params": {
        "log2_heads": {"target": "model.num_heads", "type": "int", "low": 0, "high": 2, "transform": "power_2",
                       "default": 1},
        "layers": {"target": "model.num_layers", "type": "int", "low": 1, "high": 4, "default": 2},
        "lr": {"target": "train.lr", "type": "float", "low": 1e-4, "high": 1e-2, "log": True, "default": 1e-3},
        "dropout": {"target": "model.dropout", "type": "float", "low": 0.0, "high": 0.3, "step": 0.05},
        "pos": {"target": "model.positional", "type": "categorical", "choices": ["sinusoidal", "learned"]},
        "tie": {"target": "model.tie_weights", "type": "bool", "default": True},
    },
    "fixed": {"model.ff_mult": 2},
}, source="test-space")


def cheap_objective(space: Any) -> Any:
    """lr dominates (a bowl around 1e-3), layers matter a little, the rest hardly at all."""
    def objective(trial: optuna.Trial) -> float:
        model, _, train = space.configs(space.suggest(trial))
        return ((math.log10(train.lr) + 3) ** 2 + 0.05 * model.num_layers + 0.001 * model.dropout
                + (0.002 if model.positional == "learned" else 0.0))

    return objective


def study_of(tmp_path: Path, space: Any = SPACE, trials: int = 12) -> optuna.Study:
    settings = StudySettings(out_dir=tmp_path, pruner="none", n_trials=trials, seed=0, heartbeat_interval=None,
                             gc_after_trial=False, storage="sqlite:///:memory:", sampler="random")
    return run_study(settings, space, cheap_objective(space))


def test_table_has_one_row_per_hyperparameter_with_range_type_transform_default_tuned(tmp_path: Path) -> None:
    study = study_of(tmp_path)
    rows, notes = param_rows(study)
    assert [r.name for r in rows] == [*SPACE.names, "ff_mult"]  # tuned ones in space order, then the fixed one
    by = {r.name: r for r in rows}
    best = study.best_trial.params
    for name in SPACE.names:
        assert by[name].tuned == best[name]
    heads = by["log2_heads"]
    assert (heads.type, heads.low, heads.high, heads.transform) == ("int", 0, 2, "power_2")
    assert (heads.default, heads.default_value) == (1, 2) and heads.tuned_value == 2 ** best["log2_heads"]
    assert (by["lr"].transform, by["lr"].default) == ("log", 1e-3)
    assert by["dropout"].default == SPACE.param("dropout").default_raw()  # none given: what --enqueue-defaults runs
    assert (by["dropout"].step, by["layers"].step) == (0.05, None)
    assert by["pos"].choices == ("sinusoidal", "learned") and by["pos"].transform == "none"
    assert by["tie"].type == "bool" and by["tie"].default is True
    assert (by["ff_mult"].type, by["ff_mult"].tuned, by["ff_mult"].importance) == ("fixed", 2, None)
    assert notes == []

    text = format_param_table(rows).splitlines()
    assert text[0].split() == list(PARAM_COLUMNS)
    assert len(text) == 1 + len(rows)
    heads_line = next(line for line in text if line.startswith("log2_heads"))
    assert "[0, 2]" in heads_line and "2^x" in heads_line and "2^1=2" in heads_line
    assert f"2^{best['log2_heads']}={2 ** best['log2_heads']}" in heads_line
    assert "sinusoidal|learned" in next(line for line in text if line.startswith("pos"))
    assert "[0, 0.3] step 0.05" in next(line for line in text if line.startswith("dropout"))


def test_importances_present_and_lr_dominates(tmp_path: Path) -> None:
    study = study_of(tmp_path, trials=20)
    importance, why = param_importances(study)
    assert why is None
    assert set(importance) == set(SPACE.names)
    assert sum(importance.values()) == pytest.approx(1.0)
    assert all(0.0 <= v <= 1.0 for v in importance.values())
    assert max(importance, key=importance.get) == "lr"
    rows, _ = param_rows(study)
    assert {r.name: r.importance for r in rows if r.type != "fixed"} == importance
    lr_line = next(line for line in format_param_table(rows).splitlines() if line.startswith("lr"))
    assert f"{100 * importance['lr']:.1f}%" in lr_line
    assert param_importances(study) == (importance, None)  # seeded: the same report twice


def test_importance_missing_says_why(tmp_path: Path) -> None:
    study = study_of(tmp_path, trials=1)
    rows, notes = param_rows(study)
    assert all(r.importance is None for r in rows)
    assert "importance needs at least 2 completed trials" in notes
    assert all(line.rstrip().endswith("-") for line in format_param_table(rows).splitlines()[1:])


def test_report_writes_csv_and_text_that_parse(tmp_path: Path) -> None:
    study = study_of(tmp_path)
    report = write_report(study, tmp_path / "report", plots=False)
    assert report.param_csv == tmp_path / "report" / "params.csv"
    with report.param_csv.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["name", "target", "type", "low", "high", "step", "choices", "transform", "default",
                              "default_value", "tuned", "tuned_value", "importance"]
    assert [r["name"] for r in table] == [*SPACE.names, "ff_mult"]
    lr = next(r for r in table if r["name"] == "lr")
    assert (lr["target"], lr["type"], float(lr["low"]), float(lr["high"])) == ("train.lr", "float", 1e-4, 1e-2)
    assert float(lr["tuned"]) == study.best_trial.params["lr"] and lr["step"] == ""
    assert float(next(r for r in table if r["name"] == "dropout")["step"]) == 0.05
    assert 0.0 <= float(lr["importance"]) <= 1.0
    assert next(r for r in table if r["name"] == "pos")["choices"] == "sinusoidal|learned"
    text = report.param_txt.read_text().splitlines()
    assert text[0] == f"study {study.study_name}: best trial {study.best_trial.number}, value {study.best_value:.6g}"
    assert "\n".join(text[1:]) == report.param_table


def test_table_never_wider_than_120_columns(tmp_path: Path) -> None:
    long = parse_space({"params": {
        "a_rather_long_parameter_name_for_the_positional_encoding": {
            "target": "model.positional", "type": "categorical", "choices": ["sinusoidal", "learned"]},
        "the_activation_function_between_the_two_feed_forward_layers": {
            "target": "model.activation", "type": "categorical", "choices": ["gelu", "relu"]},
        "lr": {"target": "train.lr", "type": "float", "low": 1.23456789e-5, "high": 0.0987654321, "log": True},
        "dropout": {"target": "model.dropout", "type": "float", "low": 0.0, "high": 0.3},
    }}, source="long")
    study = study_of(tmp_path, space=long, trials=6)
    rows, _ = param_rows(study)
    for width in (TABLE_WIDTH, 80, 60):
        lines = format_param_table(rows, width=width).splitlines()
        assert max(len(line) for line in lines) <= width
        assert lines[0].split() == list(PARAM_COLUMNS)  # headers are never cut
    assert any("..." in line for line in format_param_table(rows, width=60).splitlines())
    csv_text = write_report(study, tmp_path / "r", plots=False).param_csv.read_text()
    assert "a_rather_long_parameter_name_for_the_positional_encoding" in csv_text  # the CSV keeps everything


def test_study_without_stored_space_uses_the_trials_distributions() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0.1, 10.0, log=True) + t.suggest_int("n", 1, 3)
                   + (0.5 if t.suggest_categorical("c", ["a", "b"]) == "a" else 0.0), n_trials=8)
    rows, notes = param_rows(study)
    by = {r.name: r for r in rows}
    assert (by["x"].type, by["x"].transform, by["x"].low, by["x"].high) == ("float", "log", 0.1, 10.0)
    assert (by["n"].type, by["c"].type, by["c"].choices) == ("int", "categorical", ("a", "b"))
    assert all(r.default is None and r.tuned == study.best_trial.params[r.name] for r in rows)
    assert any("stored no search space" in n for n in notes)
    assert all(r.importance is not None for r in rows)


# ---------------------------------------------------------------------------------------------
# readable on a space as big as the built-in one (15 hyperparameters): tables, plots, importances

from wordformer.tune.fixed import wrap_items  # noqa: E402
from wordformer.tune.report import (  # noqa: E402
    IMPORTANCE_MIN_TRIALS, PARALLEL_AXES, SLICE_COLUMNS, draw_figure, format_table, plan_plots, plot_order,
    split_evenly, trial_rows,
)
from wordformer.tune.space import load_space  # noqa: E402

BIG = load_space()  # the built-in space


def bowl_objective(space: Any) -> Any:
    """lr dominates (a bowl around 1e-3), layers and dropout matter a little; reports three steps."""
    def objective(trial: optuna.Trial) -> float:
        model, _, train = space.configs(space.suggest(trial))
        value = (math.log10(train.lr) + 3) ** 2 + 0.05 * model.num_layers + 0.3 * model.dropout
        for step in range(3):
            trial.report(value + 1.0 / (step + 1), step)
        return value

    return objective


@pytest.fixture(scope="module")
def big_study(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    settings = StudySettings(out_dir=tmp_path_factory.mktemp("big"), pruner="none", n_trials=24, seed=0,
                             heartbeat_interval=None, gc_after_trial=False, storage="sqlite:///:memory:",
                             sampler="random")
    return run_study(settings, BIG, bowl_objective(BIG))


def test_trial_table_wraps_parameters_within_120_columns_and_keeps_every_one(big_study: optuna.Study) -> None:
    assert len(BIG.params) == 15
    rows = trial_rows(big_study)
    assert rows[0].note == ""  # no checkpoint kept by this objective: every line fits
    rows[1].note = "a fail reason far longer than what is left of the line once the parameters column starts " * 2
    text = format_table(rows).splitlines()
    assert max(len(line) for line in text) <= TABLE_WIDTH
    assert text[0].split()[:6] == ["rank", "trial", "state", "value", "duration", "parameters"]
    column = text[0].index("parameters")
    starts = [i for i, line in enumerate(text) if line[:1].strip()]  # a row's first line: its rank
    assert len(starts) == len(rows) + 1
    for r, begin, end in zip(rows, starts[1:], starts[2:] + [len(text)]):
        lines = text[begin:end]
        assert lines[0].split()[:2] == [str(r.rank), str(r.number)]
        assert all(line[:column].strip() == "" for line in lines[1:])  # continuation lines stay in their column
        body = " ".join(line[column:] for line in lines)
        for name, value in r.params.items():
            assert f"{name}=" in body
        assert (r.note[:20] in body) if r.note else ("(" not in body)
    cut = [line for line in text if line.strip().startswith("(a fail reason")]  # on its own line, cut to fit
    assert len(cut) == 1 and cut[0].endswith("...") and len(cut[0]) == TABLE_WIDTH


def test_wrap_items_never_splits_an_item() -> None:
    items = [f"--option-{i} {i * 111}" for i in range(12)]
    lines = wrap_items("fixed:     ", items, width=50)
    assert lines[0].startswith("fixed:     --option-0 0") and all(len(line) <= 50 for line in lines)
    assert all(line.startswith(" " * 11) and not line.startswith(" " * 12) for line in lines[1:])
    assert " ".join(" ".join(lines).split()) == "fixed: " + " ".join(items)
    assert wrap_items("x: ", ["a" * 80], width=20) == ["x: " + "a" * 80]  # one too long stands alone


def test_parallel_coordinates_split_most_important_first_at_most_8_axes(big_study: optuna.Study) -> None:
    importance, _ = param_importances(big_study)
    order = plot_order(big_study, importance)
    assert order[0] == "lr" and sorted(order) == sorted(BIG.names)
    assert [len(p) for p in split_evenly(order, PARALLEL_AXES - 1)] == [5, 5, 5]
    assert [len(p) for p in split_evenly(list("abcdefgh"), 7)] == [4, 4] and split_evenly([], 7) == [[]]
    parts = [p for p in plan_plots(order, ranked=True) if p.kind == "parallel_coordinate"]
    assert [p.name for p in parts] == ["parallel_coordinate", "parallel_coordinate_2", "parallel_coordinate_3"]
    assert [q for p in parts for q in p.params] == order
    import matplotlib.pyplot as plt

    for part in parts:
        fig = draw_figure(part, big_study)
        try:
            labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
            assert len(labels) <= PARALLEL_AXES and labels[0] == "Objective Value"
            assert sorted(labels[1:]) == sorted(part.params)
            assert fig.axes[0].get_title().startswith(f"Parallel Coordinate Plot, part {parts.index(part) + 1} of 3")
            width, height = fig.get_size_inches()
            assert width / len(labels) >= 1.2 and height >= 5  # at least 1.2 inches (120 px) per axis
        finally:
            plt.close(fig)
    small = [p for p in plan_plots(["a", "b"]) if p.kind == "parallel_coordinate"]
    assert [(p.name, p.params, p.title) for p in small] == [("parallel_coordinate", ["a", "b"], "")]


def test_slice_plot_is_a_grid_most_important_first(big_study: optuna.Study) -> None:
    import matplotlib.pyplot as plt

    order = plot_order(big_study, param_importances(big_study)[0])
    plot = next(p for p in plan_plots(order, ranked=True) if p.kind == "slice")
    fig = draw_figure(plot, big_study)
    try:
        panels = [ax for ax in fig.axes if ax.get_xlabel()]
        assert sorted(ax.get_xlabel() for ax in panels) == sorted(order)
        columns = sorted({round(ax.get_position().x0, 3) for ax in panels})
        rows = sorted({round(ax.get_position().y0, 3) for ax in panels}, reverse=True)
        assert len(columns) == SLICE_COLUMNS and len(rows) == math.ceil(15 / SLICE_COLUMNS)
        reading = sorted(panels, key=lambda ax: (-round(ax.get_position().y0, 3), ax.get_position().x0))
        assert [ax.get_xlabel() for ax in reading] == order  # left to right, top to bottom, by importance
        width, height = fig.get_size_inches()
        assert width <= 14 and 0.5 <= height / width <= 1.5  # not a strip
        assert all(ax.get_ylabel() == "Objective Value" for ax in reading[::SLICE_COLUMNS])
    finally:
        plt.close(fig)


@pytest.mark.slow
def test_report_pngs_are_readable_sizes(big_study: optuna.Study, tmp_path: Path) -> None:
    from PIL import Image

    report = write_report(big_study, tmp_path / "report", html=False)
    sizes = {p.stem: Image.open(p).size for p in report.pngs}
    assert set(sizes) == {"history", "importances", "parallel_coordinate", "parallel_coordinate_2",
                          "parallel_coordinate_3", "slice", "intermediate_values"}
    width, height = sizes["slice"]
    assert width <= 1400 and height / width >= 0.5, sizes["slice"]  # Optuna's own: 3116x486 for 15 parameters
    assert all(w <= 1000 for name, (w, _) in sizes.items() if name.startswith("parallel")), sizes
    assert not [n for n in report.notes if "rough hint" in n]  # 24 trials: no caveat


def test_importances_under_10_trials_carry_a_caveat(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    study = study_of(tmp_path, trials=6)
    report = write_report(study, tmp_path / "report", plots=False)
    caveat = [n for n in report.notes if "rough hint" in n]
    assert caveat == [f"importance from 6 completed trials only: a rough hint, not a ranking - fANOVA needs "
                      f"~{IMPORTANCE_MIN_TRIALS} or more"]
    assert report.param_txt.read_text().splitlines()[-1] == caveat[0]
    fig = draw_figure(next(p for p in plan_plots([]) if p.kind == "importances"), study,
                      caveat=caveat[0].removeprefix("importance "))
    try:
        assert "from 6 completed trials only" in fig.axes[0].get_title(loc="left")
    finally:
        plt.close(fig)
    enough = study_of(tmp_path / "more", trials=IMPORTANCE_MIN_TRIALS)
    more = write_report(enough, tmp_path / "more" / "report", plots=False)
    assert not [n for n in more.notes if "rough hint" in n] and "rough" not in more.param_txt.read_text()
