"""Benchmarks of wordformer against a HuggingFace GPT-2 peer (``make bench``; never part of ``make test``).

Each ``bench_*`` module runs alone (``python -m benchmarks.bench_train [--quick]``), writes
``benchmarks/results/NAME.json`` and re-renders ``BENCHMARKS.md`` from every result file present.
"""
