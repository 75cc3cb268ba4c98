"""spotpython's SPOT against ``wordformer tune`` on the same objective (issue 17).

``python -m benchmarks.bench_spot [--quick] [--max-chunks N] [--render]``

Four cases tune the same wordformer training run (char-level tinyshakespeare, the space
``benchmarks/spot/space.yaml``, the same fixed options, the same per-trial step budget, the same number of
trials, seeds 0, 1, 2):

* ``spot``: SPOT (Kriging surrogate, expected improvement), its initial design counted in the budget;
* ``tpe``: ``wordformer tune --sampler tpe --pruner none`` (full trials, as SPOT);
* ``gp``: ``wordformer tune --sampler gp --pruner none``;
* ``tpe_median``: ``wordformer tune`` as normally used (TPE + median pruning).

The random start-up trials of TPE and GP equal SPOT's initial design size. Within a seed every trial trains
with the same training seed, so each case optimises the very same deterministic function.

SPOT runs in its own virtual environment (``benchmarks/spot/.venv``, created here from
``benchmarks/spot/requirements.txt`` with torch, Lightning and torchmetrics pinned to this environment's
versions; never a dependency of wordformer) and every case runs in a fresh process with its own temporary
working folder (``benchmarks/spot/run_spot.py``, ``benchmarks/spot/run_tune.py``). Before the cases, the
space's default configuration is trained once in each environment: equal validation losses show that the two
tools' trials run the same arithmetic.

The work is split into chunks, one per (case, seed), interleaved (each seed runs all four cases, in an order
that rotates with the seed) so the load of a shared machine falls on all cases alike. Each chunk is written to
``benchmarks/results/spot_<case>_seed<S>.json`` when it ends; a rerun skips the chunks already there with the
same settings, so ``--max-chunks 1`` in a loop (each under the CPU lock) resumes where it stopped. When every
chunk is there: ``benchmarks/results/spot.json``, ``docs/bench_spot.png`` and ``benchmarks/SPOT.md`` (copied
into BENCHMARKS.md). ``--quick``: a smoke run of everything (tiny budget, one seed) into
``benchmarks/results/quick/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks" / "spot"
RESULTS = ROOT / "benchmarks" / "results"
QUICK = RESULTS / "quick"
SPACE = HERE / "space.yaml"
REQUIREMENTS = HERE / "requirements.txt"
VENV = HERE / ".venv"
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
PLOT = ROOT / "docs" / "bench_spot.png"
MARKDOWN = ROOT / "benchmarks" / "SPOT.md"
READING = HERE / "reading.md"  # hand-written reading of the figures, copied into SPOT.md when present
MODULE = "benchmarks.bench_spot"
CASES = ("spot", "tpe", "gp", "tpe_median")
LABELS = {"spot": "SPOT (Kriging, EI)", "tpe": "tune: TPE, no pruning", "gp": "tune: GP, no pruning",
          "tpe_median": "tune: TPE + median pruning"}
COLORS = {"spot": "tab:red", "tpe": "tab:blue", "gp": "tab:green", "tpe_median": "tab:purple"}
SHOWN = ("d_model", "num_heads", "num_layers", "block_size", "positional", "norm", "dropout", "batch_size", "lr",
         "warmup_steps")


def log(message: str) -> None:
    print(f"[bench_spot {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- SPOT's environment


def pins() -> list[str]:
    """torch, Lightning and torchmetrics at this environment's versions: both tools train with the same code."""
    out = []
    for name in ("torch", "lightning", "torchmetrics"):
        version = metadata.version(name).split("+")[0]  # 2.13.0+cpu -> ==2.13.0 (matches the local build too)
        out.append(f"{name}=={version}")
    return out


def spot_python() -> Path:
    return VENV / "bin" / "python"


def ensure_spot_env() -> float:
    """Create SPOT's virtual environment unless it is there for the same requirements; returns seconds spent."""
    stamp = VENV / ".installed"
    want = hashlib.sha256((REQUIREMENTS.read_text() + "\n".join(pins())).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == want and spot_python().is_file():
        return 0.0
    t0 = time.perf_counter()
    if VENV.exists():
        shutil.rmtree(VENV)
    log(f"creating SPOT's environment in {VENV.relative_to(ROOT)} (spotpython and its dependencies; a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    constraints = VENV / "constraints.txt"
    constraints.write_text("\n".join(pins()) + "\n")
    install_log = VENV / "install.log"
    pip = [str(spot_python()), "-m", "pip", "--disable-pip-version-check"]
    steps = [
        # torch first, alone and pinned, so that no other requirement pulls a different (CUDA) build
        pip + ["install", pins()[0]],
        pip + ["install", "-c", str(constraints), "-r", str(REQUIREMENTS), "-e", str(ROOT)],
        # spotpython requires torchvision, but PyPI's does not load beside the CPU torch: run_spot.py stands in
        pip + ["uninstall", "-y", "torchvision"],
    ]
    with install_log.open("w") as fh:
        for cmd in steps:
            fh.write(f"$ {shlex.join(cmd)}\n")
            fh.flush()
            code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
            if code != 0:
                tail = install_log.read_text().splitlines()[-15:]
                raise SystemExit(f"bench_spot: creating SPOT's environment failed ({shlex.join(cmd)}):\n"
                                 + "\n".join(tail) + f"\n(full log: {install_log})")
    stamp.write_text(want + "\n")
    seconds = time.perf_counter() - t0
    log(f"SPOT's environment is ready ({seconds:.0f} s)")
    return seconds


# --------------------------------------------------------------------------------------------- chunks


def data_identity(path: str) -> str:
    """The corpus by name and size, not by path: the same file found from another checkout is the same corpus."""
    p = Path(path)
    return f"{p.name}, {p.stat().st_size} bytes"


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"trials": args.trials, "init_size": args.init_size, "max_steps": args.max_steps,
            "eval_interval": args.eval_interval, "eval_batches": args.eval_batches, "threads": args.threads,
            "data": data_identity(args.data), "space": str(SPACE.relative_to(ROOT)),
            "space_sha256": hashlib.sha256(SPACE.read_bytes()).hexdigest()[:16],
            "requirements_sha256": hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]}


def chunk_path(folder: Path, case: str, seed: Optional[int]) -> Path:
    return folder / (f"spot_{case}.json" if seed is None else f"spot_{case}_seed{seed}.json")


def done(path: Path, settings: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The chunk's result when it was run with these settings, else None."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if payload.get("settings") == settings else None


def run_job(case: str, seed: int, args: argparse.Namespace, settings: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one case for one seed in a fresh process and its own temporary folder; write its chunk file."""
    runner = "run_spot.py" if case == "spot" or case == "check_spot" else "run_tune.py"
    python = spot_python() if runner == "run_spot.py" else Path(sys.executable)
    load_before = loadavg()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix=f"bench_spot_{case}_") as tmp:
        job = {"case": "check" if case.startswith("check") else case, "seed": seed, "trials": args.trials,
               "init_size": args.init_size, "space": str(SPACE), "data": str(Path(args.data).resolve()),
               "max_steps": args.max_steps, "eval_interval": args.eval_interval, "eval_batches": args.eval_batches,
               "threads": args.threads, "result": str(Path(tmp) / "result.json"), "work": str(Path(tmp) / "work")}
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": ""}
        t0 = time.perf_counter()
        code = subprocess.call([str(python), str(HERE / runner), str(Path(tmp) / "job.json")], cwd=tmp, env=env)
        process_s = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"bench_spot: {case} seed {seed} failed (exit {code}); its output is above")
        result = json.loads((Path(tmp) / "result.json").read_text())
    payload = {"case": case, "seed": seed, "settings": settings, "date": started, "quick": bool(args.quick),
               "process_s": round(process_s, 2), "load_before": load_before, "load_after": loadavg(), **result}
    path = chunk_path(out, case, None if case.startswith("check") else seed)
    write_json(path, payload)
    log(f"wrote {path.relative_to(ROOT)} ({process_s:.0f} s, load {load_before[0]} -> {loadavg()[0]})")
    return payload


def schedule(seeds: list[int]) -> list[tuple[str, int]]:
    """Every case once per seed, the order rotating with the seed (SPOT first, then last, ...)."""
    out = []
    for i, seed in enumerate(seeds):
        k = i % len(CASES)
        out += [(case, seed) for case in CASES[k:] + CASES[:k]]
    return out


# --------------------------------------------------------------------------------------------- analysis


def curve(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best-so-far after each trial, with the wall time at which the trial's value was known."""
    best: Optional[float] = None
    out = []
    for t in trials:
        if t.get("value") is not None and (best is None or t["value"] < best):
            best = t["value"]
        out.append({"trial": t["number"] + 1, "t": t.get("recorded_s", t.get("end_s")), "best": best})
    return out


def time_to_reach(points: list[dict[str, Any]], target: Optional[float]) -> Optional[dict[str, Any]]:
    if target is None:
        return None
    for p in points:
        if p["best"] is not None and p["best"] <= target + 1e-12:
            return {"trial": p["trial"], "seconds": p["t"]}
    return None


def spread(values: list[Optional[float]]) -> dict[str, Any]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"median": None, "min": None, "max": None, "values": values}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "values": values}


def summarize_run(r: dict[str, Any], init_size: int) -> dict[str, Any]:
    trials = r["trials"]
    points = curve(trials)
    train_s = sum(t.get("train_s") or 0.0 for t in trials)
    # the optimiser's time before each model-based trial: from the end of the previous training to the start
    # of this one (tell, fit the model, optimise the acquisition, build the trial)
    gaps = [trials[i]["start_s"] - trials[i - 1]["end_s"] for i in range(max(1, init_size), len(trials))
            if "start_s" in trials[i] and "end_s" in trials[i - 1]]
    counts = {s: sum(1 for t in trials if t["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    best_row = min((t for t in trials if t.get("value") is not None), key=lambda t: t["value"], default=None)
    return {
        "final_best": points[-1]["best"] if points else None,
        "wall_s": r["wall_s"],
        "train_s": train_s,
        "tool_s": r["wall_s"] - train_s,
        "tool_s_per_trial": (r["wall_s"] - train_s) / max(1, len(trials)),
        "model_gap_s": spread(gaps),
        "counts": counts,
        "steps": int(sum(t.get("steps") or 0 for t in trials)),
        "curve": points,
        "best_trial": None if best_row is None else {"number": best_row["number"], "value": best_row["value"],
                                                     "config": best_row["config"], "params": best_row["params"]},
    }


def analyse(runs: dict[str, dict[int, dict[str, Any]]], seeds: list[int], init_size: int) -> dict[str, Any]:
    per = {case: {seed: summarize_run(runs[case][seed], init_size) for seed in seeds} for case in CASES}
    cases: dict[str, Any] = {}
    for case in CASES:
        s = [per[case][seed] for seed in seeds]
        best_seed = min(seeds, key=lambda seed: per[case][seed]["final_best"] if per[case][seed]["final_best"]
                        is not None else math.inf)
        cases[case] = {
            "final_best": spread([x["final_best"] for x in s]),
            "wall_s": spread([x["wall_s"] for x in s]),
            "train_s": spread([x["train_s"] for x in s]),
            "tool_s": spread([x["tool_s"] for x in s]),
            "tool_s_per_trial": spread([x["tool_s_per_trial"] for x in s]),
            "model_gap_s": spread([x["model_gap_s"]["median"] for x in s]),
            "counts": {k: sum(x["counts"][k] for x in s) for k in ("COMPLETE", "PRUNED", "FAIL")},
            "steps": spread([x["steps"] for x in s]),
            "best": {"seed": best_seed, **(per[case][best_seed]["best_trial"] or {})},
        }
    # time for each wordformer case to reach SPOT's final best of the same seed, as a fraction of SPOT's wall time
    reach: dict[str, Any] = {}
    for case in CASES[1:]:
        rows = []
        for seed in seeds:
            target = per["spot"][seed]["final_best"]
            hit = time_to_reach(per[case][seed]["curve"], target)
            ratio = None if hit is None else hit["seconds"] / per["spot"][seed]["wall_s"]
            rows.append({"seed": seed, "spot_best": target, "spot_wall_s": per["spot"][seed]["wall_s"],
                         "reached": hit, "fraction_of_spot_wall": ratio})
        fractions = [r["fraction_of_spot_wall"] if r["fraction_of_spot_wall"] is not None else math.inf for r in rows]
        reach[case] = {"per_seed": rows, "median_fraction": statistics.median(fractions)}
    pruned = cases["tpe_median"]["final_best"]["median"]
    spot_best = cases["spot"]["final_best"]["median"]
    frac = reach["tpe_median"]["median_fraction"]
    goals = [
        {"goal": "tune (TPE + median pruning) reaches SPOT's final best in <= 50% of SPOT's wall time "
                 "(per seed, median of the seeds)",
         "value": frac, "met": frac <= 0.5},
        {"goal": "tune (TPE + median pruning) final best <= SPOT's (median of the seeds)",
         "value": None if pruned is None or spot_best is None else pruned - spot_best,
         "met": pruned is not None and spot_best is not None and pruned <= spot_best},
    ]
    return {"per_seed": {case: {str(seed): per[case][seed] for seed in seeds} for case in CASES}, "cases": cases,
            "reach_spot_best": reach, "goals": goals}


# --------------------------------------------------------------------------------------------- plot


def plot(analysis: dict[str, Any], seeds: list[int], path: Path, title: str) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # all-NaN columns before a case's first value

    fig, (ax_n, ax_t) = plt.subplots(1, 2, figsize=(13, 4.8))
    for case in CASES:
        curves = [analysis["per_seed"][case][str(seed)]["curve"] for seed in seeds]
        n = max(len(c) for c in curves)
        by_trial = np.full((len(curves), n), np.nan)
        for i, c in enumerate(curves):
            for j, p in enumerate(c):
                by_trial[i, j] = np.nan if p["best"] is None else p["best"]
        x = np.arange(1, n + 1)
        with np.errstate(all="ignore"):
            ax_n.plot(x, np.nanmedian(by_trial, axis=0), color=COLORS[case], label=LABELS[case])
            ax_n.fill_between(x, np.nanmin(by_trial, axis=0), np.nanmax(by_trial, axis=0), color=COLORS[case],
                              alpha=0.15, linewidth=0)
        end = max(c[-1]["t"] for c in curves)
        grid = np.linspace(0, end, 400)
        by_time = np.full((len(curves), grid.size), np.nan)
        for i, c in enumerate(curves):
            ts = np.array([p["t"] for p in c])
            bs = np.array([np.nan if p["best"] is None else p["best"] for p in c])
            idx = np.searchsorted(ts, grid, side="right") - 1  # the last trial finished by each grid time
            ok = idx >= 0
            by_time[i, ok] = bs[idx[ok]]
        with np.errstate(all="ignore"):
            ax_t.plot(grid, np.nanmedian(by_time, axis=0), color=COLORS[case], label=LABELS[case])
            ax_t.fill_between(grid, np.nanmin(by_time, axis=0), np.nanmax(by_time, axis=0), color=COLORS[case],
                              alpha=0.15, linewidth=0)
        for c in curves:  # where each seed's run ended
            ax_t.plot([c[-1]["t"]], [c[-1]["best"]], marker="|", color=COLORS[case], markersize=10)
    ax_n.set_xlabel("trials (SPOT: function evaluations)")
    ax_t.set_xlabel("wall time (s)")
    for ax in (ax_n, ax_t):
        ax.set_ylabel("best validation loss so far")
        ax.grid(alpha=0.3)
    ax_n.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- markdown


def _n(v: Optional[float], digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _spread(s: dict[str, Any], digits: int = 4) -> str:
    return f"{_n(s['median'], digits)} [{_n(s['min'], digits)}–{_n(s['max'], digits)}]"


def _cfg(c: dict[str, Any]) -> str:
    heads = f"{c['num_heads']} head" + ("" if c["num_heads"] == 1 else "s")
    layers = f"{c['num_layers']} layer" + ("" if c["num_layers"] == 1 else "s")
    return (f"d_model {c['d_model']} ({heads}), {layers}, block {c['block_size']}, "
            f"{c['positional']}, {c['norm']}-norm, dropout {c['dropout']:.2f}, batch {c['batch_size']}, "
            f"lr {c['lr']:.2e}, warmup {c['warmup_steps']}")


def command(s: dict[str, Any], seeds: list[int], quick: bool) -> str:
    if quick:
        return f"python -m {MODULE} --quick"
    return (f"python -m {MODULE} --trials {s['trials']} --init-size {s['init_size']} --max-steps {s['max_steps']} "
            f"--eval-interval {s['eval_interval']} --eval-batches {s['eval_batches']} --threads {s['threads']} "
            f"--seeds {','.join(map(str, seeds))}")


def markdown(p: dict[str, Any]) -> str:
    s, a, check = p["settings"], p["analysis"], p["check"]
    seeds = p["seeds"]
    c = a["cases"]
    v_spot, v_tune = check["spot"]["versions"], check["wordformer"]["versions"]
    same = check["spot"]["check"]["val_loss_hex"] == check["wordformer"]["check"]["val_loss_hex"]
    lines = [
        "## SPOT (spotpython) vs `wordformer tune` on the same objective",
        "",
        f"The objective: one wordformer training run on char-level tinyshakespeare, **{s['max_steps']} steps**, "
        f"validation every {s['eval_interval']} steps on {s['eval_batches']} batches; its best validation loss is "
        f"what every case minimises. Search space [`benchmarks/spot/space.yaml`](benchmarks/spot/space.yaml): "
        f"d_model 4–64 (heads 1/2/4 × head size 4/8/16, power-of-two exponents), 1–3 layers, block 16/32/64 and "
        f"batch 8/16/32 (power-of-two exponents), dropout 0–0.3 (float), lr 3e-4–3e-2 (log scale), warmup 0–100 "
        f"(int), learned/sinusoidal positions and pre/post norm (categorical). Each case: **{s['trials']} trials**, "
        f"seeds {', '.join(map(str, seeds))} (the sampler's seed and every trial's training seed, so within a seed "
        f"all cases optimise the same deterministic function), {s['threads']} torch thread per trial.",
        "",
        f"- **SPOT**: spotpython {v_spot.get('spotpython')} `Spot` with its defaults for the Kriging surrogate "
        f"(method regression, Gaussian kernel, differential evolution for likelihood and infill), infill "
        f"criterion `ei` (expected improvement), a Latin hypercube initial design of {s['init_size']} points counted "
        f"in the {s['trials']}; lr tuned as log10(lr) (`transform_power_10`), power-of-two integers as exponents "
        f"(`transform_power_2_int`), categoricals as `factor` with `metric_factorial=\"hamming\"`. It calls "
        f"`wordformer.training.train` in its own process and environment.",
        f"- **tune**: `wordformer tune`'s own code path (`run_study` + `TrainingObjective`, SQLite storage, "
        f"Optuna {v_tune.get('optuna')}) with {s['init_size']} random start-up trials (Optuna's default, equal to "
        f"SPOT's initial design); pruning off for `tpe` and `gp`, the median pruner (5 start-up trials) for "
        f"`tpe_median`, which sees every validation.",
        f"- **Same arithmetic**: SPOT's environment has torch {v_spot['torch']}, Lightning {v_spot['lightning']}, "
        f"torchmetrics {v_spot['torchmetrics']} (wordformer's: {v_tune['torch']}, {v_tune['lightning']}, "
        f"{v_tune['torchmetrics']}), numpy {v_spot['numpy']} and scipy {v_spot['scipy']} (wordformer's: "
        f"{v_tune['numpy']}, {v_tune['scipy']}; with numpy 2.4 SPOT's differential-evolution step fails, \"only "
        f"0-dimensional arrays can be converted to Python scalars\", with scipy 1.16 and 1.17 alike; the scipy<1.17 "
        f"cap in the requirements is not needed but kept, as it is what this run used). The space's "
        f"default configuration trained once in each environment gave val_loss "
        f"{check['spot']['check']['val_loss']:.6f} (SPOT's) and {check['wordformer']['check']['val_loss']:.6f} "
        f"(wordformer's): " + ("**bit-identical**." if same else "**not identical** (see the JSON)."),
        "- **torchvision**: spotpython imports it at module level (`spotpython.utils.file`), and PyPI's torchvision "
        "does not load beside the CPU torch 2.13.0. Rather than a 5.5 GB CUDA torch 2.14.1 + torchvision 0.29.1 in "
        "SPOT's environment (different torch from wordformer's), SPOT's environment has no torchvision and its "
        "runner (`benchmarks/spot/run_spot.py`) puts an importable stand-in module in `sys.modules` after torch, "
        "Lightning and wordformer are imported; nothing in SPOT's loop uses it (any use would raise).",
        "",
        "| case | final best val_loss, median [min–max] | wall time (s) | training time (s) | optimiser time (s) "
        "| per model-based iteration (s) | trials complete / pruned / failed | steps trained |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        x = c[case]
        k = x["counts"]
        lines.append(
            f"| {LABELS[case]} | **{_spread(x['final_best'])}** | {_spread(x['wall_s'], 0)} | "
            f"{_spread(x['train_s'], 0)} | {_spread(x['tool_s'], 0)} | {_spread(x['model_gap_s'], 2)} | "
            f"{k['COMPLETE']} / {k['PRUNED']} / {k['FAIL']} | {_spread(x['steps'], 0)} |")
    lines += [
        "",
        "Per case, median over the seeds [min–max]. *Optimiser time* = wall time − time inside "
        "`wordformer.training.train`; *per model-based iteration* = median time from the end of one training to "
        "the start of the next once the model is in charge (after the initial design): fit the surrogate, optimise "
        "the acquisition, bookkeeping (for tune also the SQLite storage and `gc_after_trial`).",
        "",
        "Final best per seed:",
        "",
        "| case | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for case in CASES:
        lines.append(f"| {LABELS[case]} | " + " | ".join(_n(v) for v in c[case]["final_best"]["values"]) + " |")
    lines += ["", "Time for each `wordformer tune` case to reach SPOT's final best of the same seed, as a fraction of "
              "SPOT's wall time for that seed (never: not reached within its trials):", "",
              "| case | " + " | ".join(f"seed {seed}" for seed in seeds) + " | median |", "|---|" + "---|" * (len(seeds) + 1)]
    for case in CASES[1:]:
        r = a["reach_spot_best"][case]
        cells = []
        for row in r["per_seed"]:
            hit = row["reached"]
            cells.append("never" if hit is None else
                         f"{row['fraction_of_spot_wall']:.2f} (trial {hit['trial']}, {hit['seconds']:.0f} s)")
        med = r["median_fraction"]
        lines.append(f"| {LABELS[case]} | " + " | ".join(cells) + f" | **{'never' if math.isinf(med) else f'{med:.2f}'}** |")
    lines += ["", "| goal | measured | status |", "|---|---|---|"]
    for g in a["goals"]:
        v = g["value"]
        shown = "never" if v is not None and math.isinf(v) else _n(v, 3) if v is not None else "-"
        lines.append(f"| {g['goal']} | {shown} | **{'met' if g['met'] else 'not met'}** |")
    lines += ["", "Best configuration each case found (over the seeds):", "",
              "| case | seed, trial | val_loss | configuration |", "|---|---|---|---|"]
    for case in CASES:
        b = c[case]["best"]
        if "config" in b:
            lines.append(f"| {LABELS[case]} | {b['seed']}, {b['number']} | {_n(b['value'])} | {_cfg(b['config'])} |")
    rel = p.get("plot")
    if rel:
        lines += ["", f"![best validation loss so far against trials and wall time]({rel})", "",
                  "Lines: median over the seeds; bands: min–max over the seeds; ticks: where each seed's run ended. "
                  "Where two cases proposed the same trials (TPE with and without pruning, with the same seed), "
                  "their lines coincide in the left panel."]
    if READING.is_file() and not p["quick"]:
        lines += ["", READING.read_text().strip()]
    loads = [x for case in CASES for seed in seeds for x in (p["loads"][case][str(seed)],)]
    lines += [
        "",
        f"Machine: {p['machine']['cpu_model']}, {p['machine']['cpu_count']} CPUs (shared: other processes may run "
        f"on the same 2 cores; the cases are interleaved per seed, their order rotating, so that load falls on all "
        f"alike). Load average (1 min) before the chunks: median {statistics.median(x[0] for x in loads):.1f}, "
        f"max {max(x[0] for x in loads):.1f}. Chunks run {p['first_date']} – {p['last_date']}. Raw figures: "
        f"`benchmarks/results/spot.json` and one `benchmarks/results/spot_<case>_seed<S>.json` per chunk.",
        "",
        f"Reproduce (from the repository root; creates SPOT's environment, about 2 GB, in `benchmarks/spot/.venv` on "
        f"first use; the chunks above took {p['chunk_minutes']:.0f} minutes of CPU in all; `make bench` runs it too, "
        f"`python -m benchmarks.run_all --skip spot` leaves it out; `--quick` is a few-minute smoke run; "
        f"`--max-chunks N` runs N pending (case, seed) chunks and stops, a rerun resumes):",
        "",
        "```bash",
        command(s, seeds, p["quick"]),
        "# one chunk at a time under the shared CPU lock, then the summary:",
        f"for i in $(seq {len(CASES) * len(seeds)}); do flock /tmp/wordformer-cpu.lock python -m {MODULE} "
        "--max-chunks 1 --no-report; done; python -m benchmarks.bench_spot",
        "```",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trials", type=int, default=30, help="trials per case and seed (SPOT: fun_evals)")
    p.add_argument("--init-size", type=int, default=10,
                   help="SPOT's initial design size = TPE's and GP's random start-up trials")
    p.add_argument("--max-steps", type=int, default=600, help="per-trial step budget")
    p.add_argument("--eval-interval", type=int, default=100, help="validate (and report to the pruner) every N steps")
    p.add_argument("--eval-batches", type=int, default=10, help="batches per validation")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial (OMP_NUM_THREADS)")
    p.add_argument("--data", default=str(DATA), help="the corpus (char tokenizer)")
    p.add_argument("--max-chunks", type=int, default=None, help="run at most N pending (case, seed) chunks, then stop")
    p.add_argument("--render", action="store_true", help="only re-write the summary, plot and SPOT.md from the chunks")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 6 trials (3 initial), 40 steps, seed 0, into benchmarks/results/quick/")
    p.add_argument("--no-report", action="store_true", help="do not re-render BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.init_size, args.max_steps, args.eval_interval, args.eval_batches = 6, 3, 40, 10, 2
        args.seeds = "0"
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    if not Path(args.data).is_file():
        raise SystemExit(f"bench_spot: {args.data} is missing; pass --data FILE (a plain-text corpus)")
    if args.init_size >= args.trials:
        raise SystemExit(f"bench_spot: --init-size {args.init_size} must be below --trials {args.trials}")
    out = QUICK if args.quick else RESULTS
    settings = settings_of(args)
    t0 = time.perf_counter()
    budget = args.max_chunks if args.max_chunks is not None else math.inf
    ran = 0
    if not args.render:
        if args.quick:  # a smoke run runs: nothing is skipped
            for old in QUICK.glob("spot_*.json"):
                old.unlink()
        env_s = ensure_spot_env()
        if env_s:
            log(f"SPOT's environment took {env_s:.0f} s to create")
        for case in ("check_spot", "check_wordformer"):
            if not done(chunk_path(out, case, None), settings):
                log(f"same-arithmetic check: the space's defaults in {case[6:]}'s environment")
                run_job(case, seeds[0], args, settings, out)
        for case, seed in schedule(seeds):
            if done(chunk_path(out, case, seed), settings):
                continue
            if ran >= budget:
                log(f"stopping after {ran} chunk(s) (--max-chunks); run the same command again to continue")
                return 0
            log(f"=== {case} seed {seed} ({LABELS[case]}), load {loadavg()} ===")
            run_job(case, seed, args, settings, out)
            ran += 1
    runs: dict[str, dict[int, dict[str, Any]]] = {case: {} for case in CASES}
    missing = []
    for case, seed in schedule(seeds):
        payload = done(chunk_path(out, case, seed), settings)
        if payload is None:
            missing.append(f"{case} seed {seed}")
        else:
            runs[case][seed] = payload
    checks = {tool: done(chunk_path(out, f"check_{tool}", None), settings) for tool in ("spot", "wordformer")}
    if missing or not all(checks.values()):
        log(f"not summarised yet, missing: {', '.join(missing) or 'the same-arithmetic check'}")
        return 0
    analysis = analyse(runs, seeds, args.init_size)
    dates = sorted(runs[case][seed]["date"] for case in CASES for seed in seeds)
    plot_path = (QUICK / "bench_spot.png") if args.quick else PLOT
    payload = {
        "name": "spot", "quick": bool(args.quick), "settings": settings, "seeds": seeds,
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count()},
        "first_date": dates[0], "last_date": dates[-1],
        "chunk_minutes": sum(runs[case][seed]["process_s"] for case in CASES for seed in seeds) / 60,
        "check": {tool: {"check": checks[tool]["check"], "versions": checks[tool]["versions"]} for tool in checks},
        "loads": {case: {str(seed): runs[case][seed]["load_before"] for seed in seeds} for case in CASES},
        "analysis": analysis,
        "plot": str(plot_path.relative_to(ROOT)),
    }
    title = (f"{args.trials} trials of {args.max_steps} steps, char-level tinyshakespeare, seeds "
             f"{', '.join(map(str, seeds))} ({cpu_model()}, {os.cpu_count()} CPUs)")
    plot(analysis, seeds, plot_path, title)
    write_json(out / "spot.json", payload)
    log(f"wrote {(out / 'spot.json').relative_to(ROOT)} and {plot_path.relative_to(ROOT)}")
    text = markdown(payload)
    if args.quick:
        (QUICK / "SPOT.md").write_text(text)
    else:
        MARKDOWN.write_text(text)
        if not args.no_report:
            from benchmarks.report import render

            render()
            log("updated BENCHMARKS.md")
    for case in CASES:
        x = analysis["cases"][case]
        log(f"{LABELS[case]:28s} final best {_spread(x['final_best'])}, wall {_spread(x['wall_s'], 0)} s, "
            f"optimiser {_spread(x['tool_s'], 0)} s")
    for g in analysis["goals"]:
        log(f"goal: {g['goal']}: {'met' if g['met'] else 'not met'} ({g['value']})")
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
