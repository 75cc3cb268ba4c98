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
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import WordformerError
from .fixed import REPORT_WIDTH, describe_fixed, recorded_fixed, wrap_items
from .objective import CHECKPOINT_ATTR, CONFIG_ATTR
from .space import SearchSpace, space_from_dict
from .study import FAIL_REASON

PLOTS = ("history", "importances", "parallel_coordinate", "slice", "intermediate_values")
PARAM_COLUMNS = ("name", "type", "range", "transform", "default", "tuned", "importance")
PARALLEL_AXES = 8  # a parallel-coordinate figure: the objective and at most 7 parameters (more: split in files)
SLICE_COLUMNS = 4  # the slice plot's panels, this many to a row (Optuna draws one long strip)
IMPORTANCE_MIN_TRIALS = 10  # with fewer completed trials the importances are flagged as rough
TABLE_WIDTH = REPORT_WIDTH  # the text tables never get wider (long cells are wrapped or cut with "...")


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
    fixed: list[str] = field(default_factory=list)  # what every trial shared: data, tokenizer, pairs, options
    text_path: Optional[Path] = None  # trials.txt: the fixed options and the table, as printed


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


def format_table(rows: list[Row], *, width: int = TABLE_WIDTH) -> str:
    """A plain-text table: rank, trial, state, value, duration, then the parameters (config values) wrapped
    under their column so no line is wider than ``width``, and the note on a line of its own (cut to fit, but
    the best trial's checkpoint path is shown whole)."""
    header = ("rank", "trial", "state", "value", "duration")
    cells = [header] + [(
        str(r.rank) if r.rank is not None else "-",
        str(r.number),
        r.state,
        _fmt(r.value) if r.value is not None else "-",
        f"{r.duration_s:.1f}s" if r.duration_s is not None else "-",
    ) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def lead(line: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + "  "

    indent = len(lead(header))
    out = [(lead(header) + "parameters (note)").rstrip()]
    for r, line in zip(rows, cells[1:]):
        shown = r.config or r.params
        items = [f"{k}={_fmt(v)}" for k, v in shown.items()] or ["-"]
        out += [text.rstrip() for text in wrap_items(lead(line), items, width)]
        if r.note.startswith("checkpoint "):  # a path is never cut: the line may run past ``width``
            out.append(" " * indent + f"({r.note})")
        elif r.note:
            out.append(" " * indent + _cut(f"({r.note})", max(8, width - indent)))
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


@dataclass
class Plot:
    """One figure of the report: the file's stem, which Optuna plot, and the parameters it shows (None: all)."""

    name: str
    kind: str  # one of PLOTS
    params: Optional[list[str]] = None
    title: str = ""  # replaces Optuna's title when set


def plot_order(study: optuna.Study, importance: dict[str, float]) -> list[str]:
    """Parameter names, most important first; those without an importance after, in the order trials used them."""
    names: list[str] = []
    for t in study.get_trials(deepcopy=False):
        names += [n for n in t.params if n not in names]
    return sorted(names, key=lambda n: -importance.get(n, -1.0))  # stable: ties keep their order


def split_evenly(items: list[str], most: int) -> list[list[str]]:
    """``items`` in consecutive parts of at most ``most``, as even as can be (15 by 7: 5, 5, 5, not 7, 7, 1)."""
    if not items:
        return [[]]
    parts = math.ceil(len(items) / most)
    size = math.ceil(len(items) / parts)
    return [items[i:i + size] for i in range(0, len(items), size)]


def plan_plots(order: list[str], *, ranked: bool = False) -> list[Plot]:
    """The figures: one each, but the parallel coordinates split so that none has more than PARALLEL_AXES axes.
    ``ranked``: ``order`` is by importance (the titles say so: the first part holds the most important)."""
    plots: list[Plot] = []
    by = " by importance" if ranked else ""
    for kind in PLOTS:
        if kind == "parallel_coordinate":
            parts = split_evenly(order, PARALLEL_AXES - 1)
            done = 0
            for i, part in enumerate(parts, 1):
                title = "" if len(parts) == 1 else (f"Parallel Coordinate Plot, part {i} of {len(parts)}: "
                                                    f"parameters {done + 1}-{done + len(part)} of {len(order)}{by}")
                plots.append(Plot(kind if i == 1 else f"{kind}_{i}", kind, part or None, title))
                done += len(part)
        elif kind == "slice":
            plots.append(Plot(kind, kind, order or None, "Slice Plot" + (", most important first" if ranked else "")))
        else:
            plots.append(Plot(kind, kind))
    return plots


def _draw(module: Any, plot: Plot, study: optuna.Study) -> Any:
    """The Optuna figure (``module`` is optuna.visualization or its matplotlib twin)."""
    if plot.kind == "history":
        return module.plot_optimization_history(study)
    if plot.kind == "importances":
        from optuna.importance import FanovaImportanceEvaluator

        return module.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))  # as the table
    if plot.kind == "parallel_coordinate":
        return module.plot_parallel_coordinate(study, params=plot.params)
    if plot.kind == "slice":
        return module.plot_slice(study, params=plot.params)
    return module.plot_intermediate_values(study)


def _slice_grid(fig: Any, axes: list[Any], order: list[str], title: str) -> None:
    """Optuna draws one panel per parameter in a single row (by name); lay them out SLICE_COLUMNS wide instead,
    in ``order``."""
    rank = {name: i for i, name in enumerate(order)}
    label = next((ax.get_ylabel() for ax in axes if ax.get_ylabel()), "")
    axes = sorted(axes, key=lambda ax: rank.get(ax.get_xlabel(), len(rank)))
    cols = min(SLICE_COLUMNS, len(axes))
    rows = math.ceil(len(axes) / cols)
    height = 2.7 * rows + 0.9  # inches
    fig.set_size_inches(3.2 * cols + 1.0, height)
    if title:
        fig.suptitle(title, y=1 - 0.15 / height)
    grid = fig.add_gridspec(rows, cols, left=0.08, right=0.86, bottom=0.5 / height, top=1 - 0.6 / height,
                            hspace=0.5, wspace=0.12)
    for i, ax in enumerate(axes):
        spec = grid[i // cols, i % cols]
        ax.set_subplotspec(spec)
        ax.set_position(spec.get_position(fig))
        first = i % cols == 0
        ax.tick_params(axis="y", labelleft=first)  # shared y: values on the first panel of each row
        ax.set_ylabel(label if first else "")
    top, bottom = axes[0].get_position().y1, axes[-1].get_position().y0
    for bar in (a for a in fig.axes if a not in axes):  # the colour bar (trial number)
        bar.set_position([0.89, bottom, 0.015, top - bottom])


def draw_figure(plot: Plot, study: optuna.Study, caveat: Optional[str] = None) -> Any:
    """The matplotlib figure of ``plot``, made readable: a parallel-coordinate part wide enough for its axes,
    the slice panels in a grid, the importances' title carrying ``caveat``. The caller closes it."""
    import optuna.visualization.matplotlib as mpl_vis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        result = _draw(mpl_vis, plot, study)
    axes = list(result.flat) if hasattr(result, "flat") else [result]
    fig = axes[0].figure
    if plot.kind == "parallel_coordinate":
        n_axes = len(plot.params or ()) + 1  # the objective's axis too
        fig.set_size_inches(max(6.4, 1.3 * n_axes + 2.4), 5.6)
        if plot.title:
            axes[0].set_title(plot.title)
    elif plot.kind == "slice" and len(axes) > 1:
        _slice_grid(fig, axes, plot.params or [], plot.title)
    elif plot.kind == "importances" and caveat:
        ax = axes[0]
        loc = "left" if ax.get_title(loc="left") else "center"
        ax.set_title(f"{ax.get_title(loc=loc)}\n({caveat})", loc=loc, fontsize=11)
    return fig


def _save_png(plot: Plot, study: optuna.Study, path: Path, caveat: Optional[str] = None) -> None:
    import matplotlib.pyplot as plt

    fig = draw_figure(plot, study, caveat)
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


def write_plots(study: optuna.Study, out_dir: Path, *, html: Optional[bool] = None, order: Optional[list[str]] = None,
                caveat: Optional[str] = None, ranked: bool = False) -> tuple[list[Path], list[Path], list[str]]:
    """Save each plot as PNG (and HTML when plotly is there); returns pngs, htmls and notes.

    ``order``: the parameters, most important first (default: as the trials used them); the slice panels and
    the parallel-coordinate parts follow it (``ranked``: it is by importance, the titles say so), and
    ``parallel_coordinate_2.png``... hold what one figure cannot.
    ``caveat``: a line drawn under the importances' title (too few trials to trust them)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only; never open a window
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs: list[Path] = []
    htmls: list[Path] = []
    notes: list[str] = []
    want_html = plotly_available() if html is None else html
    if html is None and not want_html:
        notes.append("plotly is not installed: wrote PNG only (pip install 'wordformer[dashboard]' for HTML)")
    plotly_vis = None
    if want_html:
        import optuna.visualization as plotly_vis
    for plot in plan_plots(plot_order(study, {}) if order is None else order, ranked=ranked):
        why = _why_skipped(plot.kind, study)
        if why:
            notes.append(f"skipped {plot.name}: {why}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                path = out_dir / f"{plot.name}.png"
                _save_png(plot, study, path, caveat)
                pngs.append(path)
            except Exception as exc:  # a plot Optuna cannot draw must not lose the rest of the report
                notes.append(f"skipped {plot.name}.png: {_first_line(exc)}")
                continue
            if plotly_vis is not None:
                try:
                    path = out_dir / f"{plot.name}.html"
                    _draw(plotly_vis, plot, study).write_html(str(path), include_plotlyjs="directory")
                    htmls.append(path)
                except Exception as exc:
                    notes.append(f"skipped {plot.name}.html: {_first_line(exc)}")
    return pngs, htmls, notes


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_report(study: optuna.Study, out_dir: Path | str, *, plots: bool = True, html: Optional[bool] = None) -> Report:
    """Write ``trials.csv``, the hyperparameter table (``params.csv``, ``params.txt``) and the plots into
    ``out_dir``; returns the tables and what was written."""
    out_dir = Path(out_dir)
    rows = trial_rows(study)
    csv_path = write_csv(rows, out_dir / "trials.csv")
    importance, why = param_importances(study)
    caveat = importance_caveat(study) if importance else None
    pngs: list[Path] = []
    htmls: list[Path] = []
    notes: list[str] = []
    if plots:
        pngs, htmls, notes = write_plots(study, out_dir, html=html, order=plot_order(study, importance),
                                         caveat=caveat, ranked=bool(importance))
    best = rows[0] if rows and rows[0].rank == 1 else None
    fixed = describe_fixed(study)
    table = format_table(rows)
    text_path = write_text(study, fixed, table, out_dir)
    params, param_notes = param_rows(study, importances=(importance, why))
    notes = param_notes + ([f"importance {caveat}"] if caveat else []) + notes
    param_table = format_param_table(params)
    param_csv = write_param_csv(params, out_dir / "params.csv")
    param_txt = out_dir / "params.txt"
    heading = f"study {study.study_name}: " + (f"best trial {best.number}, value {best.value:.6g}" if best is not None
                                                else "no completed trial")
    lines = [heading, param_table] + ([f"importance {caveat}"] if caveat else [])
    param_txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Report(
        study_name=study.study_name,
        direction=study.direction.name.lower(),
        rows=rows,
        table=table,
        csv_path=csv_path,
        pngs=pngs,
        htmls=htmls,
        notes=notes,
        best=best,
        params=params,
        param_table=param_table,
        param_csv=param_csv,
        param_txt=param_txt,
        fixed=fixed,
        text_path=text_path,
    )


def write_text(study: optuna.Study, fixed: list[str], table: str, out_dir: Path) -> Path:
    """``trials.txt``: what the trials shared (data, tokenizer, pairs, fixed options), then the table;
    and ``fixed_options.json``, the study's record as stored (absent for a study made before records)."""
    path = out_dir / "trials.txt"
    heading = f"study {study.study_name} ({study.direction.name.lower()})"
    path.write_text("\n".join([heading, *fixed, "", table]) + "\n", encoding="utf-8")
    record = recorded_fixed(study)
    if record is not None:
        (out_dir / "fixed_options.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


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


def importance_caveat(study: optuna.Study) -> Optional[str]:
    """Why importances from this few completed trials are only a hint, or None when there are enough."""
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n >= IMPORTANCE_MIN_TRIALS:
        return None
    return (f"from {n} completed trials only: a rough hint, not a ranking "
            f"- fANOVA needs ~{IMPORTANCE_MIN_TRIALS} or more")


def param_rows(study: optuna.Study, *, importances: Optional[tuple[dict[str, float], Optional[str]]] = None
               ) -> tuple[list[ParamRow], list[str]]:
    """One row per tuned hyperparameter (then the space's fixed values), and notes on what is missing;
    ``importances``: what :func:`param_importances` gave, when the caller has it already."""
    notes: list[str] = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    if best is None:
        notes.append("no completed trial: the tuned column is empty")
    importance, why = param_importances(study) if importances is None else importances
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


__all__ = ["IMPORTANCE_MIN_TRIALS", "PARALLEL_AXES", "PARAM_COLUMNS", "PLOTS", "ParamRow", "Plot", "Report", "Row",
           "SLICE_COLUMNS", "TABLE_WIDTH", "draw_figure", "format_param_table", "format_table", "importance_caveat",
           "param_importances", "param_rows", "plan_plots", "plot_order", "plotly_available", "split_evenly",
           "summary_counts", "trial_rows", "write_csv", "write_param_csv", "write_plots", "write_report", "write_text"]

