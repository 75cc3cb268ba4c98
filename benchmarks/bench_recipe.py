"""Time to quality: the recipe options of issue 15 (Muon, RoPE, RMS norm, QK-norm, ReLU², SwiGLU, WSD, zero-init,
soft-capping), each alone and as the ``fast`` preset, against nanoGPT's baseline and a tuned-AdamW control.

At nanoGPT's CPU config (char-level tinyshakespeare, 4 layers, 4 heads, d_model 128, block 64, batch 12; dropout 0,
AdamW betas (0.9, 0.99), weight decay 0.1, grad clip 1, 100 warm-up steps, min_lr = lr/10), every run is a real
``wordformer.train`` run in its own process, scored on the same 200 validation batches as bench_quality:

1. lr sweep: the baseline at lr 1e-3 (nanoGPT's), 2e-3, 3e-3, 4e-3, 6e-3 (seed 1337); the best is the control. Muon's
   own lr: 0.01, 0.02, 0.04 (seed 1337, AdamW parts at the control's lr); the best is used for every Muon case.
2. ablation at 2000 steps, 3 seeds: baseline, control, each change alone on top of the control, the fast preset.
   Validation loss (at the end), training time (validation excluded), tokens/s, median time per step.
3. step cost: every case interleaved in one process (plain loop, chunks of steps, order rotating), with Muon's
   Newton–Schulz batched across layers and not.
4. time to quality: baseline, control and fast at 250, 500, 750, 1000, 1500, 2000 steps, each a full schedule, 3 seeds:
   the steps and seconds each needs to reach validation loss 1.88 (table, docs/bench_recipe.png).
5. the word-level built-in corpus at the demo's sizes (cli.DEMO_OPTIONS, 4000 steps): demo vs demo + fast.
6. on CPUs with native bf16: baseline and fast with --precision bf16-mixed.

Each run writes benchmarks/results/recipe/RUN.json (RUN names the case, steps, seed and a hash of its configs), so an
interrupted benchmark continues where it stopped; ``--minutes M`` stops starting runs after M minutes (for chunks
under the shared CPU lock). Runs go seed by seed, case after case, so machine load falls on all cases alike.

    python -m benchmarks.bench_recipe [--phase sweep|ablation|budgets|word|bf16|cost|all|priority|report]
                                      [--minutes 12] [--quick]

``priority`` runs the whole plan in the order a shared machine should spend its time (see priority_specs);
``report`` trains nothing and renders what is stored.
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .common import DATA, DOCS, RESULTS, ROOT, base_parser, goal, load1, loadavg, log, start, summarize, write_json
from .report import finish, table

NAME = "recipe"
MODULE = "benchmarks.bench_recipe"
RUNS = RESULTS / "recipe"
TARGET = 1.88  # nanoGPT's published validation loss at this config
SEEDS = (1337, 1, 2)
BUDGETS = (250, 500, 750, 1000, 1500, 2000)  # 250: added when fast reached the target at 500 already
BASELINE_BUDGETS = (3000,)  # the baseline misses the target at 2000 steps: a longer schedule finds where it gets there
LR_SWEEP = (1e-3, 2e-3, 3e-3, 4e-3, 6e-3)
MUON_LR_SWEEP = (0.01, 0.02, 0.04)
PLOT = DOCS / "bench_recipe.png"
CORPUS = DATA  # tinyshakespeare; --data PATH points elsewhere (a worktree beside no ../shared)

BASE_MODEL = dict(num_layers=4, num_heads=4, d_model=128, block_size=64, dropout=0.0, positional="learned",
                  norm="pre", norm_type="layernorm", activation="gelu", tie_weights=True, bias=True)
BASE_DATA = dict(tokenizer="char")
BASE_TRAIN = dict(batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.1, beta1=0.9, beta2=0.99,
                  grad_clip=1.0, eval_batches=200, progress=False)

# each change alone, on top of the control; the label says what it is
CHANGES: dict[str, tuple[str, dict[str, Any]]] = {
    "rope": ("rotary positions (RoPE) instead of learned", {"positional": "rope"}),
    "rmsnorm": ("RMS norm instead of layer norm", {"norm_type": "rmsnorm"}),
    "qk_norm": ("QK-norm", {"qk_norm": True}),
    "relu2": ("squared ReLU instead of GELU", {"activation": "relu2"}),
    "swiglu": ("SwiGLU instead of GELU (same parameter count)", {"activation": "swiglu"}),
    "muon": ("Muon (q, k, v orthogonalised separately)", {"optimizer": "muon"}),
    "muon_fused_qkv": ("Muon, fused q/k/v orthogonalised as one matrix", {"optimizer": "muon", "muon_split_qkv": False}),
    "wsd": ("warm-up-stable-decay schedule (last 20% decays)", {"schedule": "wsd"}),
    "zero_init_residual": ("zero-initialised residual projections", {"zero_init_residual": True}),
    "zero_init_output": ("untied output layer, zero-initialised", {"tie_weights": False, "zero_init_output": True}),
    "softcap": ("logit soft-capping at 15", {"logit_softcap": 15.0}),
    "no_bias": ("no biases", {"bias": False}),
}


# ------------------------------------------------------------------------------------------ runs


def config_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]


def run_spec(case: str, overrides: dict[str, Any], *, steps: int, seed: int, eval_interval: Optional[int] = None,
             base_model: Optional[dict] = None, base_data: Optional[dict] = None,
             base_train: Optional[dict] = None) -> dict[str, Any]:
    """Everything one run needs, as plain data; its id names case, steps, seed and the hash of the rest."""
    from wordformer.config import DataConfig, ModelConfig, TrainConfig, field_names

    values = {**(base_model or BASE_MODEL), **(base_data or BASE_DATA), **(base_train or BASE_TRAIN), **overrides}
    model = {k: v for k, v in values.items() if k in field_names(ModelConfig)}
    data = {k: v for k, v in values.items() if k in field_names(DataConfig)}
    train = {k: v for k, v in values.items() if k in field_names(TrainConfig)}
    train.update(max_steps=steps, seed=seed, eval_interval=eval_interval or steps)
    if "lr" in overrides and "min_lr" not in overrides:
        train["min_lr"] = train["lr"] / 10
    if "data" not in data:
        data["data"] = str(CORPUS)
    spec = {"case": case, "model": model, "data": data, "train": train}
    where = None if data["data"] is None else Path(data["data"]).name  # not the folder: ids survive a move
    spec["id"] = f"{case}-{steps}-s{seed}-{config_hash({**spec, 'data': {**data, 'data': where}})}"
    return spec


def result_path(spec: dict[str, Any]) -> Path:
    return RUNS / f"{spec['id']}.json"


def same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two specs that train the same model the same way (whatever their case names), once each is filled in with
    the config defaults: a preset names every field it sets, a hand-written case only what it changes."""
    from dataclasses import asdict

    from wordformer.config import DataConfig, ModelConfig, TrainConfig

    def full(spec: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        return (asdict(ModelConfig(**spec["model"])), asdict(DataConfig(**spec["data"])),
                asdict(TrainConfig(**spec["train"])))

    if all(a[k] == b[k] for k in ("model", "data", "train")):
        return True
    return full(a) == full(b)


def load_result(spec: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The stored result of ``spec``, or of an identical run stored under another case name (the sweep's best lr
    is the control's first seed): that one is copied under this spec's name, not trained again."""
    path = result_path(spec)
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
    for other in all_runs():
        if same_run(other["spec"], spec):
            copy = {**other, "id": spec["id"], "case": spec["case"], "spec": spec, "same_as": other["id"]}
            write_json(path, copy)
            return copy
    return None


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one run in this process (the child) and return its measurements."""
    import warnings

    import lightning as L
    import torch

    from wordformer.config import DataConfig, ModelConfig, TrainConfig
    from wordformer.training import train

    warnings.filterwarnings("ignore")
    from .common import quiet_libraries

    quiet_libraries()

    class Timing(L.Callback):
        """Training time without validation and checkpointing; the validation loss at each evaluation."""

        def __init__(self) -> None:
            self.t0 = 0.0
            self.paused: Optional[float] = None
            self.excluded = 0.0
            self.step_times: list[float] = []
            self.curve: list[dict[str, float]] = []
            self.batch_t = 0.0

        def on_train_start(self, trainer: Any, module: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
            now = time.perf_counter()
            if self.paused is not None:
                self.excluded += now - self.paused
                self.paused = None
            self.batch_t = now

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            self.step_times.append(time.perf_counter() - self.batch_t)

        def on_validation_start(self, trainer: Any, module: Any) -> None:
            self.paused = time.perf_counter()

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            loss = trainer.callback_metrics.get("val_loss")
            self.curve.append({"step": int(trainer.global_step), "val_loss": float(loss) if loss is not None else None,
                               "train_s": self.paused - self.t0 - self.excluded})

        def on_train_end(self, trainer: Any, module: Any) -> None:
            now = time.perf_counter()
            if self.paused is not None:
                self.excluded += now - self.paused
                self.paused = None
            self.train_s = now - self.t0 - self.excluded

    torch.set_num_threads(int(os.environ.get("RECIPE_THREADS", "2")))
    timing = Timing()
    out = ROOT / "runs" / "recipe" / spec["id"]
    load_before = loadavg()
    t0 = time.perf_counter()
    result = train(ModelConfig(**spec["model"]), DataConfig(**spec["data"]), TrainConfig(**spec["train"]), out,
                   callbacks=[timing], overwrite=True, logger=False)
    wall = time.perf_counter() - t0
    steps = result.steps
    tokens = steps * spec["train"]["batch_size"] * spec["model"]["block_size"]
    times = sorted(timing.step_times[10:]) or sorted(timing.step_times)
    return {"id": spec["id"], "case": spec["case"], "spec": spec, "steps": steps, "seed": spec["train"]["seed"],
            "val_loss": timing.curve[-1]["val_loss"] if timing.curve else result.metrics.get("val_loss"),
            "curve": timing.curve, "train_s": timing.train_s, "wall_s": wall, "tokens_per_s": tokens / timing.train_s,
            "step_ms_median": 1000 * times[len(times) // 2], "parameters": result.num_parameters,
            "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_before": load_before, "load_after": loadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def launch(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec`` in a child process (its own memory and threads) and store its result."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", MODULE, "--child", json.dumps(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"run {spec['id']} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    write_json(result_path(spec), result)
    return result


def execute(specs: list[dict[str, Any]], deadline: float) -> int:
    """Run the specs not done yet, in order, until the deadline; returns how many are still missing."""
    todo = [s for s in specs if load_result(s) is None]
    log(f"{len(specs) - len(todo)} of {len(specs)} runs done; {len(todo)} to go")
    for i, spec in enumerate(todo):
        if time.time() > deadline:
            log(f"time is up: {len(todo) - i} runs left for the next chunk")
            return len(todo) - i
        before = load1()
        r = launch(spec)
        log(f"{spec['id']}: val loss {r['val_loss']:.4f}, train {r['train_s']:.0f} s, "
            f"{r['step_ms_median']:.1f} ms/step; load {before} -> {load1()}")
    return 0


# ------------------------------------------------------------------------------------------ the plan


def done(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in (load_result(s) for s in specs) if r is not None]


def all_runs() -> list[dict[str, Any]]:
    """Every stored run result (for the load averages they ran under)."""
    out = []
    for path in sorted(RUNS.glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def sweep_specs(steps: int) -> list[dict[str, Any]]:
    return [run_spec(f"lr{lr:g}", {"lr": lr}, steps=steps, seed=SEEDS[0], eval_interval=steps // 2) for lr in LR_SWEEP]


def tuned_lr(steps: int) -> Optional[float]:
    """The sweep's best AdamW lr (lowest final validation loss), once every sweep run is done."""
    specs = sweep_specs(steps)
    results = done(specs)
    if len(results) < len(specs):
        return None
    best = min(results, key=lambda r: r["val_loss"])
    return float(best["spec"]["train"]["lr"])


def muon_sweep_specs(steps: int, lr: float) -> list[dict[str, Any]]:
    return [run_spec(f"muonlr{m:g}", {"lr": lr, "optimizer": "muon", "muon_lr": m}, steps=steps, seed=SEEDS[0],
                     eval_interval=steps // 2) for m in MUON_LR_SWEEP]


def tuned_muon_lr(steps: int, lr: float) -> Optional[float]:
    specs = muon_sweep_specs(steps, lr)
    results = done(specs)
    if len(results) < len(specs):
        return None
    return float(min(results, key=lambda r: r["val_loss"])["spec"]["train"]["muon_lr"])


def preset_overrides(name: str) -> dict[str, Any]:
    from wordformer.presets import preset_values

    return preset_values(name)


def cases(steps: int) -> Optional[dict[str, tuple[str, dict[str, Any]]]]:
    """label and overrides of every ablation case, or None until the sweeps are done."""
    lr = tuned_lr(steps)
    if lr is None:
        return None
    muon_lr = tuned_muon_lr(steps, lr)
    if muon_lr is None:
        return None
    out: dict[str, tuple[str, dict[str, Any]]] = {
        "baseline": ("baseline: nanoGPT (learned positions, layer norm, GELU, AdamW lr 1e-3, cosine)", {}),
        "control": (f"control: the baseline at the tuned AdamW lr {lr:g}", {"lr": lr}),
    }
    for name, (label, overrides) in CHANGES.items():
        extra = {"muon_lr": muon_lr} if overrides.get("optimizer") == "muon" else {}
        out[name] = (label + (f", muon_lr {muon_lr:g}" if extra else ""), {"lr": lr, **overrides, **extra})
    out["fast"] = ("the fast preset (RoPE + Muon; AdamW lr 4e-3 for the rest)", preset_overrides("fast"))
    out["chapter"] = ("the chapter preset, wordformer's default: the baseline with sinusoidal positions",
                      preset_overrides("chapter"))
    return out


def ablation_specs(steps: int, seeds: tuple[int, ...], names: Optional[tuple[str, ...]] = None) -> list[dict[str, Any]]:
    """Runs of the ablation cases (all but ``fast`` unless ``names`` says), seed by seed."""
    found = cases(steps)
    if found is None:
        return []
    chosen = names or tuple(n for n in found if n != "fast")
    return [run_spec(name, found[name][1], steps=steps, seed=seed, eval_interval=steps // 2)
            for seed in seeds for name in chosen]


# Combinations tried on the way to the fast preset (two seeds each), chosen after the ablation's first seed: Muon
# (by far the largest gain alone) with RoPE (the next) and SwiGLU, then one more change at a time on top.
_MUON = {"optimizer": "muon", "lr": 4e-3, "muon_lr": 0.01}
CANDIDATES: dict[str, dict[str, Any]] = {
    "muon_rope": {**_MUON, "positional": "rope"},
    "muon_rope_swiglu": {**_MUON, "positional": "rope", "activation": "swiglu"},
    "muon_rope_swiglu_norms": {**_MUON, "positional": "rope", "activation": "swiglu", "norm_type": "rmsnorm",
                               "qk_norm": True},
    "muon_rope_swiglu_wsd": {**_MUON, "positional": "rope", "activation": "swiglu", "schedule": "wsd"},
    "muon_rope_swiglu_zero": {**_MUON, "positional": "rope", "activation": "swiglu", "zero_init_residual": True},
    "muon_rope_swiglu_cap": {**_MUON, "positional": "rope", "activation": "swiglu", "logit_softcap": 15.0},
}
CANDIDATE_SEEDS = (1337, 1)


def candidate_specs(steps: int) -> list[dict[str, Any]]:
    return [run_spec(f"cand_{name}", overrides, steps=steps, seed=seed, eval_interval=steps // 2)
            for seed in CANDIDATE_SEEDS for name, overrides in CANDIDATES.items()]


def budgets_of(name: str) -> tuple[int, ...]:
    return BUDGETS + BASELINE_BUDGETS if name == "baseline" else BUDGETS


def budget_specs(seeds: tuple[int, ...], steps: int) -> list[dict[str, Any]]:
    """Every budget of baseline, control and fast but ``steps`` (the ablation's runs), seed by seed, budget by
    budget."""
    found = cases(steps)
    if found is None:
        return []
    chosen = {k: found[k][1] for k in ("baseline", "control", "fast")}
    return [run_spec(name, overrides, steps=b, seed=seed) for seed in seeds for b in BUDGETS + BASELINE_BUDGETS
            if b != steps for name, overrides in chosen.items() if b in budgets_of(name)]


# the demo's learning rates before it took the fast preset (the chapter's model otherwise): the "demo" case
DEMO_CHAPTER_LR = dict(lr=3e-3, min_lr=3e-4)


def word_specs(seeds: tuple[int, ...], steps: int) -> list[dict[str, Any]]:
    from wordformer.cli.train import DEMO_SIZES

    demo = dict(DEMO_SIZES)
    base_model = {k: demo[k] for k in ("block_size", "d_model", "num_heads", "num_layers", "dropout")}  # else defaults
    base_data = {"tokenizer": "word", "min_freq": demo["min_freq"], "data": None}  # None: the built-in corpus
    base_train = {**BASE_TRAIN, "batch_size": demo["batch_size"], **DEMO_CHAPTER_LR,
                  "warmup_steps": demo["warmup_steps"], "eval_batches": 20}
    specs = []
    for seed in seeds:
        for name, overrides in (("demo", {}), ("demo_fast", {**preset_overrides("fast"), "dropout": demo["dropout"]})):
            specs.append(run_spec(name, overrides, steps=steps, seed=seed, eval_interval=steps // 8,
                                  base_model=base_model, base_data=base_data, base_train=base_train))
    return specs


def bf16_specs(seeds: tuple[int, ...], steps: int) -> list[dict[str, Any]]:
    found = cases(steps)
    if found is None:
        return []
    return [run_spec(f"{name}_bf16", {**found[name][1], "precision": "bf16-mixed"}, steps=steps, seed=seed,
                     eval_interval=steps // 2) for seed in seeds for name in ("baseline", "fast")]


def priority_specs(steps: int) -> list[dict[str, Any]]:
    """Every run of the plan, in the order a shared machine should spend its time: the ablation's baseline, control,
    fast, Muon and RoPE at every seed; then time to quality of fast and the control; then the word-level check;
    then the baseline's shorter budgets and the rest of the ablation (bf16 last, where the CPU has it)."""
    from wordformer.hardware import cpu_has_native_bf16

    core = ("baseline", "control", "fast", "muon", "rope")
    first = ablation_specs(steps, SEEDS, core)
    rest = [s for s in ablation_specs(steps, SEEDS) if s["case"] not in core]
    bf16 = bf16_specs(SEEDS, steps) if cpu_has_native_bf16() else []
    budgets = budget_specs(SEEDS, steps)
    # fast and the control first: the baseline does not reach the target even in 2000 steps, so its shorter
    # budgets draw the plot but change no goal
    by_case = [s for s in budgets if s["case"] in ("fast", "control")]  # seed by seed, budget by budget: interleaved
    baseline = [s for s in budgets if s["case"] == "baseline"]
    return first + by_case + word_specs(SEEDS, 4000) + baseline + rest + bf16


# ------------------------------------------------------------------------------------------ step cost


def step_cost(steps: int, rounds: int, chunk: int) -> dict[str, Any]:
    """ms per training step of every case (forward, backward, clipping, optimizer and schedule), interleaved."""
    import torch
    import torch.nn.functional as F

    from wordformer.config import ModelConfig, TrainConfig, field_names
    from wordformer.model import WordPredictor
    from wordformer.optim import build_optimizer, build_scheduler

    from wordformer.config import DataConfig
    from wordformer.data import prepare_corpus

    from .common import batch_list

    torch.set_num_threads(int(os.environ.get("RECIPE_THREADS", "2")))
    found = cases(steps) or {"baseline": ("baseline", {})}
    corpus = prepare_corpus(DataConfig(data=str(CORPUS), tokenizer="char"), 64)
    batches = batch_list(corpus, 64, 12, 50)
    vocab = corpus.tokenizer.vocab_size
    setups: dict[str, Any] = {}
    variants = dict(found)
    if "muon" in found:
        variants["muon_unbatched_ns"] = ("Muon, Newton-Schulz one matrix at a time", found["muon"][1])
    from wordformer.hardware import cpu_has_native_bf16

    if cpu_has_native_bf16():  # what --precision bf16-mixed does: the forward pass under bf16 autocast
        for name in ("baseline", "fast"):
            if name in found:
                variants[f"{name}_bf16"] = (f"{name}, bf16-mixed", found[name][1])
    for name, (_, overrides) in variants.items():
        values = {**BASE_MODEL, **BASE_TRAIN, **overrides}
        model_cfg = ModelConfig(vocab_size=vocab, **{k: v for k, v in values.items() if k in field_names(ModelConfig)})
        train_cfg = TrainConfig(**{k: v for k, v in values.items() if k in field_names(TrainConfig)}, max_steps=10_000)
        torch.manual_seed(0)
        model = WordPredictor(model_cfg).train()
        opt = build_optimizer(model, train_cfg)
        if name == "muon_unbatched_ns":
            opt.muon.batch = False
        setups[name] = (model, opt, build_scheduler(opt, train_cfg), train_cfg.grad_clip)
    ms: dict[str, list[float]] = {n: [] for n in setups}
    opt_ms: dict[str, list[float]] = {n: [] for n in setups}
    names = list(setups)
    k = 0
    for rnd in range(rounds):
        for name in names[rnd % len(names):] + names[: rnd % len(names)]:
            model, opt, sched, clip = setups[name]
            total = optim_total = 0.0
            for _ in range(chunk):
                x, y = batches[k % len(batches)]
                k += 1
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name.endswith("_bf16")):
                    loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                t1 = time.perf_counter()
                opt.step()
                sched.step()
                t2 = time.perf_counter()
                total += t2 - t0
                optim_total += t2 - t1
            ms[name].append(1000 * total / chunk)
            opt_ms[name].append(1000 * optim_total / chunk)
        log(f"step cost round {rnd + 1}/{rounds}: " + ", ".join(f"{n} {ms[n][-1]:.1f}" for n in names))
    return {"rounds": rounds, "chunk": chunk, "step_ms": {n: summarize(v) for n, v in ms.items()},
            "optimizer_ms": {n: summarize(v) for n, v in opt_ms.items()}}


# ------------------------------------------------------------------------------------------ summary


def crossing(points: list[tuple[float, float]], target: float) -> Optional[float]:
    """First x where the piecewise-linear curve through (x, loss) points reaches ``target``; None if never."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in zip([(0.0, float("inf"))] + points[:-1], points):
        if y1 <= target:
            if y0 == float("inf") or y0 <= target:
                return x1
            return x0 + (x1 - x0) * (y0 - target) / (y0 - y1)
    return None


def summarize_runs(steps: int) -> dict[str, Any]:
    found = cases(steps) or {}
    out: dict[str, Any] = {"cases": {}, "budgets": {}, "sweep": [], "muon_sweep": [], "word": {}, "bf16": {},
                           "candidates": [{"name": r["case"], "overrides": CANDIDATES.get(r["case"][5:]),
                                           "val_loss": r["val_loss"], "train_s": r["train_s"]}
                                          for r in done(candidate_specs(steps))]}
    out["sweep"] = [{"lr": r["spec"]["train"]["lr"], "val_loss": r["val_loss"], "train_s": r["train_s"]}
                    for r in done(sweep_specs(steps))]
    lr = tuned_lr(steps)
    if lr is not None:
        out["tuned_lr"] = lr
        out["muon_sweep"] = [{"muon_lr": r["spec"]["train"]["muon_lr"], "val_loss": r["val_loss"],
                              "train_s": r["train_s"]} for r in done(muon_sweep_specs(steps, lr))]
        out["tuned_muon_lr"] = tuned_muon_lr(steps, lr)
    for name, (label, overrides) in found.items():
        rs = done([run_spec(name, overrides, steps=steps, seed=s, eval_interval=steps // 2) for s in SEEDS])
        if rs:
            out["cases"][name] = {"label": label, "overrides": overrides, "n": len(rs), "runs": [r["id"] for r in rs],
                                  "val_loss": summarize([r["val_loss"] for r in rs]),
                                  "train_s": summarize([r["train_s"] for r in rs]),
                                  "tokens_per_s": summarize([r["tokens_per_s"] for r in rs]),
                                  "step_ms": summarize([r["step_ms_median"] for r in rs]),
                                  "parameters": rs[0]["parameters"]}
    for name in ("baseline", "control", "fast"):
        if name not in found:
            continue
        per_budget = {}
        for b in budgets_of(name):
            rs = done([run_spec(name, found[name][1], steps=b, seed=s, eval_interval=(steps // 2 if b == steps else None))
                       for s in SEEDS])
            if rs:
                per_budget[b] = {"val_loss": summarize([r["val_loss"] for r in rs]),
                                 "train_s": summarize([r["train_s"] for r in rs]), "n": len(rs)}
        # every budget with a stored run counts, at the median of the seeds it has (the tables show how many): on a
        # shared machine the last seeds of the shorter budgets may be missing
        complete = sorted(per_budget.items())
        out["budgets"][name] = {
            "per_budget": per_budget,
            "steps_to_target": crossing([(b, v["val_loss"]["median"]) for b, v in complete], TARGET),
            "seconds_to_target": crossing([(v["train_s"]["median"], v["val_loss"]["median"]) for _, v in complete],
                                          TARGET),
            "smallest_budget_reaching": min((b for b, v in complete if v["val_loss"]["median"] <= TARGET), default=None),
        }
    for r in done(word_specs(SEEDS, 4000)):
        out["word"].setdefault(r["case"], []).append(r)
    for r in done(bf16_specs(SEEDS, steps)):
        out["bf16"].setdefault(r["case"], []).append(r)
    for key in ("word", "bf16"):
        out[key] = {name: {"n": len(rs), "val_loss": summarize([r["val_loss"] for r in rs]),
                           "train_s": summarize([r["train_s"] for r in rs]),
                           "tokens_per_s": summarize([r["tokens_per_s"] for r in rs]),
                           "best": summarize([min(c["val_loss"] for c in r["curve"]) for r in rs]),
                           "curves": [r["curve"] for r in rs]} for name, rs in out[key].items()}
    from wordformer.cli.train import DEMO_SIZES

    out["demo_seconds"] = limit = float(DEMO_SIZES["max_time"])
    for v in out["word"].values():  # what `wordformer demo` keeps: its best checkpoint within its time limit
        within = [[c for c in curve if c["train_s"] <= limit] for curve in v["curves"]]
        v["demo_best"] = summarize([min(c["val_loss"] for c in w) for w in within if w])
        v["demo_steps"] = summarize([max(c["step"] for c in w) for w in within if w])
    return out


def goals(summary: dict[str, Any], cost: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """The issue's three goals. Time is steps x the interleaved per-step cost when that is measured (the runs' own
    clocks carry whatever else the shared machine did at their moment; their ratio is in the note)."""
    cases_, budgets = summary["cases"], summary["budgets"]
    per_step = {k: v["median"] for k, v in ((cost or {}).get("step_ms") or {}).items()}
    out = []
    fast = cases_.get("fast", {}).get("val_loss", {})
    out.append(goal("recipe: `fast` validation loss after 2000 steps", fast.get("median"), 1.60, higher_is_better=False,
                    note=f"median of {fast.get('n', 0)} seeds" if fast else ""))
    b, f = budgets.get("baseline", {}), budgets.get("fast", {})
    ratio = None
    note = ""
    if f.get("seconds_to_target") is not None:
        if b.get("seconds_to_target") is not None:
            ratio = f["seconds_to_target"] / b["seconds_to_target"]
            note = f"{f['seconds_to_target']:.0f} s vs {b['seconds_to_target']:.0f} s"
        elif b.get("per_budget"):
            longest = max(b["per_budget"])
            lower = b["per_budget"][longest]["train_s"]["median"]
            ratio = f["seconds_to_target"] / lower  # the baseline needs more than its longest run: an upper bound
            note = (f"{f['seconds_to_target']:.0f} s; the baseline does not reach {TARGET} within {longest} steps "
                    f"({lower:.0f} s), so this is an upper bound")
    if ratio is not None and f.get("steps_to_target") is not None and "fast" in per_step and "baseline" in per_step:
        fast_s = f["steps_to_target"] * per_step["fast"] / 1000
        if b.get("steps_to_target") is not None:
            base_s, bound = b["steps_to_target"] * per_step["baseline"] / 1000, ""
        else:
            base_s = max(b["per_budget"]) * per_step["baseline"] / 1000
            bound = f"; the baseline does not reach {TARGET} within {max(b['per_budget'])} steps, so an upper bound"
        note = (f"steps x interleaved ms/step: {fast_s:.0f} s ({f['steps_to_target']:.0f} steps) vs "
                f"{'more than ' if bound else ''}{base_s:.0f} s{bound}; by the runs' own clocks {ratio:.2f}")
        ratio = fast_s / base_s
    out.append(goal(f"recipe: `fast` time to val loss {TARGET} / the baseline's", ratio, 0.3, higher_is_better=False,
                    note=note))
    c = budgets.get("control", {}).get("per_budget", {})
    fb = f.get("per_budget", {})
    shared = sorted(set(c) & set(fb))
    beats = [fb[s]["val_loss"]["median"] < c[s]["val_loss"]["median"] for s in shared]
    out.append(goal("recipe: budgets where `fast` beats the tuned-AdamW control", float(sum(beats)) if shared else None,
                    float(len(BUDGETS)), note=f"of {len(shared)} budgets measured"))
    return out


# ------------------------------------------------------------------------------------------ plot


def plot(summary: dict[str, Any], cost: Optional[dict[str, Any]] = None, path: Path = PLOT) -> Optional[Path]:
    """Validation loss over steps and over seconds: steps x the interleaved ms/step when measured (the load-fair
    clock), else each run's own clock."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    budgets = summary["budgets"]
    if not budgets:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    by_steps, by_time = fig.subplots(1, 2)
    colours = {"baseline": "tab:grey", "control": "tab:blue", "fast": "tab:red"}
    names = {"baseline": "baseline (nanoGPT, AdamW lr 1e-3)", "control": f"control (AdamW lr {summary.get('tuned_lr')})",
             "fast": "fast preset (RoPE + Muon)"}
    for name, b in budgets.items():
        pts = sorted((int(k), v) for k, v in b["per_budget"].items())
        if not pts:
            continue
        xs = [k for k, _ in pts]
        ys = [v["val_loss"]["median"] for _, v in pts]
        lo = [v["val_loss"]["min"] for _, v in pts]
        hi = [v["val_loss"]["max"] for _, v in pts]
        ms = ((cost or {}).get("step_ms") or {}).get(name, {}).get("median")
        ts = [k * ms / 1000 for k in xs] if ms else [v["train_s"]["median"] for _, v in pts]
        by_steps.plot(xs, ys, "o-", color=colours[name], label=names[name])
        by_steps.fill_between(xs, lo, hi, color=colours[name], alpha=0.15)
        by_time.plot(ts, ys, "o-", color=colours[name], label=names[name])
    clock = ("training seconds: steps x the interleaved ms/step" if (cost or {}).get("step_ms")
             else "training seconds by each run's own clock, median")
    for ax, xlabel in ((by_steps, "steps (each point a full schedule of that length)"), (by_time, clock)):
        ax.axhline(TARGET, color="black", linestyle="--", linewidth=1, label=f"val loss {TARGET}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (median of 3 seeds)" if ax is by_steps else "validation loss (median)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Time to quality: char-level tinyshakespeare, 4 layers x 128, 2 CPU threads "
                 "(band: min-max of the seeds)", fontsize=11)
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------------------ BENCHMARKS.md


def _cell(s: Optional[dict[str, Any]], digits: int = 3) -> str:
    if not s or s.get("median") is None:
        return "—"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def section(r: dict[str, Any]) -> list[str]:
    """The "Time to quality" section of BENCHMARKS.md, without its provenance lines (report.py adds those)."""
    s = r["summary"]
    lines = ["Commands: `python -m benchmarks.bench_recipe` runs the whole plan (hours on 2 cores; resumable: stored "
             "runs are skipped); on a shared machine it ran in chunks of at most ~10 minutes under the CPU lock, "
             "`flock /tmp/wordformer-cpu.lock python -m benchmarks.bench_recipe --phase priority --minutes 7.5 "
             "--no-report` repeated (the order: what the goals need first), then `--phase cost` (the interleaved step "
             "cost) and `--phase report`. Runs the plan lists but that are not stored are not in the tables.", "",
             f"At nanoGPT's CPU config (char-level tinyshakespeare, 4 layers, 4 heads, d_model 128, block 64, batch 12, "
             f"no dropout; validation: the same 200 batches as section 4). Every run is a full `wordformer.train` run in "
             f"its own process, {r['threads']} torch threads; training time excludes validation and checkpoints. "
             f"Cells: median (min–max) over seeds {', '.join(map(str, SEEDS))} (the seeds column says how many are "
             "stored). The runs were spread over two days, some in chunks between other sessions' work on the same "
             "2 cores, so each run's own clock carries the load of its moment (stored per run in "
             "`benchmarks/results/recipe/`): compare speed by the interleaved step cost below, not by the "
             "training-seconds column.", ""]
    if s["sweep"]:
        lines += ["**AdamW lr sweep** (baseline architecture, seed 1337, 2000 steps, min_lr = lr/10): " +
                  ", ".join(f"lr {x['lr']:g}: {x['val_loss']:.4f}" for x in sorted(s["sweep"], key=lambda x: x["lr"])) +
                  (f" — the control uses **{s['tuned_lr']:g}**." if s.get("tuned_lr") else ""), ""]
    if s.get("muon_sweep"):
        lines += ["**Muon lr sweep** (AdamW parts at the control's lr, seed 1337): " +
                  ", ".join(f"muon_lr {x['muon_lr']:g}: {x['val_loss']:.4f}"
                            for x in sorted(s["muon_sweep"], key=lambda x: x["muon_lr"])) +
                  (f" — Muon cases use **{s['tuned_muon_lr']:g}**." if s.get("tuned_muon_lr") else ""), ""]
    control = s["cases"].get("control", {}).get("val_loss", {}).get("median")
    cost = (r.get("step_cost") or {}).get("step_ms", {})
    base_cost = (cost.get("control") or cost.get("baseline") or {}).get("median")
    rows = []
    for name, c in s["cases"].items():
        delta = "—" if control is None else f"{c['val_loss']['median'] - control:+.3f}"
        per_step = cost.get(name, {}).get("median")
        rel = f"{per_step / base_cost:.2f}x" if per_step and base_cost else "—"
        rows.append([c["label"], str(c["n"]), _cell(c["val_loss"]), delta, _cell(c["train_s"], 0),
                     f"{c['tokens_per_s']['median']:,.0f}", f"{c['step_ms']['median']:.1f}", rel,
                     f"{c['parameters']:,}"])
    if control is not None:
        singles = {n: c for n, c in s["cases"].items() if n in CHANGES}
        helped = [n for n, c in singles.items() if c["val_loss"]["median"] < control - 0.01]
        not_helped = [n for n in singles if n not in helped]
        lines += [f"Against the control's median ({control:.3f}), each change alone: lower by more than 0.01 — "
                  f"{', '.join(helped) or 'none'}; not (within 0.01, or worse) — {', '.join(not_helped) or 'none'}. "
                  + ("Cases with one seed are one run, not a median. " if any(c["n"] == 1 for c in singles.values())
                     else "")
                  + "Read differences under ~0.02 as noise (the spread between seeds of one case is about that).", ""]
    if rows:
        lines += ["### Ablation at 2000 steps", "",
                  *table(["case", "seeds", "val loss", "vs control", "training s", "tokens/s", "ms/step (in run)",
                          "step cost vs control (interleaved)", "parameters"], rows), ""]
    if cost:
        ns = r["step_cost"]
        lines += [f"Step cost, interleaved in one process ({ns['rounds']} rounds of {ns['chunk']} steps per case, "
                  "order rotating; forward, backward, clipping, optimizer and schedule), ms per step: " +
                  ", ".join(f"{k} {v['median']:.1f}" for k, v in cost.items()) + ". Of that, the optimizer step: " +
                  ", ".join(f"{k} {v['median']:.1f}" for k, v in r["step_cost"]["optimizer_ms"].items()) + ".", ""]
    tried: dict[str, list[float]] = {}
    for c in s.get("candidates", []):
        tried.setdefault(c["name"], []).append(c["val_loss"])
    if tried:
        fast = s["cases"].get("fast", {}).get("val_loss", {})
        lines += ["**Combinations tried on the way to `fast`** (`--phase candidates`, chosen after the ablation's "
                  "first seed: Muon, the largest gain alone, with RoPE, the next, then one more change at a time; "
                  "AdamW lr 4e-3, muon_lr 0.01; seed 1337, and seed 1 where a second value is given; norms: RMS "
                  "norm + QK-norm, zero: zero-initialised residual projections, cap: logit soft-capping at 15): " +
                  "; ".join(f"{name[5:].replace('_', ' + ')} {' / '.join(f'{v:.3f}' for v in vals)}"
                            for name, vals in tried.items()) +
                  (f". None beat Muon + RoPE (the fast preset, {fast['median']:.3f} at 3 seeds) by more than the "
                   "seed-to-seed spread, so fast is Muon + RoPE alone." if fast else "."), ""]
    brows = []
    for name, b in s["budgets"].items():
        for budget, v in sorted(b["per_budget"].items(), key=lambda kv: int(kv[0])):
            brows.append([name, str(budget), _cell(v["val_loss"]), _cell(v["train_s"], 0), str(v["n"])])
    if brows:
        lines += ["### Time to quality", "",
                  f"Each budget is a full schedule of that many steps (warm-up, then decay to the end). Target: validation "
                  f"loss {TARGET}.", "", *table(["model", "steps", "val loss", "training s", "seeds"], brows), ""]
        trows = []
        for name, b in s["budgets"].items():
            st_ = b.get("steps_to_target")
            sec = b.get("seconds_to_target")
            per_step = cost.get(name, {}).get("median")
            steady = "—" if st_ is None or not per_step else f"{st_ * per_step / 1000:.0f}"
            full = [int(k) for k in b["per_budget"]]
            # reached at the shortest budget measured: only an upper bound, nothing shorter was run
            bound = "≤ " if st_ is not None and full and st_ <= min(full) else ""
            trows.append([name, "not within the budgets" if st_ is None else f"{bound}{st_:.0f}",
                          "—" if sec is None else f"{bound}{sec:.0f}", "—" if steady == "—" else bound + steady,
                          str(b.get("smallest_budget_reaching") or "—")])
        lines += [*table(["model", f"steps to {TARGET} (interpolated between budgets)",
                          "training s to reach it (the runs' own clocks)",
                          "s at the interleaved step cost (steps x ms/step)",
                          "smallest budget whose median reaches it"], trows), "",
                  "The runs' own clocks carry the machine's load at the time of each run (other sessions trained "
                  "beside them); steps times the interleaved per-step cost is the load-fair estimate.", "",
                  f"![time to quality]({PLOT.relative_to(ROOT)})", ""]
    missing = [n for n in CHANGES if n not in s["cases"]]
    unmeasured = ([f"the ablation cases {', '.join(missing)}"] if missing else []) + \
        [what for key, what in (("word", "the word-level check at the demo's sizes (so the demo keeps its defaults)"),
                                ("bf16", "the bf16-mixed runs")) if not s[key]]
    if unmeasured:
        lines += ["**Not measured** (the shared machine's time ran out; the plan lists them and a later run of "
                  "the same command adds them): " + "; ".join(unmeasured) + ".", ""]
    if s["word"]:
        limit = s["demo_seconds"]
        lines += ["### Word-level built-in corpus at the demo's sizes (4000 steps)", "",
                  "`wordformer demo`'s model sizes (`cli/train.py` DEMO_SIZES: word-level, 2 layers, d_model 64, "
                  "block 32, batch 32, dropout 0.1, validation every 500 steps) with the chapter preset at AdamW "
                  "lr 3e-3 (demo: what the demo trained before these runs) and with the fast preset (demo_fast: what "
                  "`wordformer demo` trains now, since it won here). The demo stops after "
                  f"{limit:.0f} s of training and keeps its best checkpoint; the schedule is the same 4000-step "
                  "one either way, so the best validation loss within the first "
                  f"{limit:.0f} s of each run's own clock is what the demo ends with.", "",
                  *table(["case", "seeds", "val loss at 4000 steps", "best val loss in the run",
                          f"best within {limit:.0f} s (the demo's)", f"steps by {limit:.0f} s",
                          "training s (4000 steps)", "tokens/s"],
                         [[name, str(v["n"]), _cell(v["val_loss"]), _cell(v["best"]), _cell(v.get("demo_best")),
                           _cell(v.get("demo_steps"), 0), _cell(v["train_s"], 0),
                           f"{v['tokens_per_s']['median']:,.0f}"] for name, v in s["word"].items()]), ""]
    if s["bf16"]:
        fp32 = s["cases"]
        step_ms = {k: v.get("median") for k, v in cost.items()}

        def per_step(name: str) -> str:
            return f"{step_ms[name]:.1f}" if step_ms.get(name) else "—"

        def speedup(name: str) -> str:
            a, b = step_ms.get(name[:-5]), step_ms.get(name)
            return f"{a / b:.2f}x" if a and b else "—"

        lines += ["### bf16-mixed on this CPU (2000 steps)", "",
                  "The same runs as the ablation's baseline and fast rows with `--precision bf16-mixed` (this CPU has "
                  "native bf16: AMX); the float32 columns are those rows. Speed by the interleaved step cost (the "
                  "forward pass under bf16 autocast, as Lightning's bf16-mixed does), which the machine's load at "
                  "each run's moment does not skew.", "",
                  *table(["case", "seeds", "val loss", "float32 val loss", "ms/step (interleaved)",
                          "float32 ms/step (interleaved)", "speed-up over float32", "training s (own clock)"],
                         [[name, str(v["n"]), _cell(v["val_loss"]), _cell(fp32.get(name[:-5], {}).get("val_loss")),
                           per_step(name), per_step(name[:-5]), speedup(name), _cell(v["train_s"], 0)]
                          for name, v in s["bf16"].items()]), ""]
    return lines


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(run_one(json.loads(argv[1]))))
        return 0
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--phase", default="all", choices=("sweep", "ablation", "candidates", "fast", "budgets", "word",
                                                       "bf16", "cost", "all", "priority", "report"))
    p.add_argument("--minutes", type=float, default=None, help="start no run after this many minutes (resume later)")
    p.add_argument("--data", default=str(DATA), help="tinyshakespeare.txt (run ids use only the file name)")
    args = p.parse_args(argv)
    global CORPUS
    CORPUS = Path(args.data).resolve()
    started = start()
    deadline = time.time() + 60 * args.minutes if args.minutes else float("inf")
    steps = 60 if args.quick else 2000
    if args.quick:
        global RUNS, BUDGETS, BASELINE_BUDGETS, SEEDS  # noqa: PLW0603 - the quick run's smaller plan
        RUNS = RESULTS / "quick" / "recipe"
        BUDGETS, BASELINE_BUDGETS, SEEDS = (30, 45, 60), (75,), (1337,)
    from wordformer.hardware import cpu_has_native_bf16

    phases = (("sweep", "ablation", "fast", "budgets", "word", "bf16", "cost") if args.phase == "all"
              else (args.phase,))
    if args.phase == "priority":  # a shared machine's order: what the goals need first, the rest of the ablation last
        left = execute(priority_specs(steps), deadline)
        phases = ("cost",) if left == 0 else ()
    else:
        left = 0
    for phase in phases:
        if phase == "sweep":
            left += execute(sweep_specs(steps), deadline)
            lr = tuned_lr(steps)
            if lr is not None:
                left += execute(muon_sweep_specs(steps, lr), deadline)
        elif phase == "ablation":
            left += execute(ablation_specs(steps, SEEDS), deadline)
        elif phase == "candidates":
            left += execute(candidate_specs(steps), deadline)
        elif phase == "fast":
            left += execute(ablation_specs(steps, SEEDS, ("fast",)), deadline)
        elif phase == "budgets":
            left += execute(budget_specs(SEEDS, steps), deadline)
        elif phase == "word":
            left += execute(word_specs(SEEDS, 160 if args.quick else 4000), deadline)
        elif phase == "bf16" and cpu_has_native_bf16():
            left += execute(bf16_specs(SEEDS, steps), deadline)
    previous = RESULTS / f"{NAME}.json"
    cost = None
    if "cost" in phases and time.time() < deadline:
        cost = step_cost(steps, rounds=2 if args.quick else 12, chunk=3 if args.quick else 10)
    elif previous.is_file() and not args.quick:
        cost = json.loads(previous.read_text()).get("step_cost")
    summary = summarize_runs(steps)
    if not args.quick:
        plot(summary, cost)
    data = {
        "config": {"model": BASE_MODEL, "train": BASE_TRAIN, "steps": steps, "seeds": list(SEEDS),
                   "budgets": list(BUDGETS), "baseline_budgets": list(BASELINE_BUDGETS), "target": TARGET,
                   "lr_sweep": list(LR_SWEEP), "muon_lr_sweep": list(MUON_LR_SWEEP)},
        "runs_missing": left, "summary": summary, "step_cost": cost, "goals": goals(summary, cost),
        "results": [{"id": r["id"], "date": r["date"], "load_before": r["load_before"], "load_after": r["load_after"],
                     "omp_wait_policy": r["omp_wait_policy"]} for r in all_runs()],
    }
    data["section"] = section({**data, "threads": int(os.environ.get("RECIPE_THREADS", "2"))})
    finish(NAME, MODULE, args, started, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
