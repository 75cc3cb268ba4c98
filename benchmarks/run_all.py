"""Run every benchmark in turn, each in its own process, then re-render BENCHMARKS.md (``make bench``).

    python -m benchmarks.run_all [--quick] [--only train,generate] [--skip quality]

Order: train, generate, memory, scaling, quality (four 2000-step CLI runs), gpu (exits at once
without a CUDA device), omp (supplementary: the OpenMP wait policy wordformer sets), serve (`wordformer serve`
against `transformers serve`), spot, scale (corpora of 10 MB to 1 GB built in the temp folder, about 20 minutes;
it needs ~6 GB of free disk there), recipe (the longest: about a hundred training runs, hours on 2 cores;
resumable, it skips runs whose results are stored). A failing benchmark is reported and the others still run;
the exit status is 1 if
any failed. Not part of ``make test``.
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import argparse
import subprocess
import sys
import time

from .common import ROOT, loadavg, log

BENCHMARKS = ("train", "generate", "memory", "scaling", "quality", "gpu", "omp", "serve", "spot", "scale", "recipe")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run of every benchmark (results/quick/, page untouched)")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    p.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    args = p.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()] or list(BENCHMARKS)
    skipped = {b.strip() for b in args.skip.split(",") if b.strip()}
    unknown = sorted((set(chosen) | skipped) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    failed, t0 = [], time.perf_counter()
    for name in (b for b in chosen if b not in skipped):
        cmd = [sys.executable, "-m", f"benchmarks.bench_{name}", "--no-report"] + (["--quick"] if args.quick else [])
        log(f"=== bench_{name} (load {loadavg()}) ===")
        started = time.perf_counter()
        code = subprocess.call(cmd, cwd=ROOT)
        log(f"=== bench_{name}: exit {code} after {time.perf_counter() - started:.0f} s ===")
        if code != 0:
            failed.append(name)
    if not args.quick:
        from .report import render

        render()
        log("updated BENCHMARKS.md")
    log(f"all done in {time.perf_counter() - t0:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
