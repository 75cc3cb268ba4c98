"""Pruned TPE vs random search with ``wordformer.tune`` on char-level tinyshakespeare.

``python -m benchmarks.bench_tune [--trials 30] [--max-steps 800] [--quick]``

Two studies over the same search space (``benchmarks/tune_space.yaml``), with the same sampler seed
and the same fixed per-trial step budget, each in its own fresh folder with its own SQLite storage:

* ``tpe``: TPE sampler + median pruner (the defaults of ``wordformer tune``);
* ``random``: random sampler, no pruning.

Both studies run in this one process on the same machine. By default their trials alternate
(tpe, random, random, tpe, ...) so that the load of a shared machine falls on both alike; each study
keeps one Optuna study object and one sampler for all its trials, so the trials it proposes are the
ones a single ``wordformer tune --trials N`` run would propose. A study's wall time is the time spent
in its own ``study.optimize`` calls (trials, sampling, pruning, storage). ``--schedule sequential``
runs random first, then tpe, instead.

Then the best configuration found (by either study) is trained again with the same step budget
(``wordformer.tune.retrain``) next to nanoGPT's hand-set CPU configuration for char-level
tinyshakespeare, and both checkpoints are scored on the whole validation split.

Writes ``benchmarks/results/tune.json`` and ``benchmarks/TUNE.md`` (``--quick``:
``benchmarks/results/tune_quick.json`` only). ``--render`` re-writes TUNE.md from tune.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import shutil
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from benchmarks import common
from benchmarks.common import loadavg, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
JSON_PATH = RESULTS / "tune.json"
QUICK_JSON_PATH = RESULTS / "tune_quick.json"
MARKDOWN = ROOT / "benchmarks" / "TUNE.md"
SPACE = ROOT / "benchmarks" / "tune_space.yaml"
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
MODULE = "benchmarks.bench_tune"

# nanoGPT's hand-set CPU configuration for char-level tinyshakespeare (its README, "I only have a macbook"),
# with its shakespeare_char optimiser settings; weight decay 0.1 is nanoGPT's default.
NANOGPT_MODEL = dict(num_layers=4, num_heads=4, d_model=128, block_size=64, positional="learned", dropout=0.0,
                     ff_mult=4)
NANOGPT_TRAIN = dict(batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=100, beta2=0.99, grad_clip=1.0,
                     weight_decay=0.1)
SHOWN = ("d_model", "num_heads", "num_layers", "block_size", "positional", "batch_size", "lr", "min_lr",
         "warmup_steps")


# --------------------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[bench_tune {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    return {**common.machine_info(), "optuna": common._version("optuna")}


def _finite(value: Any) -> Optional[float]:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def quiet() -> None:
    warnings.filterwarnings("ignore")
    import lightning  # noqa: F401  (sets its loggers' levels on import; ours must come after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)


# --------------------------------------------------------------------------------------------- studies


class Study:
    """One study of the benchmark: its Optuna study, its objective and what each trial cost."""

    def __init__(self, name: str, sampler: str, pruner: str, args: argparse.Namespace, space: Any,
                 model: Any, data: Any, train: Any) -> None:
        from wordformer.tune import ObjectiveSettings, StudySettings, TrainingObjective, open_study

        self.name, self.sampler, self.pruner = name, sampler, pruner
        self.out = Path(args.out) / name
        if self.out.exists():
            shutil.rmtree(self.out)  # a fresh study every run: no trials carried over
        self.settings = StudySettings(out_dir=self.out, study_name=name, sampler=sampler, pruner=pruner,
                                      seed=args.seed, metric="val_loss", n_trials=1)
        self.study = open_study(self.settings, space)
        self.objective = TrainingObjective(ObjectiveSettings(
            space=space, out_dir=self.out, study_name=name, metric="val_loss", model=model, data=data, train=train,
            prune=pruner != "none", auto_eval_interval=False,
        ))
        self.calls: list[dict[str, Any]] = []  # one per trial: seconds in optimize, load before
        self.wall_s = 0.0
        self.load_start: Optional[list[float]] = None
        self.load_end: Optional[list[float]] = None

    def run_one(self) -> dict[str, Any]:
        """Run exactly one more trial (as ``wordformer tune`` would: failures recorded, study goes on)."""
        from wordformer.tune import TrialFailed
        from wordformer.tune.objective import CheckpointPruner

        load = loadavg()
        if self.load_start is None:
            self.load_start = load
        t0 = time.perf_counter()
        self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed,), callbacks=[CheckpointPruner()],
                            gc_after_trial=True, show_progress_bar=False)
        seconds = time.perf_counter() - t0
        self.wall_s += seconds
        self.load_end = loadavg()
        trial = self.study.get_trials(deepcopy=False)[-1]
        call = {"number": trial.number, "seconds": round(seconds, 3), "cumulative_s": round(self.wall_s, 3),
                "load_before": load}
        self.calls.append(call)
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        last = trial.user_attrs.get("steps") or (max(trial.intermediate_values) if trial.intermediate_values else 0)
        log(f"{self.name:6s} trial {trial.number:2d} {trial.state.name.lower():8s} val_loss {value} "
            f"(last step {last}) {seconds:6.1f} s, study {self.wall_s:7.1f} s, load {load[0]:.2f}")
        return call

    def summary(self) -> dict[str, Any]:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        by_number = {c["number"]: c for c in self.calls}
        rows = []
        best: Optional[float] = None
        curve = []
        for t in trials:
            call = by_number.get(t.number, {})
            if t.state == TrialState.COMPLETE and t.value is not None and (best is None or t.value < best):
                best = t.value
            curve.append({"trial": t.number, "cumulative_s": call.get("cumulative_s"), "best": best})
            cfg = t.user_attrs.get("config") or {}
            flat = {k: v for sec in ("model", "train") for k, v in (cfg.get(sec) or {}).items()}
            rows.append({
                "number": t.number,
                "state": t.state.name,
                "value": _finite(t.value),
                "params": t.params,
                "config": {k: flat.get(k) for k in SHOWN},
                "num_parameters": t.user_attrs.get("num_parameters"),
                "steps": (t.user_attrs.get("steps") if t.state == TrialState.COMPLETE
                          else (max(t.intermediate_values) if t.intermediate_values else 0)),
                "intermediate": {str(k): round(v, 5) for k, v in sorted(t.intermediate_values.items())},
                "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
                "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
                "trial_s": ((t.datetime_complete - t.datetime_start).total_seconds()
                            if t.datetime_start and t.datetime_complete else None),
                "call_s": call.get("seconds"),
                "cumulative_s": call.get("cumulative_s"),
                "load_before": call.get("load_before"),
                "fail_reason": t.user_attrs.get("fail_reason"),
            })
        counts = {s.name.lower(): sum(1 for t in trials if t.state == s)
                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        best_trial = None
        if counts["complete"]:
            bt = self.study.best_trial
            best_trial = {"number": bt.number, "value": bt.value, "params": bt.params,
                          "config": next(r["config"] for r in rows if r["number"] == bt.number),
                          "num_parameters": bt.user_attrs.get("num_parameters")}
        return {
            "sampler": self.sampler,
            "pruner": self.pruner,
            "storage": self.settings.storage_spec.replace(str(ROOT) + "/", ""),
            "trials": len(trials),
            "counts": counts,
            "steps_trained": int(sum(r["steps"] or 0 for r in rows)),
            "wall_s": round(self.wall_s, 2),
            "trial_s_sum": round(sum(r["trial_s"] or 0.0 for r in rows), 2),
            "best_value": best,
            "best_trial": best_trial,
            "load_start": self.load_start,
            "load_end": self.load_end,
            "best_curve": curve,
            "trial_rows": rows,
        }


def time_to_reach(summary: dict[str, Any], target: Optional[float]) -> Optional[dict[str, Any]]:
    """The study's cumulative wall time when its best value first was <= ``target`` (None: never)."""
    if target is None:
        return None
    for point in summary["best_curve"]:
        if point["best"] is not None and point["best"] <= target:
            return {"trial": point["trial"], "seconds": point["cumulative_s"], "best": point["best"]}
    return None


def same_startup(tpe: dict[str, Any], rnd: dict[str, Any], n: int) -> int:
    """How many of the first ``n`` trials proposed the same parameters in both studies (shared seed)."""
    a = [r["params"] for r in tpe["trial_rows"][:n]]
    b = [r["params"] for r in rnd["trial_rows"][:n]]
    return sum(1 for x, y in zip(a, b) if x == y)


# --------------------------------------------------------------------------------------------- baseline


def train_and_score(label: str, run: Any, checkpoint_of: Any) -> dict[str, Any]:
    from wordformer import load_checkpoint
    from wordformer.evaluate import evaluate

    load = loadavg()
    t0 = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - t0
    ckpt = load_checkpoint(checkpoint_of(result))
    t1 = time.perf_counter()
    full = evaluate(ckpt)
    eval_s = time.perf_counter() - t1
    m, t = ckpt.model_config, ckpt.train_config
    out = {
        "label": label,
        "config": {"d_model": m.d_model, "num_heads": m.num_heads, "num_layers": m.num_layers,
                   "block_size": m.block_size, "positional": m.positional, "ff_mult": m.ff_mult,
                   "dropout": m.dropout, "batch_size": t.batch_size, "lr": t.lr, "min_lr": t.min_lr,
                   "warmup_steps": t.warmup_steps, "weight_decay": t.weight_decay, "beta2": t.beta2,
                   "grad_clip": t.grad_clip, "max_steps": t.max_steps, "eval_interval": t.eval_interval,
                   "eval_batches": t.eval_batches, "seed": t.seed},
        "num_parameters": int(result.num_parameters),
        "steps": int(result.steps),
        "val_loss": float(result.val_loss),  # best of the periodic validations (eval_batches random windows)
        "full_val": {"loss": full["loss"], "perplexity": full["perplexity"], "accuracy": full["accuracy"],
                     "tokens": int(full["tokens"])},
        "train_s": round(seconds, 2),
        "eval_s": round(eval_s, 2),
        "tokens_seen": int(result.steps) * t.batch_size * m.block_size,
        "load_before": load,
        "checkpoint": str(checkpoint_of(result)).replace(str(ROOT) + "/", ""),
    }
    log(f"{label}: val_loss {out['val_loss']:.4f}, full validation split {full['loss']:.4f} "
        f"({int(full['tokens'])} tokens), {seconds:.1f} s, load {load[0]:.2f}")
    return out


def baselines(args: argparse.Namespace, best: Any, model: Any, data: Any, train: Any) -> dict[str, Any]:
    import dataclasses

    from wordformer.training import train as train_fn
    from wordformer.tune import retrain

    out = Path(args.out)
    nano_model = dataclasses.replace(model, **NANOGPT_MODEL)
    nano_train = dataclasses.replace(train, **NANOGPT_TRAIN)
    nano = train_and_score(
        "nanoGPT hand-set",
        lambda: train_fn(nano_model, data, nano_train, out / "nanogpt", overwrite=True, logger=False),
        lambda r: r.best_checkpoint,
    )
    tuned = train_and_score(
        f"best tuned (trial {best.number})",
        lambda: retrain(best, out / "best_retrained", max_steps=args.max_steps, overwrite=True, progress=False),
        lambda r: r.best_checkpoint,
    )
    tuned["trial_value"] = best.value
    return {"nanogpt": nano, "tuned": tuned,
            "tuned_minus_nanogpt_val_loss": tuned["val_loss"] - nano["val_loss"],
            "tuned_minus_nanogpt_full_val_loss": tuned["full_val"]["loss"] - nano["full_val"]["loss"]}


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trials", type=int, default=30, help="trials per study")
    p.add_argument("--max-steps", type=int, default=800, help="per-trial step budget (also the baselines')")
    p.add_argument("--eval-interval", type=int, default=100, help="validate (and report to the pruner) every N steps")
    p.add_argument("--eval-batches", type=int, default=20, help="batches per validation")
    p.add_argument("--seed", type=int, default=0, help="sampler seed of both studies and training seed of every run")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (and OMP_NUM_THREADS)")
    p.add_argument("--space", default=str(SPACE.relative_to(ROOT)), help="search space YAML")
    p.add_argument("--data", default=str(DATA), help="the corpus (char tokenizer)")
    p.add_argument("--out", default="runs/bench_tune", help="study folders (each study gets OUT/NAME/study.db)")
    p.add_argument("--schedule", choices=("interleaved", "sequential"), default="interleaved",
                   help="interleaved: the two studies' trials alternate; sequential: random study first, then tpe")
    p.add_argument("--no-baseline", action="store_true", help="skip the best-vs-nanoGPT comparison")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 4 trials of 40 steps (eval every 10); writes results/tune_quick.json only")
    p.add_argument("--render", action="store_true", help="only re-write benchmarks/TUNE.md from results/tune.json")
    args = p.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        if "--trials" not in given:
            args.trials = 4
        if "--max-steps" not in given:
            args.max_steps = 40
        if "--eval-interval" not in given:
            args.eval_interval = 10
        if "--eval-batches" not in given:
            args.eval_batches = 5
        if "--out" not in given:
            args.out = "runs/bench_tune_quick"
    for name in ("trials", "max_steps", "eval_interval", "eval_batches", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.render:
        write_markdown(json.loads(JSON_PATH.read_text()))
        log(f"wrote {MARKDOWN.relative_to(ROOT)}")
        return 0
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    quiet()

    from wordformer.config import DataConfig, ModelConfig, TrainConfig
    from wordformer.data import prepare_corpus
    from wordformer.tune import load_space

    data_path = Path(args.data).expanduser()
    if not data_path.is_file():
        raise SystemExit(f"bench_tune: {data_path} is missing; the benchmark trains on char-level tinyshakespeare")
    started = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "t0": time.perf_counter(),
               "load": loadavg()}
    command = shlex.join(["python", "-m", MODULE, *(sys.argv[1:] if argv is None else argv)])
    space = load_space(args.space)
    model = ModelConfig()
    data = DataConfig(data=str(data_path.resolve()), tokenizer="char")
    train = TrainConfig(max_steps=args.max_steps, eval_interval=args.eval_interval, eval_batches=args.eval_batches,
                        seed=args.seed, progress=False)
    prepare_corpus(data, 64)  # tokenize once (cached) so no trial pays for it
    log(f"{args.trials} trials per study, {args.max_steps} steps per trial, eval every {args.eval_interval} steps "
        f"({args.eval_batches} batches), seed {args.seed}, {torch.get_num_threads()} thread(s), "
        f"schedule {args.schedule}, load {started['load']}")

    tpe = Study("tpe", "tpe", "median", args, space, model, data, train)
    rnd = Study("random", "random", "none", args, space, model, data, train)
    if args.schedule == "interleaved":
        for i in range(args.trials):
            order = (tpe, rnd) if i % 2 == 0 else (rnd, tpe)  # ABBA: neither study always goes first
            for s in order:
                s.run_one()
    else:
        for s in (rnd, tpe):
            for _ in range(args.trials):
                s.run_one()
    studies = {"tpe": tpe.summary(), "random": rnd.summary()}
    t_s, r_s = studies["tpe"], studies["random"]

    reach = time_to_reach(t_s, r_s["best_value"])
    reverse = time_to_reach(r_s, t_s["best_value"])
    comparison: dict[str, Any] = {
        "tpe_best": t_s["best_value"],
        "random_best": r_s["best_value"],
        "tpe_wall_s": t_s["wall_s"],
        "random_wall_s": r_s["wall_s"],
        "tpe_over_random_wall": t_s["wall_s"] / r_s["wall_s"] if r_s["wall_s"] else None,
        "tpe_reached_random_best": reach,
        "tpe_time_to_reach_over_random_wall": (reach["seconds"] / r_s["wall_s"]) if reach and r_s["wall_s"] else None,
        "random_reached_tpe_best": reverse,
        "same_startup_trials": same_startup(t_s, r_s, 10),
    }
    ratio = comparison["tpe_time_to_reach_over_random_wall"]
    comparison["goal"] = {
        "statement": "the pruned TPE study reaches a best validation loss <= random's in <= 50% of random's wall time",
        "met": bool(ratio is not None and ratio <= 0.5),
        "strict_met": bool(t_s["best_value"] is not None and r_s["best_value"] is not None
                           and t_s["best_value"] <= r_s["best_value"] and comparison["tpe_over_random_wall"] <= 0.5),
        "strict_statement": "TPE's final best <= random's final best AND TPE's whole study took <= 50% of random's",
    }
    log(f"tpe best {t_s['best_value']} in {t_s['wall_s']:.0f} s; random best {r_s['best_value']} in "
        f"{r_s['wall_s']:.0f} s; tpe reached random's best at {reach}; goal met: {comparison['goal']['met']}")

    result_baseline = None
    if not args.no_baseline:
        candidates = [(s.study.best_trial, s.name) for s in (tpe, rnd) if studies[s.name]["counts"]["complete"]]
        if candidates:
            best, which = min(candidates, key=lambda pair: pair[0].value)  # a tie goes to tpe (listed first)
            result_baseline = baselines(args, best, model, data, train)
            result_baseline["best_from_study"] = which

    payload = {
        "name": "tune",
        "command": command,
        "date": started["date"],
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round(time.perf_counter() - started["t0"], 1),
        "quick": bool(args.quick),
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load": {"start": started["load"], "end": loadavg()},
        "settings": {"trials": args.trials, "max_steps": args.max_steps, "eval_interval": args.eval_interval,
                     "eval_batches": args.eval_batches, "seed": args.seed, "schedule": args.schedule,
                     "data": str(Path(args.data)), "tokenizer": "char", "out": args.out,
                     "space_file": args.space, "space": space.as_dict()},
        "studies": studies,
        "comparison": comparison,
        "baseline": result_baseline,
    }
    path = QUICK_JSON_PATH if args.quick else JSON_PATH
    write_json(path, payload)
    log(f"wrote {path.relative_to(ROOT)}")
    if not args.quick:
        write_markdown(payload)
        log(f"wrote {MARKDOWN.relative_to(ROOT)}")
    return 0


# --------------------------------------------------------------------------------------------- markdown


def _fmt_s(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def _cfg(c: dict[str, Any]) -> str:
    def n(k: str, word: str) -> str:
        return f"{c.get(k)} {word}{'' if c.get(k) == 1 else 's'}"

    return (f"d_model {c.get('d_model')}, {n('num_heads', 'head')}, {n('num_layers', 'layer')}, "
            f"block {c.get('block_size')}, batch {c.get('batch_size')}, lr {c.get('lr'):.2e}, "
            f"warmup {c.get('warmup_steps')}, {c.get('positional')}")


def explicit_command(s: dict[str, Any], threads: int) -> str:
    """The command that repeats a run whatever the defaults are now."""
    return (f"python -m {MODULE} --trials {s['trials']} --max-steps {s['max_steps']} --eval-interval "
            f"{s['eval_interval']} --eval-batches {s['eval_batches']} --seed {s['seed']} --threads {threads}"
            + (" --schedule sequential" if s.get("schedule") == "sequential" else ""))


def other_runs(p: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Full runs kept at other step budgets: ``results/tune_<N>steps.json`` (not the main one)."""
    out = []
    for path in sorted(RESULTS.glob("tune_*steps.json")):
        try:
            o = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if o.get("quick") or o.get("settings", {}).get("max_steps") == p["settings"]["max_steps"]:
            continue
        out.append((path.name, o))
    return out


def write_markdown(p: dict[str, Any]) -> None:
    s, c, m = p["settings"], p["comparison"], p["machine"]
    t, r = p["studies"]["tpe"], p["studies"]["random"]
    reach = c["tpe_reached_random_best"]
    rev = c["random_reached_tpe_best"]
    met = c["goal"]["met"]
    lines = [
        "## Hyperparameter tuning: pruned TPE vs random search",
        "",
        f"Char-level tinyshakespeare, {s['trials']} trials per study, a fixed budget of **{s['max_steps']} steps per "
        f"trial** (validation every {s['eval_interval']} steps on {s['eval_batches']} batches, which is what the "
        f"median pruner compares), search space [`benchmarks/tune_space.yaml`](benchmarks/tune_space.yaml) "
        f"(d_model 8-128 as heads x head size, 1-4 layers, block 32/64, batch 8/16/32, lr 3e-4..1e-2 log, "
        f"warmup 0/50/100, learned or sinusoidal positions). Both studies use sampler seed {s['seed']}, "
        f"each its own fresh SQLite storage, in one process on the same machine; their trials "
        + ("alternate (tpe, random, random, tpe, ...) so a shared machine's load falls on both alike"
           if s["schedule"] == "interleaved" else "ran one study after the other (random first)")
        + ". A study's wall time is the time spent in its own `study.optimize` calls.",
        "",
        "| study | trials (complete / pruned / failed) | steps trained | best val_loss | wall time |"
        " time to reach random's best |",
        "|---|---|---|---|---|---|",
        f"| TPE + median pruner | {t['counts']['complete']} / {t['counts']['pruned']} / {t['counts']['fail']} | "
        f"{t['steps_trained']} | **{t['best_value']:.4f}** (trial {t['best_trial']['number']}) | {_fmt_s(t['wall_s'])} | "
        + (f"{_fmt_s(reach['seconds'])}, trial {reach['trial']}" if reach else "never")
        + " |",
        f"| random, no pruning | {r['counts']['complete']} / {r['counts']['pruned']} / {r['counts']['fail']} | "
        f"{r['steps_trained']} | **{r['best_value']:.4f}** (trial {r['best_trial']['number']}) | {_fmt_s(r['wall_s'])} | "
        f"{_fmt_s(r['best_curve'][[pt['trial'] for pt in r['best_curve']].index(r['best_trial']['number'])]['cumulative_s'])}"
        f" (its own best) |",
        "",
        f"- TPE time to reach random's final best / random's wall time: "
        + (f"**{c['tpe_time_to_reach_over_random_wall']:.2f}**" if reach else "**never reached**"),
        f"- TPE's whole study / random's whole study (wall time): **{c['tpe_over_random_wall']:.2f}**",
        f"- random search reached TPE's final best: "
        + (f"at {_fmt_s(rev['seconds'])} (trial {rev['trial']})" if rev else "never"),
        f"- best configurations: TPE trial {t['best_trial']['number']}: {_cfg(t['best_trial']['config'])}; "
        f"random trial {r['best_trial']['number']}: {_cfg(r['best_trial']['config'])}",
        f"- the first {c['same_startup_trials']} of TPE's 10 random start-up trials proposed the same parameters as "
        f"the random study (shared seed), so the two differ by what TPE does after them and by pruning.",
        "",
        ("**Goal met**" if met else "**Goal not met**")
        + f": {c['goal']['statement']} ("
        + (f"ratio {c['tpe_time_to_reach_over_random_wall']:.2f}" if reach
           else "TPE never reached random's best in its 30 trials".replace("30", str(s["trials"])))
        + "). Stricter reading (TPE's final best <= random's and its whole study in <= 50% of random's time): "
        + ("met." if c["goal"]["strict_met"] else "not met.")
        + " One seed on a shared machine: a single sample, not a distribution.",
        "",
    ]
    b = p.get("baseline")
    if b:
        nano, tuned = b["nanogpt"], b["tuned"]
        lines += [
            f"**Best configuration found vs nanoGPT's hand-set CPU configuration**, both trained {s['max_steps']} "
            f"steps with seed {s['seed']} (the best was found by the {b.get('best_from_study', '?')} study and "
            f"retrained with `wordformer.tune.retrain`); \"full val\" scores every character of the held-out 10% once "
            f"(`wordformer.evaluate`, non-overlapping windows of the model's block size).",
            "",
            "| configuration | parameters | tokens seen | best val_loss (periodic eval) | full val loss | full val acc | train time |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in (nano, tuned):
            lines.append(
                f"| {row['label']}: {_cfg(row['config'])} | {row['num_parameters']:,} | {row['tokens_seen']:,} | "
                f"{row['val_loss']:.4f} | {row['full_val']['loss']:.4f} | {row['full_val']['accuracy']:.3f} | "
                f"{row['train_s']:.0f} s |"
            )
        d = b["tuned_minus_nanogpt_full_val_loss"]
        lines += [
            "",
            f"Retraining the best trial gave best val_loss {tuned['val_loss']:.4f} against the trial's own "
            f"{tuned['trial_value']:.4f} (same seed, same batches).",
            "",
            f"The tuned configuration is {abs(d):.3f} nats/char {'lower' if d < 0 else 'higher'} than nanoGPT's on the "
            f"full validation split at this step budget"
            + (f" (at a fixed step budget a larger batch or block also means more tokens seen: "
               f"{tuned['tokens_seen'] / nano['tokens_seen']:.1f}x nanoGPT's here, in "
               f"{tuned['train_s'] / nano['train_s']:.1f}x its training time)."
               if d < 0 and tuned["tokens_seen"] > nano["tokens_seen"] else "."),
            "",
        ]
    others = other_runs(p)
    runs = [(s["max_steps"], c)] + [(o["settings"]["max_steps"], o["comparison"]) for _, o in others]
    if len(runs) > 1:
        parts = []
        for steps, oc in sorted(runs, key=lambda x: x[0]):
            ratio = oc["tpe_time_to_reach_over_random_wall"]
            parts.append(
                f"at {steps} steps TPE's study took {oc['tpe_over_random_wall']:.2f} of random's wall time and "
                + (f"reached random's best after {ratio:.2f} of it" if ratio is not None
                   else f"never reached random's best ({oc['tpe_best']:.4f} vs {oc['random_best']:.4f})")
            )
        lines += ["In short: " + "; ".join(parts) + ". The goal is met in "
                  + f"{sum(1 for _, oc in runs if oc['goal']['met'])} of {len(runs)} runs.", ""]
    if others:
        lines += [
            "The same benchmark at other step budgets (separate runs on the same machine, same seed and space; "
            "JSON beside this one):",
            "",
            "| steps per trial | TPE best | random best | TPE wall | random wall | TPE time to reach random's best "
            "/ random wall | TPE wall / random wall | goal | results |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, o in others:
            oc, os_ = o["comparison"], o["settings"]
            ratio = oc["tpe_time_to_reach_over_random_wall"]
            lines.append(
                f"| {os_['max_steps']} (eval every {os_['eval_interval']}) | {oc['tpe_best']:.4f} | "
                f"{oc['random_best']:.4f} | {oc['tpe_wall_s']:.0f} s | {oc['random_wall_s']:.0f} s | "
                + (f"{ratio:.2f}" if ratio is not None else "never")
                + f" | {oc['tpe_over_random_wall']:.2f} | {'met' if oc['goal']['met'] else 'not met'} | "
                f"`benchmarks/results/{name}` (`{explicit_command(os_, o['threads'])}`) |"
            )
        lines.append("")
    lines += [
        f"Machine: {m.get('cpu_model') or m.get('processor') or m.get('machine')}, {m['cpu_count']} CPUs, torch "
        f"{m['torch']}, Lightning {m['lightning']}, Optuna {m['optuna']}, {p['threads']} torch thread(s) "
        f"(OMP_NUM_THREADS={p['omp_num_threads']}). The machine was shared: load average (1/5/15 min) "
        f"{p['load']['start']} at the start and {p['load']['end']} at the end; TPE study {t['load_start']} -> "
        f"{t['load_end']}, random study {r['load_start']} -> {r['load_end']} (every trial's load is in the JSON). "
        f"Run {p['date']}, took {p['duration_s'] / 60:.0f} min in all.",
        "",
        "Reproduce (from the repository root; writes `benchmarks/results/tune.json` and `benchmarks/TUNE.md`, "
        "`--quick` for a smoke run):",
        "",
        "```bash",
        explicit_command(s, p["threads"]),
        "```",
        "",
        "The same two studies with the command line (each run sequentially in its own folder):",
        "",
        "```bash",
        f"OMP_NUM_THREADS={p['threads']} wordformer tune --space benchmarks/tune_space.yaml "
        f"--data ../shared/data/tinyshakespeare.txt --tokenizer char \\",
        f"    --max-steps {s['max_steps']} --eval-interval {s['eval_interval']} --eval-batches {s['eval_batches']} "
        f"--trials {s['trials']} --seed {s['seed']} \\",
        "    --sampler tpe --pruner median --out runs/tune_tpe --study tpe",
        "# the same with: --sampler random --pruner none --out runs/tune_random --study random",
        "```",
        "",
    ]
    MARKDOWN.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
