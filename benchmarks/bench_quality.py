"""Quality: validation loss after 2000 steps at nanoGPT's CPU sizes, through the ``wordformer train`` CLI, and
its wall time. Goal: <= 1.88, nanoGPT's published validation loss for that run.

    wordformer train --data ../shared/data/tinyshakespeare.txt --tokenizer char --num-layers 4 --num-heads 4
        --d-model 128 --block-size 64 --batch-size 12 --lr 1e-3 --min-lr 1e-4 --warmup-steps 100
        --max-steps 2000 --dropout 0 --beta2 0.99 --grad-clip 1 --eval-batches 200 --out runs/quality --overwrite

run with wordformer's default positions (sinusoidal) and with ``--positional learned`` (nanoGPT's, into
runs/quality-learned), each with seeds 1337 (the default) and 1 (``--seed 1``, into ``...-seed1``), and, on CPUs
with native bf16, learned positions with ``--precision bf16-mixed`` (into runs/quality-bf16). All use
pre-norm and GELU, as nanoGPT. Validation: the last 10% of the
characters (as nanoGPT), 200 batches of 12 windows spread evenly over it (nanoGPT draws 200 random batches).

Two checks of the reference figure: the peer (HF GPT-2, same sizes, plain loop, the Trainer's very batches and
schedule) trained the same 2000 steps and scored on the same validation batches; and the spread of nanoGPT's
own estimate for that CPU run (``eval_iters=20``: the mean of 20 random batches), drawn 200 times for the
final learned-position checkpoint.

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
from typing import Any

import statistics

import torch
import torch.nn.functional as F

from .common import (DATA, ROOT, SEED, SIZES, PlainStepper, base_parser, batch_list, char_corpus, goal, load1,
                     loadavg, log, peer_logits, peer_model, set_threads, start, summarize)
from .report import finish

NAME = "quality"
MODULE = "benchmarks.bench_quality"
NANOGPT_VAL_LOSS = 1.88


def cli_args(*, steps: int, eval_batches: int, out: str, extra: list[str]) -> list[str]:
    data = os.path.relpath(DATA, ROOT)
    args = ["train", "--data", data, "--tokenizer", "char", "--num-layers", "4", "--num-heads", "4", "--d-model", "128",
            "--block-size", "64", "--batch-size", "12", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "100",
            "--max-steps", str(steps), "--dropout", "0", "--beta2", "0.99", "--grad-clip", "1",
            "--eval-batches", str(eval_batches), "--out", out, "--overwrite"]
    return args + extra


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


def val_batches(corpus, eval_batches: int):
    """The validation batches ``wordformer train`` scores (its data module's own list)."""
    from wordformer.data import WordDataModule

    dm = WordDataModule(corpus, 64, 12, seed=1337, eval_batches=eval_batches)
    dm.setup("fit")
    return [dm.val_set[i] for i in range(len(dm.val_set))]


@torch.no_grad()
def mean_loss(model, logits_fn, batches) -> float:
    model.eval()
    losses = [float(F.cross_entropy(logits_fn(model, x).flatten(0, 1), y.flatten())) for x, y in batches]
    model.train()
    return sum(losses) / len(losses)


def peer_quality(steps: int, eval_batches: int) -> dict[str, Any]:
    """The peer trained on the Trainer's batches and schedule, scored on the Trainer's validation batches."""
    corpus = char_corpus(64)
    vocab = corpus.tokenizer.vocab_size
    sizes = {k: SIZES[k] for k in ("num_layers", "num_heads", "d_model", "block_size")}
    stepper = PlainStepper(peer_model(vocab, **sizes), peer_logits, batch_list(corpus, 64, 12, steps), max_steps=steps)
    t0 = time.perf_counter()
    stepper.run(steps)
    seconds = time.perf_counter() - t0
    loss = mean_loss(stepper.model, peer_logits, val_batches(corpus, eval_batches))
    log(f"peer: val loss {loss:.4f} after {steps} steps, {seconds:.0f} s; load {load1()}")
    return {"val_loss": loss, "steps": steps, "train_time_s": seconds,
            "how": "transformers.GPT2LMHeadModel, learned positions, plain loop, default AdamW, same batches"}


@torch.no_grad()
def nanogpt_estimate_spread(checkpoint: Path, eval_batches: int, draws: int = 200, batches: int = 20) -> dict[str, Any]:
    """nanoGPT's estimate_loss at eval_iters=20 (the mean of 20 random 12x64 batches), drawn many times."""
    from wordformer import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    corpus = char_corpus(64)
    val = torch.as_tensor(corpus.val_ids.astype("int64"))
    g = torch.Generator().manual_seed(SEED)
    model = loaded.model.eval()
    estimates = []
    for _ in range(draws):
        starts = torch.randint(len(val) - 64, (batches, 12), generator=g)
        windows = val[starts[..., None] + torch.arange(65)]  # (batches, 12, 65)
        estimates.append(sum(float(F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten()))
                             for w in windows) / batches)
    ours = mean_loss(model, lambda m, x: m(x), val_batches(corpus, eval_batches))
    return {"checkpoint": str(checkpoint.relative_to(ROOT)), "draws": draws, "batches_per_estimate": batches,
            "estimate": summarize(estimates), "stdev": statistics.stdev(estimates),
            "share_at_or_below_reference": sum(e <= NANOGPT_VAL_LOSS for e in estimates) / draws,
            "our_loss": ours, "our_eval_batches": eval_batches}


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--only-default", action="store_true", help="skip the --positional learned runs")
    p.add_argument("--seeds", default="1337,1", help="comma-separated seeds; each setting runs once per seed")
    args = p.parse_args(argv)
    started = start()
    steps, eval_batches = (60, 10) if args.quick else (2000, 200)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()][: 1 if args.quick else None]
    suffix = "-quick" if args.quick else ""
    from wordformer.hardware import cpu_has_native_bf16

    set_threads(args.threads)
    settings = [("sinusoidal (default)", [], "runs/quality")]
    if not args.only_default and not args.quick:
        settings.append(("learned (nanoGPT)", ["--positional", "learned"], "runs/quality-learned"))
        if cpu_has_native_bf16():
            settings.append(("learned, bf16-mixed", ["--positional", "learned", "--precision", "bf16-mixed"],
                             "runs/quality-bf16"))
    results = []
    for label, extra, out in settings:  # settings in turn, seeds within: the first run is the brief's command
        for seed in seeds:
            cli = cli_args(steps=steps, eval_batches=eval_batches, extra=extra,
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
    checks: dict[str, Any] = {"peer": peer_quality(steps, eval_batches)}
    learned = ROOT / ("runs/quality-learned" if not args.quick else "runs/quality-quick") / "last.ckpt"
    checks["nanogpt_estimate"] = nanogpt_estimate_spread(learned, eval_batches, draws=20 if args.quick else 200)
    e = checks["nanogpt_estimate"]
    log(f"nanoGPT-style 20-batch estimate of {e['checkpoint']}: median {e['estimate']['median']:.4f}, sd "
        f"{e['stdev']:.4f}, {e['share_at_or_below_reference']:.0%} of draws <= {NANOGPT_VAL_LOSS}")
    finish(NAME, MODULE, args, started, {
        "config": {"steps": steps, "eval_batches": eval_batches, "val_split": "last 10% of the characters",
                   "eval": f"{eval_batches} batches of 12 windows spread evenly over the validation split, every 250 steps",
                   "threads": f"OMP_NUM_THREADS={args.threads} (the CLI's torch default on this machine is the core count)",
                   "reference": f"nanoGPT README, CPU run of shakespeare_char at these sizes: val loss {NANOGPT_VAL_LOSS}",
                   "seeds": seeds},
        "summary": summary,
        "results": results,
        "reference_checks": checks,
        "goals": goals,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
