"""What both runners of ``benchmarks/bench_spot.py`` share: the job file, the base configs, the trial log.

A job is one (case, seed) chunk of the benchmark. ``bench_spot.py`` writes it as JSON and starts a runner in
a fresh process: ``run_spot.py`` in SPOT's own virtual environment, ``run_tune.py`` in wordformer's. Both
runners build every trial's configuration with the same :class:`wordformer.tune.space.SearchSpace` (so the
power-of-two transform, the log-scaled learning rate and the categorical choices mean the same thing), train
it with :func:`wordformer.training.train` and record, for every trial, when it started and ended on the job's
wall clock and how long ``train`` itself took, so that wall time minus training time is the optimiser's own.

This module imports only the standard library at module level: the runners set the thread count and the
stand-in for torchvision before torch, Lightning or spotpython are imported.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional


def read_job(argv: list[str]) -> dict[str, Any]:
    """The job file named on the command line (``python run_X.py JOB.json``)."""
    if len(argv) != 2:
        raise SystemExit(f"usage: {Path(argv[0]).name} JOB.json")
    return json.loads(Path(argv[1]).read_text())


def setup(job: dict[str, Any]) -> None:
    """Threads and quiet logs, before the trials: the same in both runners."""
    os.environ.setdefault("OMP_NUM_THREADS", str(job["threads"]))
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(int(job["threads"]))
    import lightning  # noqa: F401  (sets its loggers' levels on import; ours must come after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def space_and_bases(job: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """The search space and the base configs every trial starts from (the benchmark's fixed options)."""
    from wordformer.config import DataConfig, ModelConfig, TrainConfig
    from wordformer.tune.space import load_space

    space = load_space(job["space"])
    model = ModelConfig()
    data = DataConfig(data=job["data"], tokenizer="char")
    train = TrainConfig(max_steps=int(job["max_steps"]), eval_interval=int(job["eval_interval"]),
                        eval_batches=int(job["eval_batches"]), seed=int(job["seed"]), progress=False,
                        precision="32-true", accelerator="cpu", devices="1")
    return space, model, data, train


def versions(*names: str) -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {"python": sys.version.split()[0]}
    for name in ("torch", "lightning", "torchmetrics", "numpy", "scipy", *names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def finite(value: Any) -> Optional[float]:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class TrialLog:
    """Times every call of ``train`` on the job's wall clock (t = 0 when the optimiser is created)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.rows: list[dict[str, Any]] = []

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def timed(self, train_fn: Callable[..., Any]) -> Callable[..., Any]:
        """``train_fn`` wrapped so that each call appends a row (even when it raises, e.g. a pruned trial)."""
        def run(*args: Any, **kwargs: Any) -> Any:
            row: dict[str, Any] = {"start_s": self.now()}
            self.rows.append(row)
            t = time.perf_counter()
            try:
                result = train_fn(*args, **kwargs)
            finally:
                row["train_s"] = time.perf_counter() - t
                row["end_s"] = self.now()
            row["steps"] = int(result.steps)
            row["num_parameters"] = int(result.num_parameters)
            return result

        return run


def flat_config(model: Any, train: Any) -> dict[str, Any]:
    """The config values a trial trained (what the report shows as its configuration)."""
    return {"d_model": model.d_model, "num_heads": model.num_heads, "num_layers": model.num_layers,
            "block_size": model.block_size, "positional": model.positional, "norm": model.norm,
            "dropout": round(float(model.dropout), 4), "batch_size": train.batch_size, "lr": float(train.lr),
            "warmup_steps": train.warmup_steps}


def write_result(job: dict[str, Any], payload: dict[str, Any]) -> None:
    path = Path(job["result"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def check_run(job: dict[str, Any], tool: str) -> dict[str, Any]:
    """Train the space's default configuration once: the same val_loss in both environments means the same
    torch arithmetic (same kernels, same seeds, same batches)."""
    from wordformer.training import train as train_fn

    space, model, data, train = space_and_bases(job)
    m, d, t = space.configs(space.defaults(), model, data, train)
    t0 = time.perf_counter()
    result = train_fn(m, d, t, Path(job["work"]) / "check", overwrite=True, logger=False)
    return {"tool": tool, "val_loss": float(result.val_loss), "val_loss_hex": float(result.val_loss).hex(),
            "metrics": {k: float(v) for k, v in result.metrics.items()}, "steps": int(result.steps),
            "train_s": time.perf_counter() - t0, "config": flat_config(m, t)}
