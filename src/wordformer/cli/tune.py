"""``wordformer tune``: the command-line glue around the tuning library (:mod:`wordformer.tune`).

* ``wordformer tune [options]`` runs (or continues) a study; each trial is a real training run.
* ``wordformer tune report [--storage URL] --study NAME [--out DIR]`` prints what the trials shared (data,
  tokenizer, pairs, fixed options), the ranked table and the hyperparameter table (range, type, transform,
  default, tuned value, importance) and writes ``trials.txt``, ``trials.csv``, ``params.csv``, ``params.txt``,
  ``fixed_options.json`` and plots into ``OUT/STUDY/report``.
* ``wordformer tune --retrain-best --max-steps N`` trains the best configuration longer and writes a
  checkpoint that ``wordformer generate`` accepts.

Model, data and training options (``--d-model``, ``--data``, ``--eval-interval``, ...) set the base
configuration; an option given on the command line fixes that field for every trial and removes it
from the search space (``--max-steps`` is then the per-trial step budget). The study records its corpus,
tokenizer, pairs mode and these options (:mod:`wordformer.tune.fixed`); a run that differs is refused. Several workers: start the
same command with ``--storage postgresql://...`` on each machine (or ``--storage journal:FILE`` for
local processes without a server). The storage also opens in ``optuna-dashboard URL``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from ..config import SECTIONS, field_names
from ..errors import WordformerError, check_int
from ..tune.choices import METRICS, PRUNERS, SAMPLERS
from .options import add_config_options, configs_from_args, given_config_values

DEFAULT_TRIALS = 20
ACTIONS = ("run", "report")


def add_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=ACTIONS, default="run",
                   help="run: tune (default); report: table, CSV and plots of a study")
    g = p.add_argument_group("tuning options")
    g.add_argument("--space", default=None, metavar="FILE.yaml",
                   help="search space YAML, or `recipe` for the built-in space with the recipe options (Muon, RoPE, ...; "
                        "wordformer/tune/recipe_space.yaml) (default: wordformer/tune/default_space.yaml)")
    g.add_argument("--trials", type=int, default=None, metavar="N",
                   help=f"trials this run adds; each worker adds its own (default: {DEFAULT_TRIALS}, "
                        "or unlimited with --timeout)")
    g.add_argument("--timeout", type=float, default=None, metavar="S", help="stop starting trials after S seconds")
    g.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="search strategy (default: tpe)")
    g.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="stop unpromising trials early (default: median)")
    g.add_argument("--storage", default=None, metavar="URL",
                   help="SQLAlchemy URL (postgresql://user@host/db for many workers) or journal:PATH "
                        "(default: sqlite OUT/study.db)")
    g.add_argument("--study", default="wordformer", metavar="NAME", help="study name (default: wordformer)")
    g.add_argument("--out", default="runs/tune", metavar="DIR",
                   help="trials go to OUT/STUDY/trial_NNNN, the default database to OUT/study.db (default: runs/tune)")
    g.add_argument("--seed", dest="tune_seed", type=int, default=None, metavar="S",
                   help="seed of the sampler and of every trial's training; the same seed repeats a fresh study "
                        "(give each parallel worker its own; default: random sampler seed)")
    g.add_argument("--metric", choices=tuple(METRICS), default="val_loss",
                   help="objective: val_loss or val_ppl (minimised), val_acc (maximised) (default: val_loss)")
    g.add_argument("--direction", choices=("minimize", "maximize"), default=None,
                   help="override the direction the metric implies")
    g.add_argument("--n-jobs", type=int, default=1, metavar="N", help="trials in parallel threads here (default: 1)")
    g.add_argument("--enqueue-defaults", action="store_true",
                   help="make the space's defaults the first trial (skipped if already run)")
    g.add_argument("--keep-checkpoints", dest="keep_checkpoints", action="store_true", default=True,
                   help="keep every trial's checkpoints (default)")
    g.add_argument("--prune-checkpoints", dest="keep_checkpoints", action="store_false",
                   help="delete checkpoints of trials that are not the best (the best one is always kept)")
    g.add_argument("--heartbeat", type=int, default=60, metavar="S",
                   help="seconds between heartbeats of a running trial; a trial silent for 2*S is failed and "
                        "retried once (database storages; default: 60)")
    g.add_argument("--progress", dest="progress_bar", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar with the best value so far (default: on)")
    g.add_argument("--config", default=None, metavar="FILE",
                   help="YAML of base options (like `wordformer train --config`); does not fix space entries")
    g.add_argument("--retrain-best", action="store_true",
                   help="do not tune: train the study's best configuration for --max-steps steps")
    g.add_argument("--retrain-out", default=None, metavar="DIR",
                   help="where --retrain-best writes its checkpoints (default: OUT/STUDY/best)")
    g.add_argument("--overwrite", action="store_true", help="let --retrain-best replace checkpoints in its folder")
    add_config_options(p, skip=("seed", "progress"))


def run_tune(args: argparse.Namespace) -> int:
    """Dispatch ``wordformer tune``: run or continue a study, report on one, or retrain its best trial."""
    if args.action == "report":
        return _report(args)
    if args.retrain_best:
        return _retrain(args)
    return _tune(args)


# --------------------------------------------------------------------------------------------- helpers


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from ..tune.study import StudySettings

    return StudySettings(
        out_dir=Path(args.out),
        study_name=args.study,
        storage=args.storage,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.tune_seed,
        metric=args.metric,
        direction=args.direction,
        heartbeat_interval=args.heartbeat,
        **extra,
    )


def _fixed_targets(args: argparse.Namespace) -> list[str]:
    """``section.field`` of every config option given on the command line."""
    owner = {name: section for section, cls in SECTIONS.items() for name in field_names(cls)}
    return [f"{owner[name]}.{name}" for name in given_config_values(args)]


def _base_configs(args: argparse.Namespace, space: Any) -> Any:
    """The base configs every trial starts from (defaults < --config < options).

    When the space sets ``model.head_size``, every trial's width is num_heads * head_size, so the
    base d_model is never used: it is made a multiple of the base heads instead of refusing heads
    that do not divide the default width (``--num-heads 3``).
    """
    from ..config import ModelConfig, coerce, read_config_file
    from ..tune.space import HEAD_SIZE

    sets_width = HEAD_SIZE in space.targets or HEAD_SIZE in space.fixed
    if not sets_width or "d_model" in vars(args):
        return configs_from_args(args)
    values = dict(read_config_file(args.config)) if getattr(args, "config", None) else {}
    values.update(given_config_values(args))
    try:
        heads = coerce(ModelConfig, {"num_heads": values.get("num_heads", ModelConfig.num_heads)}, where="options")
    except WordformerError:
        return configs_from_args(args)  # the configs say what is wrong with it
    h = heads["num_heads"]
    if isinstance(h, bool) or not isinstance(h, int) or h < 1:
        return configs_from_args(args)
    placeholder = argparse.Namespace(**{**vars(args), "d_model": h * max(1, ModelConfig.d_model // h)})
    return configs_from_args(placeholder)


def _quiet_optuna(args: argparse.Namespace) -> None:
    import optuna

    # Our own one-line messages replace Optuna's per-trial logs (and their tracebacks) unless -v.
    optuna.logging.set_verbosity(optuna.logging.INFO if getattr(args, "verbose", False) else optuna.logging.ERROR)


def _describe(row: Any) -> str:
    shown = row.config or row.params
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


# -------------------------------------------------------------------------------------------- actions


def _tune(args: argparse.Namespace) -> int:
    """Run or continue the study, then print the best trial and how to look at the results."""
    import optuna

    from ..tune.fixed import fixed_options
    from ..tune.objective import CheckpointPruner, ObjectiveSettings, TrainingObjective, check_corpus, first_validation
    from ..tune.report import summary_counts, trial_rows
    from ..tune.space import bound_warmup, load_space
    from ..tune.study import FAIL_REASON, run_study, safe_url, with_default_driver

    if args.trials is not None:
        check_int("--trials", args.trials)
    check_int("--n-jobs", args.n_jobs)
    check_int("--heartbeat", args.heartbeat)
    fixed = _fixed_targets(args)
    space = load_space(args.space).without(fixed)
    if not space.params:
        raise WordformerError("every parameter of the search space is fixed by command-line options; nothing to tune")
    model, data, train = _base_configs(args, space)
    train = dataclasses.replace(train, progress=False, **({"seed": args.tune_seed} if args.tune_seed is not None else {}))
    space, train, warmup_note = bound_warmup(space, train, warmup_given="train.warmup_steps" in fixed)
    if data.data is not None:
        path = Path(data.data).expanduser()
        if not path.exists():
            raise WordformerError(f"--data {data.data}: no such file or folder; pass a .txt file or a folder of them")
        data = dataclasses.replace(data, data=str(path.resolve()))  # trials and retraining may run elsewhere
    space.check_heads(model)
    n_trials = args.trials if args.trials is not None else (None if args.timeout else DEFAULT_TRIALS)
    settings = _settings(
        args,
        n_trials=n_trials,
        timeout=args.timeout,
        n_jobs=args.n_jobs,
        enqueue_defaults=args.enqueue_defaults,
        show_progress_bar=args.progress_bar,
        pruner_min_resource=first_validation(train, auto="train.eval_interval" not in fixed),
    )
    objective = TrainingObjective(ObjectiveSettings(
        space=space, out_dir=settings.out_dir, study_name=settings.study_name, metric=settings.metric,
        model=model, data=data, train=train, prune=settings.pruner != "none",
        auto_eval_interval="train.eval_interval" not in fixed,
    ))

    def report_failure(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.FAIL:
            _err(f"wordformer tune: trial {trial.number} failed: {trial.user_attrs.get(FAIL_REASON, 'see -v for details')}")

    callbacks: list[Any] = [report_failure]
    if not args.keep_checkpoints:
        callbacks.append(CheckpointPruner())
    if settings.sampler == "grid":
        space.grid()  # refuse a float without step before reading the corpus
    corpus_key = check_corpus(space, model, data)
    settings.fixed = fixed_options(space, model, data, train, corpus_key=corpus_key, given=fixed)
    _quiet_optuna(args)
    where = safe_url(with_default_driver(settings.storage_spec))  # the URL that works, for the commands below

    def announce(study: optuna.Study) -> None:
        _err(f"wordformer tune: study {settings.study_name!r} in {where}; sampler {settings.sampler}, pruner "
             f"{settings.pruner}, {settings.metric} ({settings.resolved_direction}), "
             f"{n_trials if n_trials is not None else 'unlimited'} trial(s) -> {settings.study_dir}")
        if warmup_note:  # said once the study opens: a refusal before it stays one line
            _err(f"wordformer tune: {warmup_note}")

    study = run_study(settings, space, objective, callbacks=callbacks, on_open=announce)

    counts = summary_counts(study)
    print(f"study {study.study_name}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    rows = trial_rows(study)
    if not rows or rows[0].rank != 1:
        print("no trial completed; the fail reasons are above (or in `wordformer tune report`)")
        return 1
    best = rows[0]
    print(f"best trial {best.number}: {settings.metric} {best.value:.4f}")
    print(f"  {_describe(best)}")
    if best.note.startswith("checkpoint "):
        print(f"  {best.note}")
    storage_arg = f" --storage {where}" if args.storage else f" --out {args.out}"
    print(f"report:    wordformer tune report{storage_arg} --study {study.study_name}")
    print(f"retrain:   wordformer tune --retrain-best --max-steps N{storage_arg} --study {study.study_name}")
    print(f"dashboard: optuna-dashboard {where}")
    return 0


def _report(args: argparse.Namespace) -> int:
    """Print the table and write CSV and plots into OUT/STUDY/report."""
    from ..files import make_folder
    from ..tune.report import write_report
    from ..tune.study import check_study_dir, load_existing_study

    study = load_existing_study(_settings(args))
    check_study_dir(Path(args.out) / study.study_name, study)
    out = make_folder(Path(args.out) / study.study_name / "report", advice="pass another --out")
    report = write_report(study, out)
    print(f"study {report.study_name} ({report.direction}), {len(report.rows)} trial(s)")
    for line in report.fixed:
        print(line)
    print(report.table)
    print("hyperparameters (range, type, transform, default; tuned = the best trial's value):")
    print(report.param_table)
    print(f"text:  {report.text_path}")
    print(f"csv:   {report.csv_path}")
    print(f"csv:   {report.param_csv}")
    print(f"text:  {report.param_txt}")
    for path in report.pngs:
        print(f"png:   {path}")
    for path in report.htmls:
        print(f"html:  {path}")
    for note in report.notes:
        print(f"note:  {note}")
    return 0


def _retrain_options(args: argparse.Namespace, trial: Any) -> dict[str, Any]:
    """The runtime options given with --retrain-best; any other option must match what the trial trained with."""
    from ..tune.fixed import describe_value
    from ..tune.objective import RETRAIN_RUNTIME, trial_configs

    owner = {name: section for section, cls in SECTIONS.items() for name in field_names(cls)}
    configs = dict(zip(("model", "data", "train"), (dataclasses.asdict(c) for c in trial_configs(trial))))
    runtime: dict[str, Any] = {}
    for name, value in given_config_values(args).items():
        target = f"{owner[name]}.{name}"
        if name == "max_steps":
            continue
        if target in RETRAIN_RUNTIME:
            runtime[target] = value
            continue
        recorded = configs[owner[name]].get(name)
        if name == "data" and value is not None:
            value = str(Path(value).expanduser().resolve())
        if value != recorded:
            raise WordformerError(
                f"--retrain-best trains trial {trial.number} on the data and options it ran with "
                f"({describe_value(target, recorded)}), not {describe_value(target, value)}: drop that option "
                f"(or tune with it in another --study)")
    return runtime


def _retrain(args: argparse.Namespace) -> int:
    """Train the best trial's configuration for --max-steps steps into --retrain-out."""
    from ..tune.fixed import recorded_fixed
    from ..tune.objective import retrain
    from ..tune.study import best_trial, check_study_dir, load_existing_study

    if "max_steps" not in vars(args):
        raise WordformerError("--retrain-best needs --max-steps N (how long to train the best configuration)")
    study = load_existing_study(_settings(args))
    if not args.retrain_out:
        check_study_dir(Path(args.out) / study.study_name, study)
    trial = best_trial(study)
    runtime = _retrain_options(args, trial)
    record = recorded_fixed(study) or {}
    tunes_data = any(str(t).startswith("data.") for t in record.get("tuned") or ())
    out = Path(args.retrain_out) if args.retrain_out else Path(args.out) / study.study_name / "best"

    def announce() -> None:
        _err(f"wordformer tune: retraining trial {trial.number} ({study.study_name}, value {trial.value:.4f}) "
             f"for {args.max_steps} steps -> {out}")

    result = retrain(trial, out, max_steps=args.max_steps, overwrite=args.overwrite, progress=args.progress_bar,
                     corpus_key=None if tunes_data else record.get("corpus"), runtime=runtime, on_start=announce)
    m = result.metrics
    print(f"steps: {result.steps}   time: {result.seconds:.1f} s   best val_loss {result.val_loss:.4f}   "
          f"val_ppl {m.get('val_ppl', float('nan')):.2f}   val_acc {m.get('val_acc', float('nan')):.3f}")
    print(f"checkpoint: {result.best_checkpoint}")
    print(f"next:       wordformer generate --checkpoint {result.best_checkpoint} --prompt \"...\"")
    return 0
