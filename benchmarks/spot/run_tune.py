"""One ``wordformer tune`` study of ``benchmarks/bench_spot.py``, run the way the command runs it.

Runs in wordformer's environment, in a fresh process like the SPOT runner, in its own working folder:

    .venv/bin/python benchmarks/spot/run_tune.py JOB.json

The study is what ``wordformer tune --sampler S --pruner P --seed SEED --trials N`` builds
(``wordformer.tune.run_study`` with ``TrainingObjective``): its default SQLite storage with heartbeats, the
objective that trains each trial with ``wordformer.training.train`` and reports every validation to the pruner,
and garbage collection after each trial. The sampler's random start-up trials are set to the job's
``init_size`` (SPOT's initial design); Optuna's default for TPE and GP is the same 10.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import job as jobs  # noqa: E402  (this folder, not a package: the script runs as a file, like run_spot.py)

CASES = {"tpe": ("tpe", "none"), "gp": ("gp", "none"), "tpe_median": ("tpe", "median")}


def main(argv: list[str]) -> int:
    job = jobs.read_job(argv)
    jobs.setup(job)
    if job["case"] == "check":
        jobs.write_result(job, {"check": jobs.check_run(job, "wordformer"), "versions": jobs.versions("optuna")})
        return 0

    import optuna

    from wordformer.training import train as train_fn
    from wordformer.tune.objective import ObjectiveSettings, TrainingObjective
    from wordformer.tune.study import FAIL_REASON, StudySettings, run_study

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler, pruner = CASES[job["case"]]
    space, model, data, train = jobs.space_and_bases(job)
    work = Path(job["work"])
    log = jobs.TrialLog()
    trials: list[dict[str, Any]] = []

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """After each trial: join Optuna's record with the timing of its train() call."""
        timing = log.rows[-1] if len(log.rows) > len(trials) else {}
        cfg = trial.user_attrs.get("config") or {}
        flat = {**(cfg.get("model") or {}), **(cfg.get("train") or {})}
        config = {k: flat.get(k) for k in ("d_model", "num_heads", "num_layers", "block_size", "positional", "norm",
                                            "dropout", "batch_size", "lr", "warmup_steps")}
        row = {"number": trial.number, "params": dict(trial.params), "config": config, **timing,
               "state": trial.state.name, "value": jobs.finite(trial.value), "recorded_s": log.now(),
               "reports": {str(k): round(v, 5) for k, v in sorted(trial.intermediate_values.items())}}
        if trial.state == optuna.trial.TrialState.PRUNED:
            row["steps"] = max(trial.intermediate_values) if trial.intermediate_values else 0
        if trial.user_attrs.get(FAIL_REASON):
            row["fail_reason"] = trial.user_attrs[FAIL_REASON]
        trials.append(row)
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        print(f"[run_tune] {job['case']} seed {job['seed']} trial {trial.number:2d} {trial.state.name.lower():8s} "
              f"val_loss {value} ({timing.get('train_s', 0.0):.1f} s, t={log.now():.0f} s)", file=sys.stderr, flush=True)

    settings = StudySettings(out_dir=work, study_name=job["case"], sampler=sampler, pruner=pruner,
                             seed=int(job["seed"]), metric="val_loss", n_trials=int(job["trials"]),
                             n_startup_trials=int(job["init_size"]))
    objective = TrainingObjective(
        ObjectiveSettings(space=space, out_dir=work, study_name=job["case"], metric="val_loss", model=model,
                          data=data, train=train, prune=pruner != "none", auto_eval_interval=False),
        train_fn=log.timed(train_fn),
    )
    log.start()
    run_study(settings, space, objective, callbacks=[record])
    wall_s = log.now()
    jobs.write_result(job, {
        "case": job["case"], "seed": job["seed"], "wall_s": wall_s, "trials": trials,
        "tune": {"sampler": sampler, "pruner": pruner, "n_startup_trials": int(job["init_size"]),
                 "storage": "sqlite (the default of wordformer tune)"},
        "versions": jobs.versions("optuna"),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
