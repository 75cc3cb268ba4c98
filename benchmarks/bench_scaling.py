"""Scaling: training tokens/s as the block size grows (64..512, d_model 128) and as d_model grows (64..512,
block 64), wordformer's model and the peer in the same plain loop (alternating), and the fraction of this
machine's measured float32 matmul peak that training reaches.

Model FLOPs per token: 6N + 12·L·d_model·T (N: parameters without the position table, as nanoGPT counts).
The peak: the best GFLOP/s of large square ``torch.matmul`` with the same thread count, measured at the start
and the end of the run and (2048 only) before each size; the best figure seen is the peak. Per configuration,
after 2 untimed steps each, the two models train alternately in chunks of the same step count (about
``--seconds`` at 100 GFLOP/s), for ``--repeats`` rounds; each chunk is one measurement. Writes ``docs/bench_scaling.png``.

    python -m benchmarks.bench_scaling [--quick]
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import os
import time
from typing import Any

import torch

from .common import (DOCS, ROOT, SIZES, PlainStepper, base_parser, batch_list, char_corpus, flops_per_token,
                     interleave, log, peer_logits, peer_model, quiet_libraries, set_threads, start, wordformer_logits,
                     wordformer_model)
from .report import finish
from .derive import derive_scaling_row

NAME = "scaling"
MODULE = "benchmarks.bench_scaling"
BLOCKS = (64, 128, 256, 512)
WIDTHS = (64, 128, 256, 512)
PLOT = DOCS / "bench_scaling.png"
ASSUMED_GFLOPS = 100.0  # only sizes the chunks: about --seconds each at this rate


def matmul_peak(sizes=(1024, 2048, 3072, 4096), repeats: int = 5) -> dict[str, Any]:
    """Best float32 GFLOP/s of ``a @ b`` for square matrices (each size: best and median of ``repeats`` after a warm-up)."""
    results = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.matmul(a, b)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            times.append(time.perf_counter() - t0)
        results[str(n)] = {"gflops_median": 2 * n**3 / sorted(times)[len(times) // 2] / 1e9,
                           "gflops_best": 2 * n**3 / min(times) / 1e9}
    return {"by_size": results, "gflops": max(r["gflops_best"] for r in results.values())}


def configs(quick: bool) -> list[dict[str, Any]]:
    base = {k: SIZES[k] for k in ("num_layers", "num_heads", "d_model", "block_size")}
    blocks = (64, 256) if quick else BLOCKS
    widths = (64, 256) if quick else WIDTHS
    out = [{**base, "block_size": b, "axis": "block_size"} for b in blocks]
    out += [{**base, "d_model": d, "axis": "d_model"} for d in widths]
    return out


def quiet_or_all(s: dict[str, Any]) -> dict[str, Any]:
    """The quiet-round summary when there is one, else the summary of all rounds."""
    q = s.get("quiet") or {}
    return q if q.get("n") else s


def plot(rows: list[dict[str, Any]], peak: float, path, *, omp_policy: Any = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex="col")
    for col, axis in enumerate(("block_size", "d_model")):
        sub = [r for r in rows if r["axis"] == axis]
        xs = [r[axis] for r in sub]
        for who, style in (("wordformer", "o-"), ("peer", "s--")):
            stats = [quiet_or_all(r[who]["tokens_per_s"]) for r in sub]
            med = [st["median"] for st in stats]
            lo = [st["min"] for st in stats]
            hi = [st["max"] for st in stats]
            label = "wordformer" if who == "wordformer" else "HF GPT-2 (peer)"
            axes[0, col].errorbar(xs, med, yerr=[[m - l for m, l in zip(med, lo)], [h - m for m, h in zip(med, hi)]],
                                  fmt=style, capsize=3, label=label)
            axes[0, col].plot(xs, [r[who]["tokens_per_s"]["max"] for r in sub], style[0], mfc="none", alpha=0.5,
                              label=label + ", best chunk")
            axes[1, col].plot(xs, [100 * quiet_or_all(r[who]["peak_fraction"])["median"] for r in sub], style, label=label)
            axes[1, col].plot(xs, [100 * r[who]["peak_fraction"]["max"] for r in sub], style[0], mfc="none", alpha=0.5,
                              label=label + ", best chunk")
        for row in (0, 1):
            axes[row, col].set_xscale("log", base=2)
            axes[row, col].set_xticks(xs, [str(x) for x in xs])
            axes[row, col].grid(alpha=0.3)
        axes[0, col].set_ylabel("tokens/s (quiet rounds: median, min-max)")
        axes[1, col].set_ylabel(f"% of matmul peak ({peak:.0f} GFLOP/s)")
        axes[1, col].set_xlabel(axis + (" (d_model 128)" if axis == "block_size" else " (block 64)"))
        axes[0, col].legend(fontsize=7)
        axes[1, col].legend(fontsize=7)
    fig.suptitle("Training throughput: 4 layers, 4 heads, batch 12, float32, CPU, 2 threads, "
                 f"OMP_WAIT_POLICY={omp_policy or os.environ.get('OMP_WAIT_POLICY')}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=None, help="target seconds per timed chunk (default 0.5, quick 0.3)")
    args = p.parse_args(argv)
    started = start()
    threads = set_threads(args.threads)
    quiet_libraries()
    repeats = args.repeats or (2 if args.quick else 10)
    seconds = args.seconds or (0.3 if args.quick else 0.5)
    peak_start = matmul_peak()
    log(f"threads {threads}; float32 matmul peak {peak_start['gflops']:.1f} GFLOP/s")

    corpus = char_corpus(max(BLOCKS))
    vocab = corpus.tokenizer.vocab_size
    batch = SIZES["batch_size"]
    rows: list[dict[str, Any]] = []
    peaks: list[float] = []
    for cfg in configs(args.quick):
        sizes = {k: cfg[k] for k in ("num_layers", "num_heads", "d_model", "block_size")}
        batches = batch_list(corpus, cfg["block_size"], batch, 64)
        probe = wordformer_model(vocab, **sizes)
        flops = flops_per_token(probe, num_layers=sizes["num_layers"], d_model=sizes["d_model"],
                                block_size=sizes["block_size"], positional_params=sizes["block_size"] * sizes["d_model"])
        params = sum(q.numel() for q in probe.parameters())
        del probe
        steppers = {"wordformer": PlainStepper(wordformer_model(vocab, **sizes), wordformer_logits, batches, max_steps=2000),
                    "peer": PlainStepper(peer_model(vocab, **sizes), peer_logits, batches, max_steps=2000)}
        for stepper in steppers.values():  # untimed warm-up
            stepper.run(2)
        # steps per chunk from the work, not from a timed probe (a probe on a busy machine misleads)
        step_gflop = flops * sizes["block_size"] * batch / 1e9
        chunk = max(1, min(20, round(seconds * ASSUMED_GFLOPS / step_gflop)))
        peaks.append(matmul_peak((2048,), repeats=3)["gflops"])  # the peak is re-probed between sizes
        runs = interleave(steppers, rounds=repeats, chunk=chunk, label=f"{cfg['axis']}={cfg[cfg['axis']]} ")
        del steppers
        rows.append({**cfg, "parameters": params, "chunk_steps": chunk, "flops_per_token": flops, "runs": runs})
    peak_end = matmul_peak()
    peak = max(peak_start["gflops"], peak_end["gflops"], *peaks)  # best seen: the least disturbed estimate
    for row in rows:
        derive_scaling_row(row, peak)  # summaries, quiet rounds, ratio, fraction of the peak
    log(f"matmul peak at the end {peak_end['gflops']:.1f} GFLOP/s")
    if not args.quick:
        plot(rows, peak, PLOT)
        log(f"wrote {PLOT.relative_to(ROOT)}")
    finish(NAME, MODULE, args, started, {
        "config": {"num_layers": SIZES["num_layers"], "num_heads": SIZES["num_heads"], "batch_size": batch,
                   "vocab_size": vocab, "positional": "learned", "dtype": "float32", "rounds": repeats,
                   "seconds_per_chunk": seconds, "loop": "plain PyTorch loop, same batches, AdamW + clip",
                   "flops_formula": "6N + 12*L*d_model*T, N without the position table"},
        "matmul_peak_gflops": peak, "matmul_peak_start": peak_start, "matmul_peak_end": peak_end,
        "matmul_peak_between_sizes": peaks,
        "plot": str(PLOT.relative_to(ROOT)) if not args.quick else None,
        "rows": rows,
        "goals": [],
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
