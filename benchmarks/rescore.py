"""Re-derive summaries, ratios and goals of the result files from their raw measurements, then re-render
BENCHMARKS.md: ``python -m benchmarks.rescore`` (after a change to :mod:`benchmarks.derive`)."""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

from . import derive
from .bench_scaling import PLOT, plot
from .common import RESULTS, write_json
from .report import OUT, load_results, render


def rescore() -> None:
    """Re-derive summaries, ratios and goals of the result files from their raw measurements."""
    for name, r in load_results().items():
        if name == "train":
            r.update(derive.derive_train(r["runs"]))
        elif name == "generate":
            r.update(derive.derive_generate(r["runs"]))
        elif name == "scaling":
            for row in r["rows"]:
                derive.derive_scaling_row(row, r["matmul_peak_gflops"])
            plot(r["rows"], r["matmul_peak_gflops"], PLOT, omp_policy=r["machine"].get("omp_wait_policy"))
        else:
            continue
        write_json(RESULTS / f"{name}.json", r)
        print(f"re-derived {name}.json")


if __name__ == "__main__":
    rescore()
    render()
    print(f"wrote {OUT}")
