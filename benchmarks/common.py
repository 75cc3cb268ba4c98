"""Shared pieces of the benchmarks: machine facts, statistics, result files, data, both models and the plain loop.

Nothing here imports wordformer, Lightning or transformers at module level, so a child process that
measures the peer's memory does not pay for wordformer's imports (and the other way round).
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import argparse
import json
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
QUICK_RESULTS = RESULTS / "quick"
DOCS = ROOT / "docs"
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"  # ../shared/data relative to the repo root
THREADS = 2
SEED = 1337

# nanoGPT's published CPU run on char-level tinyshakespeare (README, "I only have a macbook")
SIZES = dict(num_layers=4, num_heads=4, d_model=128, block_size=64, batch_size=12)
# nanoGPT's shakespeare_char optimiser settings, the same for wordformer and the peer
OPTIM = dict(lr=1e-3, min_lr=1e-4, warmup_steps=100, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0)


# ------------------------------------------------------------------------------------ the machine


def set_threads(n: int = THREADS) -> int:
    """Pin torch's intra-op threads (recorded with every result)."""
    torch.set_num_threads(n)
    return torch.get_num_threads()


def quiet_libraries(*, lightning: bool = True) -> None:
    """Keep benchmark output to our own progress lines.

    Lightning sets its loggers' level when imported, so it is imported first (unless ``lightning`` is False,
    for a child process that must not pay for it).
    """
    warnings.filterwarnings("ignore")
    if lightning:
        import lightning as _  # noqa: F401
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except Exception:  # transformers missing or changed: only logging is affected
        pass


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    return {
        "processor": platform.processor(),  # empty on many Linux systems; cpu_model says more
        "cpu_model": _cpu_model(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": _version("lightning"),
        "transformers": _version("transformers"),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cuda": torch.cuda.is_available(),
    }


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def rss_kb(field: str = "VmRSS") -> int:
    """Resident set size (VmRSS) or its peak so far (VmHWM) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


# ------------------------------------------------------------------------------------ statistics


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles, min and max of repeated measurements."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None, "q1": None, "q3": None, "values": []}
    q1, q3 = (statistics.quantiles(vals, n=4, method="inclusive")[i] for i in (0, 2)) if len(vals) > 1 else (vals[0], vals[0])
    return {"n": len(vals), "median": statistics.median(vals), "min": min(vals), "max": max(vals), "q1": q1, "q3": q3,
            "values": vals}


def paired(runs_a: list[dict], runs_b: list[dict], key: str, fn: Callable[[float, float], float]) -> dict[str, Any]:
    """``fn(a, b)`` of the two measurements of each repeat (taken back to back), summarized."""
    by_rep = {r["repeat"]: r[key] for r in runs_b}
    return summarize([fn(r[key], by_rep[r["repeat"]]) for r in runs_a if r["repeat"] in by_rep])


def alternate(cases: dict[str, Callable[[], dict[str, Any]]], repeats: int, *, label: str = "") -> dict[str, list[dict]]:
    """Run every case once per repeat (ABCABC...), rotating the order each repeat so drift is shared."""
    names = list(cases)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            before = load1()
            result = cases[name]()
            result.update(repeat=rep, load1=before)
            runs[name].append(result)
            shown = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in result.items()
                     if k in ("tokens_per_s", "seconds", "peak_rss_mib", "load1")}
            log(f"{label}repeat {rep + 1}/{repeats} {name}: {shown}")
    return runs


def log(message: str) -> None:
    # sys.__stderr__: the benchmarks silence Lightning by redirecting sys.stderr, not their own progress lines
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.__stderr__ or sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ results


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fast smoke run: few steps and repeats; writes benchmarks/results/quick/ and leaves BENCHMARKS.md alone")
    p.add_argument("--repeats", type=int, default=None, help="repeats of each alternating measurement")
    p.add_argument("--threads", type=int, default=THREADS, help="torch.set_num_threads")
    p.add_argument("--no-report", action="store_true", help="do not re-render BENCHMARKS.md")
    return p


def command_line(module: str) -> str:
    """The command that reproduces this run (without run_all's plumbing flag --no-report)."""
    return shlex.join(["python", "-m", module, *(a for a in sys.argv[1:] if a != "--no-report")])


def write_json(path: Path, payload: Any) -> None:
    """Write to a temporary file beside ``path`` and rename it, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def start() -> dict[str, Any]:
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "t0": time.perf_counter(),
            "load": loadavg()}


def goal(name: str, value: Optional[float], target: float, *, higher_is_better: bool = True, unit: str = "",
         note: str = "") -> dict[str, Any]:
    met = None if value is None else (value >= target if higher_is_better else value <= target)
    return {"goal": name, "target": f"{'>=' if higher_is_better else '<='} {target}{unit}", "value": value, "met": met,
            "note": note}


# ------------------------------------------------------------------------------------ data


def char_corpus(block_size: int):
    """tinyshakespeare, char tokenizer, last 10% held out: wordformer's own corpus pipeline (cached .npy)."""
    if not DATA.is_file():
        raise SystemExit(f"benchmarks: {DATA} is missing; the benchmarks train on tinyshakespeare there")
    from wordformer.config import DataConfig
    from wordformer.data import prepare_corpus

    return prepare_corpus(DataConfig(data=str(DATA), tokenizer="char"), block_size)


def batch_list(corpus, block_size: int, batch_size: int, count: int, seed: int = SEED) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` training batches of wordformer's TextBatches: the very batches the Trainer sees."""
    from wordformer.batches import TextBatches

    source = TextBatches(corpus.train_ids, block_size, batch_size, seed)
    return [source.batch(n) for n in range(count)]


# ------------------------------------------------------------------------------------ models


def wordformer_model(vocab_size: int, *, block_size: int, d_model: int, num_heads: int, num_layers: int,
                     positional: str = "learned", **_: Any):
    from wordformer.config import ModelConfig
    from wordformer.model import WordPredictor

    torch.manual_seed(SEED)
    return WordPredictor(ModelConfig(vocab_size=vocab_size, block_size=block_size, d_model=d_model, num_heads=num_heads,
                                     num_layers=num_layers, positional=positional, dropout=0.0))


def peer_model(vocab_size: int, *, block_size: int, d_model: int, num_heads: int, num_layers: int,
               activation: str = "gelu", **_: Any):
    """HuggingFace GPT-2 of the same sizes: SDPA attention, exact GELU (as wordformer), no dropout, tied head.

    ``activation="gelu_new"`` gives GPT-2's default activation instead (the tanh approximation, a different
    function from wordformer's).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_embd=d_model, n_layer=num_layers,
                        n_head=num_heads, n_inner=4 * d_model, activation_function=activation, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
                        bos_token_id=None, eos_token_id=None, pad_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(SEED)
    return GPT2LMHeadModel(config)


def peer_attention(peer) -> str:
    return str(getattr(peer.config, "_attn_implementation", "unknown"))


@torch.no_grad()
def copy_into_peer(wordformer, peer) -> None:
    """Load wordformer's weights into the peer (GPT-2's Conv1D stores weights transposed)."""
    if wordformer.config.positional != "learned" or wordformer.config.norm != "pre":
        raise ValueError("only a learned-position, pre-norm wordformer maps onto GPT-2")
    t = peer.transformer
    t.wte.weight.copy_(wordformer.token_embedding.weight)
    t.wpe.weight.copy_(wordformer.positional_encoding.table.weight)
    for block, h in zip(wordformer.blocks, t.h):
        for ours, theirs in ((block.norm1, h.ln_1), (block.norm2, h.ln_2)):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
        for ours, theirs in ((block.attention.qkv, h.attn.c_attn), (block.attention.out, h.attn.c_proj),
                             (block.feed_forward.up, h.mlp.c_fc), (block.feed_forward.down, h.mlp.c_proj)):
            theirs.weight.copy_(ours.weight.t())
            theirs.bias.copy_(ours.bias)
    t.ln_f.weight.copy_(wordformer.final_norm.weight)
    t.ln_f.bias.copy_(wordformer.final_norm.bias)


@torch.no_grad()
def same_function(wordformer, peer, x: torch.Tensor) -> float:
    """Max |logit difference| after copying wordformer's weights into the peer: ~1e-6 means the same model."""
    copy_into_peer(wordformer, peer)
    wordformer.eval()
    peer.eval()
    diff = (wordformer(x) - peer_logits(peer, x)).abs().max().item()
    wordformer.train()
    peer.train()
    return diff


def wordformer_logits(model, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def peer_logits(model, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x, use_cache=False).logits


def bf16_autocast(logits_fn: Callable) -> Callable:
    """``logits_fn`` under CPU bf16 autocast (what Lightning's ``precision="bf16-mixed"`` does on a CPU)."""
    def run(model, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return logits_fn(model, x)

    return run


# ------------------------------------------------------------------------------------ the plain loop


def scheduled_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr`` (the schedule wordformer's Trainer path uses)."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= max_steps:
        return min_lr
    done = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * done))


def make_optimizer(model: torch.nn.Module, max_steps: int, *, fused: bool = False):
    """AdamW with weight decay on 2-D parameters only, and the warm-up + cosine schedule.

    By default torch's own choice of implementation, as wordformer's Trainer path gets on CPU (the
    per-tensor loop); ``fused`` asks for the fused kernel instead.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # tied tensors appear once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": OPTIM["weight_decay"]},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=OPTIM["lr"], betas=OPTIM["betas"], fused=True if fused else None)
    kw = dict(lr=OPTIM["lr"], min_lr=OPTIM["min_lr"], warmup_steps=OPTIM["warmup_steps"], max_steps=max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: scheduled_lr(s, **kw) / OPTIM["lr"])
    return opt, sched


class PlainStepper:
    """A model, its optimiser and schedule, trained by a plain PyTorch loop a few steps at a time.

    Batches are taken in order (cycled if the list is shorter). ``run(k)`` trains ``k`` steps and returns
    their wall time, so several steppers (and a Lightning Trainer) can be interleaved chunk by chunk and see
    the same machine conditions.
    """

    def __init__(self, model: torch.nn.Module, logits_fn: Callable, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 *, max_steps: int, fused: bool = False) -> None:
        self.model, self.logits_fn, self.batches = model.train(), logits_fn, batches
        self.opt, self.sched = make_optimizer(model, max_steps, fused=fused)
        self.params = list(model.parameters())
        self.tokens_per_step = batches[0][0].numel()
        self.step_count = 0
        self.loss = float("nan")

    def run(self, steps: int) -> float:
        clip = OPTIM["grad_clip"]
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = self.batches[self.step_count % len(self.batches)]
            logits = self.logits_fn(self.model, x)  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.opt.step()
            self.sched.step()
            self.step_count += 1
        seconds = time.perf_counter() - t0
        self.loss = float(loss.detach())
        return seconds


def train_plain(model: torch.nn.Module, logits_fn: Callable, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                warmup: int, steps: int, max_steps: Optional[int] = None) -> dict[str, Any]:
    """Train ``warmup`` untimed then ``steps`` timed steps with a plain PyTorch loop."""
    stepper = PlainStepper(model, logits_fn, batches, max_steps=max_steps or warmup + steps)
    stepper.run(warmup)
    seconds = stepper.run(steps)
    return {"tokens_per_s": steps * stepper.tokens_per_step / seconds, "seconds": seconds, "steps": steps,
            "loss": stepper.loss}


def interleave(steppers: dict[str, PlainStepper], *, rounds: int, chunk: dict[str, int] | int, label: str = "") -> dict[str, list[dict]]:
    """Round after round, every stepper trains one chunk (order rotating each round); one record per chunk."""
    names = list(steppers)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for rnd in range(rounds):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for name in order:
            k = chunk[name] if isinstance(chunk, dict) else chunk
            before = load1()
            seconds = steppers[name].run(k)
            runs[name].append({"repeat": rnd, "steps": k, "seconds": seconds, "load1": before,
                               "tokens_per_s": k * steppers[name].tokens_per_step / seconds})
        if rnd == rounds - 1 or (rnd + 1) % max(1, rounds // 4) == 0:
            shown = ", ".join(f"{n} {runs[n][-1]['tokens_per_s']:,.0f}" for n in names)
            log(f"{label}round {rnd + 1}/{rounds}: tokens/s {shown}; load {load1()}")
    return runs


def flops_per_token(model: torch.nn.Module, *, num_layers: int, d_model: int, block_size: int, positional_params: int = 0) -> int:
    """Training FLOPs per token, nanoGPT/PaLM style: 6N + 12 L d T (N without the position table)."""
    n = sum(p.numel() for p in model.parameters()) - positional_params
    return 6 * n + 12 * num_layers * d_model * block_size


def timed_cuda_fit(module: Any, batches: Callable[[], Any], *, warmup: int, steps: int,
                   **trainer_options: Any) -> tuple[float, Any]:
    """Fit ``module`` for ``warmup + steps`` steps in a bf16-mixed CUDA Trainer (no validation, logging or
    checkpoints) on the endless iterator of (x, y) batches that ``batches()`` starts (in the process that trains:
    each rank's own); the seconds of the last ``steps`` steps (stamped after each step, synchronized) and the
    Trainer. ``trainer_options``: devices, strategy, gradient clipping, ..."""
    import contextlib

    import lightning as L
    from torch.utils.data import DataLoader, IterableDataset

    class Stream(IterableDataset):
        def __iter__(self):
            return batches()

    class Stamp(L.Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_batch_end(self, *args: Any) -> None:
            torch.cuda.synchronize()
            self.marks.append(time.perf_counter())

    stamp = Stamp()
    trainer = L.Trainer(max_steps=warmup + steps, accelerator="cuda", precision="bf16-mixed", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[stamp], **trainer_options)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        trainer.fit(module, train_dataloaders=DataLoader(Stream(), batch_size=None, pin_memory=True))
    return stamp.marks[warmup + steps - 1] - stamp.marks[warmup - 1], trainer
