"""Study reports: a ranked table, a CSV and the standard Optuna plots as PNG (and HTML with plotly).

Beside the trials, the hyperparameter table: like spotpython's result table, one row per hyperparameter
with its range, type, transform, default, the best trial's value and its importance (``params.csv`` and
``params.txt``, at most 120 columns wide).

PNGs come from ``optuna.visualization.matplotlib``; interactive HTML from ``optuna.visualization``
needs plotly (``pip install 'wordformer[dashboard]'``), without it only PNGs are written and the
report says so. For a live view of any storage: ``optuna-dashboard STORAGE_URL``.
"""

from __future__ import annotations

import csv
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import WordformerError
from .objective import CHECKPOINT_ATTR, CONFIG_ATTR
from .space import SearchSpace, space_from_dict
from .study import FAIL_REASON

PLOTS = ("history", "importances", "parallel_coordinate", "slice", "intermediate_values")
PARAM_COLUMNS = ("name", "type", "range", "transform", "default", "tuned", "importance")
TABLE_WIDTH = 120  # the text table never gets wider (long cells are cut with "...")


@dataclass
class Row:
    """One trial as the report shows it."""

    rank: Optional[int]  # 1 = best; None for trials that did not complete
    number: int
    state: str
    value: Optional[float]
    duration_s: Optional[float]
    params: dict[str, Any]  # raw Optuna parameters (exponents for power_2 entries)
    config: dict[str, Any]  # the config values they set, "field" -> value
    note: str = ""  # fail reason, or the kept checkpoint of the best trial


@dataclass
class Report:
    """What ``write_report`` produced; the CLI prints it."""

    study_name: str
    direction: str
    rows: list[Row]
    table: str
    csv_path: Path
    pngs: list[Path] = field(default_factory=list)
    htmls: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    best: Optional[Row] = None
    params: list["ParamRow"] = field(default_factory=list)
    param_table: str = ""
    param_csv: Optional[Path] = None
    param_txt: Optional[Path] = None


def _stored_targets(study: optuna.Study) -> dict[str, list[str]]:
    """Param name -> the config fields it sets, from the space stored with the study."""
    space = study.user_attrs.get("space") or {}
    out: dict[str, list[str]] = {}
    for name, entry in (space.get("params") or {}).items():
        target = str(entry.get("target", ""))
        fields_ = [target.split(".", 1)[-1]]
        if target == "model.head_size":
            fields_.append("d_model")
        out[name] = fields_
    return out


def _config_values(trial: FrozenTrial, targets: dict[str, list[str]]) -> dict[str, Any]:
    stored = trial.user_attrs.get(CONFIG_ATTR)
    if not isinstance(stored, dict):
        return {}
    flat = {k: v for section in ("model", "data", "train") for k, v in (stored.get(section) or {}).items()}
    out: dict[str, Any] = {}
    for name in trial.params:
        for f in targets.get(name, [name]):
            if f in flat:
                out[f] = flat[f]
    return out


def trial_rows(study: optuna.Study) -> list[Row]:
    """Every trial, completed ones first ranked best to worst, then the rest by number."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    targets = _stored_targets(study)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    complete.sort(key=lambda t: (-t.value if maximize else t.value, t.number))
    ranked = {t.number for t in complete}
    others = sorted((t for t in trials if t.number not in ranked), key=lambda t: t.number)
    rows = []
    for rank, t in enumerate(complete + others, 1):
        is_complete = rank <= len(complete)
        note = str(t.user_attrs.get(FAIL_REASON) or t.system_attrs.get("fail_reason") or "")
        if is_complete and rank == 1 and t.user_attrs.get(CHECKPOINT_ATTR):
            note = f"checkpoint {t.user_attrs[CHECKPOINT_ATTR]}"
        if "failed_trial" in t.system_attrs and not note:
            note = f"retry of trial {t.system_attrs['failed_trial']}"
        if t.state == TrialState.FAIL and not note:
            note = "no reason recorded: its worker probably died (heartbeat went stale)"
        rows.append(
            Row(
                rank=rank if is_complete else None,
                number=t.number,
                state=t.state.name,
                value=t.value if is_complete else None,
                duration_s=t.duration.total_seconds() if t.duration is not None else None,
                params=dict(t.params),
                config=_config_values(t, targets),
                note=note,
            )
        )
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[Row], *, max_note: int = 60) -> str:
    """A plain-text table: rank, trial, state, value, duration, parameters (config values)."""
    header = ("rank", "trial", "state", "value", "duration", "parameters", "note")
    lines = [header]
    for r in rows:
        shown = r.config or r.params
        params = " ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
        note = r.note if len(r.note) <= max_note else r.note[: max_note - 3] + "..."
        lines.append((
            str(r.rank) if r.rank is not None else "-",
            str(r.number),
            r.state,
            _fmt(r.value) if r.value is not None else "-",
            f"{r.duration_s:.1f}s" if r.duration_s is not None else "-",
            params,
            note,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
    return "\n".join(out)


def write_csv(rows: list[Row], path: Path) -> Path:
    """One line per trial; ``param:`` columns hold raw Optuna values, ``config:`` the config values."""
    params = sorted({k for r in rows for k in r.params})
    configs = sorted({k for r in rows for k in r.config})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "trial", "state", "value", "duration_s",
                         *[f"param:{p}" for p in params], *[f"config:{c}" for c in configs], "note"])
        for r in rows:
            writer.writerow([
                r.rank if r.rank is not None else "",
                r.number,
                r.state,
                "" if r.value is None else repr(r.value),
                "" if r.duration_s is None else f"{r.duration_s:.3f}",
                *[r.params.get(p, "") for p in params],
                *[r.config.get(c, "") for c in configs],
                r.note,
            ])
    return path


def _plot_functions(module: Any) -> dict[str, Callable[[optuna.Study], Any]]:
    return {
        "history": module.plot_optimization_history,
        "importances": module.plot_param_importances,
        "parallel_coordinate": module.plot_parallel_coordinate,
        "slice": module.plot_slice,
        "intermediate_values": module.plot_intermediate_values,
    }


def _why_skipped(name: str, study: optuna.Study) -> Optional[str]:
    """Plots Optuna would draw empty or refuse: say why instead."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "no completed trial"
    if name == "importances":
        varying = {k for t in complete for k in t.params if len({repr(u.params.get(k)) for u in complete}) > 1}
        if len(complete) < 2 or not varying:
            return "needs at least 2 completed trials with differing parameters"
    if name == "intermediate_values" and not any(
        t.intermediate_values for t in study.get_trials(deepcopy=False)
    ):
        return "no trial reported intermediate values (pruning callback off?)"
    if name in ("parallel_coordinate", "slice") and not any(t.params for t in complete):
        return "the trials have no parameters"
    return None


def _save_png(fn: Callable[[optuna.Study], Any], study: optuna.Study, path: Path) -> None:
    import matplotlib.pyplot as plt

    result = fn(study)
    axes = result.flat[0] if hasattr(result, "flat") else result
    fig = axes.figure
    try:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def plotly_available() -> bool:
    try:
        import plotly  # noqa: F401
    except ImportError:
        return False
    return True


def write_plots(study: optuna.Study, out_dir: Path, *, html: Optional[bool] = None) -> tuple[list[Path], list[Path], list[str]]:
    """Save each plot as PNG (and HTML when plotly is there); returns pngs, htmls and notes."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only; never open a window
    import optuna.visualization.matplotlib as mpl_vis

    out_dir.mkdir(parents=True, exist_ok=True)
    pngs: list[Path] = []
    htmls: list[Path] = []
    notes: list[str] = []
    want_html = plotly_available() if html is None else html
    if html is None and not want_html:
        notes.append("plotly is not installed: wrote PNG only (pip install 'wordformer[dashboard]' for HTML)")
    plotly_fns = None
    if want_html:
        import optuna.visualization as plotly_vis

        plotly_fns = _plot_functions(plotly_vis)
    for name, fn in _plot_functions(mpl_vis).items():
        why = _why_skipped(name, study)
        if why:
            notes.append(f"skipped {name}: {why}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                path = out_dir / f"{name}.png"
                _save_png(fn, study, path)
                pngs.append(path)
            except Exception as exc:  # a plot Optuna cannot draw must not lose the rest of the report
                notes.append(f"skipped {name}.png: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
                continue
            if plotly_fns is not None:
                try:
                    path = out_dir / f"{name}.html"
                    plotly_fns[name](study).write_html(str(path), include_plotlyjs="directory")
                    htmls.append(path)
                except Exception as exc:
                    notes.append(f"skipped {name}.html: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
    return pngs, htmls, notes


def write_report(study: optuna.Study, out_dir: Path | str, *, plots: bool = True, html: Optional[bool] = None) -> Report:
    """Write ``trials.csv``, the hyperparameter table (``params.csv``, ``params.txt``) and the plots into
    ``out_dir``; returns the tables and what was written."""
    out_dir = Path(out_dir)
    rows = trial_rows(study)
    csv_path = write_csv(rows, out_dir / "trials.csv")
    pngs: list[Path] = []
    htmls: list[Path] = []
    notes: list[str] = []
    if plots:
        pngs, htmls, notes = write_plots(study, out_dir, html=html)
    best = rows[0] if rows and rows[0].rank == 1 else None
    params, param_notes = param_rows(study)
    notes = param_notes + notes
    param_table = format_param_table(params)
    param_csv = write_param_csv(params, out_dir / "params.csv")
    param_txt = out_dir / "params.txt"
    heading = f"study {study.study_name}: " + (f"best trial {best.number}, value {best.value:.6g}" if best is not None
                                                else "no completed trial")
    param_txt.write_text(heading + "\n" + param_table + "\n", encoding="utf-8")
    return Report(
        study_name=study.study_name,
        direction=study.direction.name.lower(),
        rows=rows,
        table=format_table(rows),
        csv_path=csv_path,
        pngs=pngs,
        htmls=htmls,
        notes=notes,
        best=best,
        params=params,
        param_table=param_table,
        param_csv=param_csv,
        param_txt=param_txt,
    )


# ---------------------------------------------------------------------------------------------
# the hyperparameter table, like spotpython's result table


@dataclass
class ParamRow:
    """One hyperparameter: how it was searched, where it started and what the best trial chose."""

    name: str
    target: str  # the config field it sets ("" when the study stored no space)
    type: str  # int, float, categorical, bool; "fixed" for the space file's fixed values
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None  # the grid low + k*step, None: any value in [low, high]
    choices: tuple[Any, ...] = ()
    transform: str = "none"  # "power_2" (value 2**x), "log" (sampled on a log scale) or "none"
    default: Any = None  # in the tuned domain (an exponent for power_2)
    default_value: Any = None  # the config value it gives
    tuned: Any = None  # the best trial's value, tuned domain
    tuned_value: Any = None
    importance: Optional[float] = None  # share of the objective's variance (fANOVA, sums to 1), None: unknown


def _stored_space(study: optuna.Study) -> Optional[SearchSpace]:
    stored = study.user_attrs.get("space")
    if not isinstance(stored, dict):
        return None
    try:
        return space_from_dict(stored, source=f"the space stored with study {study.study_name!r}")
    except WordformerError:
        return None  # a space this version cannot read: fall back to the trials' distributions


def param_importances(study: optuna.Study) -> tuple[dict[str, float], Optional[str]]:
    """fANOVA importances of the completed trials (seeded, so a report is repeatable), or why there are none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}, "importance needs at least 2 completed trials"
    if len({repr(sorted(t.params.items())) for t in complete}) < 2:
        return {}, "importance needs completed trials with differing parameters"
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except Exception as exc:  # e.g. trials that sampled different parameters
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {}, f"importance not computable: {first}"
    values = {k: float(v) for k, v in found.items()}
    if not values or not all(math.isfinite(v) for v in values.values()):
        return {}, "importance not computable: the objective does not vary over these trials"
    return values, None


def param_rows(study: optuna.Study) -> tuple[list[ParamRow], list[str]]:
    """One row per tuned hyperparameter (then the space's fixed values), and notes on what is missing."""
    notes: list[str] = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    if best is None:
        notes.append("no completed trial: the tuned column is empty")
    importance, why = param_importances(study)
    if why:
        notes.append(why)
    space = _stored_space(study)
    rows: list[ParamRow] = []
    if space is not None:
        for p in space.params:
            tuned = best.params.get(p.name) if best is not None else None
            default = p.default_raw()
            rows.append(ParamRow(
                name=p.name, target=p.target, type=p.type, low=p.low, high=p.high, step=p.step,
                choices=tuple(p.choices),
                transform=p.transform if p.transform != "none" else ("log" if p.log else "none"),
                default=default, default_value=p.to_value(default),
                tuned=tuned, tuned_value=None if tuned is None else p.to_value(tuned),
                importance=importance.get(p.name),
            ))
        for target, value in space.fixed.items():
            rows.append(ParamRow(name=target.split(".", 1)[-1], target=target, type="fixed", default=value,
                                 default_value=value, tuned=value, tuned_value=value))
        return rows, notes
    notes.append("the study stored no search space: types and ranges come from the trials, defaults are unknown")
    from optuna.distributions import CategoricalDistribution, IntDistribution

    distributions: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            distributions.setdefault(name, dist)
    for name, dist in distributions.items():
        tuned = best.params.get(name) if best is not None else None
        if isinstance(dist, CategoricalDistribution):
            row = ParamRow(name=name, target="", type="categorical", choices=tuple(dist.choices))
        else:
            kind = "int" if isinstance(dist, IntDistribution) else "float"
            step = dist.step if dist.step is not None and not (kind == "int" and dist.step == 1) else None
            row = ParamRow(name=name, target="", type=kind, low=dist.low, high=dist.high, step=step,
                           transform="log" if dist.log else "none")
        row.tuned = row.tuned_value = tuned
        row.importance = importance.get(name)
        rows.append(row)
    return rows, notes


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _with_value(row: ParamRow, raw: Any, value: Any) -> str:
    """A value as the table shows it: ``2^4=16`` for a power-of-two exponent, else the value."""
    if raw is None:
        return "-"
    if row.transform == "power_2":
        return f"2^{raw}={value}"
    return _cell(value)


def _param_cells(row: ParamRow) -> list[str]:
    if row.type == "fixed":
        span = "fixed"
    elif row.type in ("categorical", "bool"):
        span = "|".join(_cell(c) for c in (row.choices or (False, True)))
    else:
        span = f"[{_cell(row.low)}, {_cell(row.high)}]" + (f" step {_cell(row.step)}" if row.step is not None else "")
    transform = {"power_2": "2^x", "log": "log", "none": "-"}.get(row.transform, row.transform)
    importance = "-" if row.importance is None else f"{100 * row.importance:5.1f}% " + "#" * round(10 * row.importance)
    return [row.name, row.type, span, transform, _with_value(row, row.default, row.default_value),
            _with_value(row, row.tuned, row.tuned_value), importance.rstrip()]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 3)] + "..."


def format_param_table(rows: list[ParamRow], *, width: int = TABLE_WIDTH) -> str:
    """The hyperparameter table as text, never wider than ``width`` columns (long cells are cut)."""
    lines = [list(PARAM_COLUMNS)] + [_param_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(PARAM_COLUMNS))]
    gap = 2
    floor = [len(c) for c in PARAM_COLUMNS]  # never narrower than the header
    while sum(widths) + gap * (len(widths) - 1) > width:
        shrinkable = [i for i in range(len(widths)) if widths[i] > floor[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    out = []
    for line in lines:
        cells = [_cut(cell, widths[i]).ljust(widths[i]) for i, cell in enumerate(line)]
        out.append((" " * gap).join(cells).rstrip())
    return "\n".join(out)


def write_param_csv(rows: list[ParamRow], path: Path) -> Path:
    """The hyperparameter table in full (nothing cut): raw values in the tuned domain and the config values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "target", "type", "low", "high", "step", "choices", "transform", "default", "default_value",
                         "tuned", "tuned_value", "importance"])
        for r in rows:
            writer.writerow([
                r.name, r.target, r.type, *("" if v is None else v for v in (r.low, r.high, r.step)),
                "|".join(_cell(c) for c in r.choices), r.transform,
                *("" if v is None else v for v in (r.default, r.default_value, r.tuned, r.tuned_value)),
                "" if r.importance is None else repr(r.importance),
            ])
    return path


def summary_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state, for a one-line summary."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


__all__ = ["PARAM_COLUMNS", "PLOTS", "ParamRow", "Report", "Row", "TABLE_WIDTH", "format_param_table", "format_table",
           "param_importances", "param_rows", "plotly_available", "summary_counts", "trial_rows", "write_csv",
           "write_param_csv", "write_plots", "write_report"]

