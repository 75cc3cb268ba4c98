"""Training throughput on CPU at nanoGPT's CPU sizes: wordformer through the Lightning Trainer, wordformer's
model in a plain PyTorch loop, and HuggingFace GPT-2 (the peer) in the same plain loop.

Char-level tinyshakespeare, 4 layers, 4 heads, d_model 128, block 64, batch 12, AdamW (0.9, 0.99), weight
decay 0.1 on 2-D parameters, grad clip 1, warm-up + cosine. All three see the same batches (wordformer's
TextBatches, seed 1337).

Alternation happens at the step level, in one process: ``wordformer.training.train`` runs, and after every
chunk of 10 Trainer steps a callback trains 10 steps of wordformer's plain loop and 10 of the peer (order
rotating), so the three share the machine's conditions chunk by chunk (the machine is shared, and 2 threads
on contended cores slow down by several times whenever another process runs). The Trainer's chunk time is
the wall time between its step-end stamps minus the time spent in the interleaved loops, so it includes all
of the Trainer's own per-step work (data loading, hooks, logging). This is done twice: with loggers and
progress bar off, then with ``train()``'s defaults (CSV + TensorBoard loggers, LR monitor, progress bar), then
(on CPUs with native bf16) with ``precision="bf16-mixed"``, against the peer in float32 (as nanoGPT and a plain
HF loop train on a CPU) and the peer under the same bf16 autocast.

    python -m benchmarks.bench_train [--quick]
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import contextlib
import os
import tempfile
import time
from typing import Any

import torch

from .common import (DATA, OPTIM, SEED, SIZES, PlainStepper, base_parser, batch_list, bf16_autocast, char_corpus, load1, log,
                     peer_attention, peer_logits, peer_model, quiet_libraries, same_function, set_threads, start,
                     wordformer_logits, wordformer_model)
from .report import finish
from .derive import derive_train

NAME = "train"
MODULE = "benchmarks.bench_train"
POSITIONAL = "learned"  # as GPT-2, so both models have the same parameters; the positional table costs nothing
CHUNK = 10  # steps per chunk: a multiple of the Trainer's log_every (10), so every chunk logs once


def make_interleaver(others: dict[str, PlainStepper], *, warmup: int, chunk: int, rounds: int, tag: str):
    import lightning as L

    class Interleave(L.Callback):
        """Stamp each Trainer step's end; at each chunk boundary train a chunk of every plain loop."""

        def __init__(self) -> None:
            self.marks: list[float] = []
            self.inserted: list[float] = []  # seconds of plain-loop work done right after each stamp
            self.first_x: torch.Tensor | None = None
            self.runs: dict[str, list[dict]] = {name: [] for name in others}

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if self.first_x is None:
                self.first_x = batch[0].detach().clone()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            now = time.perf_counter()
            self.marks.append(now)
            n = len(self.marks)
            if n == warmup:  # untimed warm-up of the plain loops
                for stepper in others.values():
                    stepper.run(warmup)
            rnd, rest = divmod(n - warmup, chunk)
            if n >= warmup and rest == 0 and rnd < rounds:
                names = list(others)
                for name in names[rnd % len(names):] + names[: rnd % len(names)]:
                    before = load1()
                    seconds = others[name].run(chunk)
                    self.runs[name].append({"repeat": rnd, "seconds": seconds, "load1": before,
                                            "tokens_per_s": chunk * others[name].tokens_per_step / seconds})
                if (rnd + 1) % max(1, rounds // 4) == 0 and rnd:
                    self.report(rnd)
            self.inserted.append(time.perf_counter() - now if n >= warmup else 0.0)

        def report(self, rnd: int) -> None:
            shown = ", ".join(f"{name} {rs[-1]['tokens_per_s']:,.0f}" for name, rs in self.runs.items() if rs)
            log(f"{tag}: round {rnd + 1}/{rounds}: tokens/s {shown}; load {load1()}")

        def trainer_chunks(self, tokens_per_step: int) -> list[dict]:
            """Trainer chunk j: the steps after boundary j, less the plain-loop work done at the boundary."""
            out = []
            for j in range(rounds):
                s = warmup - 1 + j * chunk  # index of the stamp at boundary j
                e = s + chunk
                seconds = self.marks[e] - self.marks[s] - self.inserted[s]
                out.append({"repeat": j, "seconds": seconds, "tokens_per_s": chunk * tokens_per_step / seconds,
                            "load1": self.runs[next(iter(others))][j]["load1"]})
            return out

    return Interleave()


def run_phase(*, default: bool, vocab: int, batches, warmup: int, rounds: int, fused_too: bool = False,
              bf16: bool = False) -> dict[str, Any]:
    """One ``train()`` run of warmup + rounds * CHUNK steps with the plain loops interleaved."""
    from wordformer.config import DataConfig, ModelConfig, TrainConfig
    from wordformer.training import train

    sizes = {k: SIZES[k] for k in ("num_layers", "num_heads", "d_model", "block_size")}
    max_steps = warmup + rounds * CHUNK
    others = {"wordformer_plain": PlainStepper(wordformer_model(vocab, **sizes), wordformer_logits, batches, max_steps=max_steps),
              "peer_plain": PlainStepper(peer_model(vocab, **sizes), peer_logits, batches, max_steps=max_steps)}
    if bf16:  # the same loops under bf16 autocast (wordformer's with fused AdamW, as its Trainer uses)
        others["wordformer_plain_bf16"] = PlainStepper(wordformer_model(vocab, **sizes), bf16_autocast(wordformer_logits),
                                                       batches, max_steps=max_steps, fused=True)
        others["peer_plain_bf16"] = PlainStepper(peer_model(vocab, **sizes), bf16_autocast(peer_logits), batches,
                                                 max_steps=max_steps)
    if fused_too:  # supplementary: the same loops with fused AdamW (see BENCHMARKS.md, recommendations)
        others["wordformer_plain_fused"] = PlainStepper(wordformer_model(vocab, **sizes), wordformer_logits, batches,
                                                        max_steps=max_steps, fused=True)
        others["peer_plain_fused"] = PlainStepper(peer_model(vocab, **sizes), peer_logits, batches, max_steps=max_steps,
                                                  fused=True)
        # supplementary: the peer with GPT-2's default activation (gelu_new), as GPT2Config() gives it
        others["peer_plain_gelu_new"] = PlainStepper(peer_model(vocab, activation="gelu_new", **sizes), peer_logits,
                                                     batches, max_steps=max_steps)
    tag = "trainer bf16" if bf16 else "trainer defaults" if default else "trainer lean"
    cb = make_interleaver(others, warmup=warmup, chunk=CHUNK, rounds=rounds, tag=tag)
    model = ModelConfig(positional=POSITIONAL, dropout=0.0, **sizes)
    cfg = TrainConfig(max_steps=max_steps, batch_size=SIZES["batch_size"], lr=OPTIM["lr"], min_lr=OPTIM["min_lr"],
                      warmup_steps=OPTIM["warmup_steps"], beta1=OPTIM["betas"][0], beta2=OPTIM["betas"][1],
                      weight_decay=OPTIM["weight_decay"], grad_clip=OPTIM["grad_clip"], seed=SEED, progress=default,
                      eval_batches=20 if default else 1, eval_interval=max_steps,  # validate after the last step only
                      accelerator="cpu", devices="1", precision="bf16-mixed" if bf16 else "32-true")
    with tempfile.TemporaryDirectory(prefix="wf-bench-") as out, open(os.devnull, "w") as sink, \
            contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):  # the progress bar writes to stdout
        result = train(model, DataConfig(data=str(DATA), tokenizer="char"), cfg, out, callbacks=[cb], logger=default,
                       overwrite=True)
    if result.steps != max_steps:
        raise RuntimeError(f"the Trainer stopped after {result.steps} of {max_steps} steps")
    runs = {"trainer": cb.trainer_chunks(SIZES["batch_size"] * SIZES["block_size"]), **cb.runs}
    return {"runs": runs, "same_batches": bool(torch.equal(cb.first_x, batches[0][0]))}


def batch_cost_us(corpus, n: int = 300) -> float:
    """Microseconds to build one training batch with TextBatches (part of every Trainer step, not the plain loops)."""
    from wordformer.batches import TextBatches

    src = TextBatches(corpus.train_ids, SIZES["block_size"], SIZES["batch_size"], SEED)
    t0 = time.perf_counter()
    for i in range(n):
        src.batch(i)
    return (time.perf_counter() - t0) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--warmup", type=int, default=None, help="untimed steps at the start (default 20, quick 10)")
    args = p.parse_args(argv)
    started = start()
    threads = set_threads(args.threads)
    quiet_libraries()
    rounds = args.repeats or (3 if args.quick else 30)
    warmup = args.warmup if args.warmup is not None else (10 if args.quick else 20)
    if warmup < 1:
        p.error("--warmup must be >= 1 (the stamp of the last warm-up step starts the clock)")

    block, batch = SIZES["block_size"], SIZES["batch_size"]
    corpus = char_corpus(block)
    vocab = corpus.tokenizer.vocab_size
    batches = batch_list(corpus, block, batch, warmup + rounds * CHUNK)
    sizes = {k: SIZES[k] for k in ("num_layers", "num_heads", "d_model", "block_size")}
    wf, peer = wordformer_model(vocab, **sizes), peer_model(vocab, **sizes)
    attn = peer_attention(peer)
    diff = same_function(wf, peer, batches[0][0])
    params = sum(p.numel() for p in wf.parameters())
    log(f"vocab {vocab}, {params:,} parameters (peer {sum(p.numel() for p in peer.parameters()):,}), "
        f"peer attention {attn}, max |logit diff| with copied weights {diff:.2e}; threads {threads}; "
        f"{rounds} rounds of {CHUNK} steps")
    del wf, peer

    lean = run_phase(default=False, vocab=vocab, batches=batches, warmup=warmup, rounds=rounds, fused_too=True)
    dflt = run_phase(default=True, vocab=vocab, batches=batches, warmup=warmup, rounds=rounds)
    same_batches = lean["same_batches"] and dflt["same_batches"]
    runs = {"wordformer_trainer": lean["runs"]["trainer"], "wordformer_plain": lean["runs"]["wordformer_plain"],
            "peer_plain": lean["runs"]["peer_plain"], "wordformer_plain_fused": lean["runs"]["wordformer_plain_fused"],
            "peer_plain_fused": lean["runs"]["peer_plain_fused"], "peer_plain_gelu_new": lean["runs"]["peer_plain_gelu_new"],
            "wordformer_trainer_default": dflt["runs"]["trainer"],
            "wordformer_plain_phase2": dflt["runs"]["wordformer_plain"], "peer_plain_phase2": dflt["runs"]["peer_plain"]}
    from wordformer.hardware import cpu_has_native_bf16

    native_bf16 = cpu_has_native_bf16()
    if native_bf16:  # elsewhere bf16 is emulated and slower: nothing to measure
        b = run_phase(default=False, vocab=vocab, batches=batches, warmup=warmup, rounds=rounds, bf16=True)
        runs.update({"wordformer_trainer_bf16": b["runs"]["trainer"], "peer_plain_phase3": b["runs"]["peer_plain"],
                     "wordformer_plain_phase3": b["runs"]["wordformer_plain"],
                     "wordformer_plain_bf16": b["runs"]["wordformer_plain_bf16"],
                     "peer_plain_bf16": b["runs"]["peer_plain_bf16"]})
        same_batches = same_batches and b["same_batches"]
    else:
        log("this CPU has no native bf16 (AVX512-BF16 or AMX): the bf16-mixed phase is skipped")
    derived = derive_train(runs)
    finish(NAME, MODULE, args, started, {
        "config": {**SIZES, "vocab_size": vocab, "parameters": params, "positional": POSITIONAL, "optimizer": OPTIM,
                   "peer": "transformers.GPT2LMHeadModel", "peer_attention": attn, "peer_activation": "gelu (exact)",
                   "max_logit_diff_same_weights": diff, "same_batches_trainer_and_loops": same_batches,
                   "warmup_steps_untimed": warmup, "chunk_steps": CHUNK, "rounds": rounds,
                   "tokens_per_step": block * batch, "batch_build_us": batch_cost_us(corpus),
                   "cpu_native_bf16": native_bf16},
        **derived,  # tokens_per_s, ratios, quiet_rounds, goals (benchmarks/derive.py)
        "runs": runs,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
