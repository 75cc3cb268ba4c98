"""Study reports: a ranked table, a CSV and the standard Optuna plots as PNG (and HTML with plotly).

PNGs come from ``optuna.visualization.matplotlib``; interactive HTML from ``optuna.visualization``
needs plotly (``pip install 'wordformer[dashboard]'``), without it only PNGs are written and the
report says so. For a live view of any storage: ``optuna-dashboard STORAGE_URL``.
"""

from __future__ import annotations

import csv
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from .fixed import describe_fixed, recorded_fixed
from .objective import CHECKPOINT_ATTR, CONFIG_ATTR
from .study import FAIL_REASON

PLOTS = ("history", "importances", "parallel_coordinate", "slice", "intermediate_values")


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
    """Write ``trials.csv`` and the plots into ``out_dir``; returns the table and what was written."""
    out_dir = Path(out_dir)
    rows = trial_rows(study)
    csv_path = write_csv(rows, out_dir / "trials.csv")
    pngs: list[Path] = []
    htmls: list[Path] = []
    notes: list[str] = []
    if plots:
        pngs, htmls, notes = write_plots(study, out_dir, html=html)
    best = rows[0] if rows and rows[0].rank == 1 else None
    fixed = describe_fixed(study)
    table = format_table(rows)
    text_path = write_text(study, fixed, table, out_dir)
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


def summary_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state, for a one-line summary."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


__all__ = ["PLOTS", "Report", "Row", "format_table", "plotly_available", "summary_counts", "trial_rows",
           "write_csv", "write_plots", "write_report", "write_text"]

