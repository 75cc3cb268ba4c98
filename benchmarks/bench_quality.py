"""Quality: validation loss after 2000 steps at nanoGPT's CPU sizes, through the ``wordformer train`` CLI, and
its wall time. Goal: <= 1.88, nanoGPT's published validation loss for that run.

    wordformer train --data ../shared/data/tinyshakespeare.txt --tokenizer char --num-layers 4 --num-heads 4
        --d-model 128 --block-size 64 --batch-size 12 --lr 1e-3 --min-lr 1e-4 --warmup-steps 100
        --max-steps 2000 --dropout 0 --beta2 0.99 --grad-clip 1 --eval-batches 200 --out runs/quality --overwrite

run with wordformer's default positions (sinusoidal) and with ``--positional learned`` (nanoGPT's, into
runs/quality-learned), each with seeds 1337 (the default) and 1 (``--seed 1``, into ``...-seed1``). All use
pre-norm and GELU, as nanoGPT. Validation: the last 10% of the
characters (as nanoGPT), 200 batches of 12 windows spread evenly over it (nanoGPT draws 200 random batches).

    python -m benchmarks.bench_quality [--quick]
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .common import DATA, ROOT, base_parser, finish, goal, load1, loadavg, log, start, summarize

NAME = "quality"
MODULE = "benchmarks.bench_quality"
NANOGPT_VAL_LOSS = 1.88


def cli_args(*, steps: int, eval_batches: int, out: str, positional: Optional[str]) -> list[str]:
    data = os.path.relpath(DATA, ROOT)
    args = ["train", "--data", data, "--tokenizer", "char", "--num-layers", "4", "--num-heads", "4", "--d-model", "128",
            "--block-size", "64", "--batch-size", "12", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "100",
            "--max-steps", str(steps), "--dropout", "0", "--beta2", "0.99", "--grad-clip", "1",
            "--eval-batches", str(eval_batches), "--out", out, "--overwrite"]
    if positional:
        args += ["--positional", positional]
    return args


def read_curve(out_dir: Path) -> list[dict[str, float]]:
    """Validation loss at each evaluation, from the CSV logger."""
    path = out_dir / "logs" / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    curve = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if row.get("val_loss"):
                curve.append({"step": int(float(row["step"])), "val_loss": float(row["val_loss"])})
    return curve


def run_cli(label: str, argv: list[str], threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    load_before = loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "wordformer.cli", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"wordformer train ({label}) failed with {proc.returncode}:\n{proc.stderr[-3000:]}")
    text = proc.stdout
    final = re.search(r"validation: loss ([0-9.naninf]+).*\(best loss ([0-9.naninf]+)\)", text)
    timing = re.search(r"steps: (\d+)\s+parameters: ([\d,]+)\s+time: ([0-9.]+) s", text)
    if not final or not timing:
        raise RuntimeError(f"cannot read the CLI's report ({label}):\n{text[-2000:]}")
    out_dir = ROOT / argv[argv.index("--out") + 1]
    result = {"label": label, "command": "wordformer " + " ".join(argv), "val_loss": float(final.group(1)),
              "best_val_loss": float(final.group(2)), "steps": int(timing.group(1)),
              "parameters": int(timing.group(2).replace(",", "")), "train_time_s": float(timing.group(3)),
              "wall_s": wall, "load_before": load_before, "load_after": loadavg(), "curve": read_curve(out_dir)}
    log(f"{label}: val loss {result['val_loss']:.4f} (best {result['best_val_loss']:.4f}) after {result['steps']} steps, "
        f"{result['train_time_s']:.0f} s; load {load1()}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--only-default", action="store_true", help="skip the --positional learned runs")
    p.add_argument("--seeds", default="1337,1", help="comma-separated seeds; each setting runs once per seed")
    args = p.parse_args(argv)
    started = start()
    steps, eval_batches = (60, 10) if args.quick else (2000, 200)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()][: 1 if args.quick else None]
    suffix = "-quick" if args.quick else ""
    settings = [("sinusoidal (default)", None, "runs/quality")]
    if not args.only_default and not args.quick:
        settings.append(("learned (nanoGPT)", "learned", "runs/quality-learned"))
    results = []
    for label, positional, out in settings:  # settings in turn, seeds within: the first run is the brief's command
        for seed in seeds:
            cli = cli_args(steps=steps, eval_batches=eval_batches, positional=positional,
                           out=out + suffix + ("" if seed == 1337 else f"-seed{seed}"))
            if seed != 1337:
                cli += ["--seed", str(seed)]
            results.append({**run_cli(f"{label}, seed {seed}", cli, args.threads), "setting": label, "seed": seed})
    summary = {}
    for label, _, _ in settings:
        mine = [r for r in results if r["setting"] == label]
        summary[label] = {"val_loss": summarize([r["val_loss"] for r in mine]),
                          "train_time_s": summarize([r["train_time_s"] for r in mine])}
    goals = []
    for label, s in summary.items():
        v, t = s["val_loss"], s["train_time_s"]
        goals.append(goal(f"quality: validation loss after {steps} steps, positions {label}", v["median"],
                          NANOGPT_VAL_LOSS, higher_is_better=False,
                          note=f"median of {v['n']} seeds, {v['min']:.3f}–{v['max']:.3f}; {t['median']:.0f} s per run"))
    finish(NAME, MODULE, args, started, {
        "config": {"steps": steps, "eval_batches": eval_batches, "val_split": "last 10% of the characters",
                   "eval": f"{eval_batches} batches of 12 windows spread evenly over the validation split, every 250 steps",
                   "threads": f"OMP_NUM_THREADS={args.threads} (the CLI's torch default on this machine is the core count)",
                   "reference": f"nanoGPT README, CPU run of shakespeare_char at these sizes: val loss {NANOGPT_VAL_LOSS}",
                   "seeds": seeds},
        "summary": summary,
        "results": results,
        "goals": goals,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
