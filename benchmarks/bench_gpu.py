"""GPU training throughput at GPT-2-small sizes (12 layers, 12 heads, d_model 768, block 1024, vocabulary 50304),
bf16 autocast, ``torch.compile``d, fused AdamW: tokens/s and MFU against the GPU's bf16 dense peak, for
wordformer's model in a plain loop, wordformer through the Lightning Trainer (``WordPredictorModule`` with
``compile=True``, precision bf16-mixed) and the peer (HuggingFace GPT-2, SDPA, compiled), alternating.
Goal: MFU >= 45% on an H100.

Data: random token ids (a GPT-2-sized vocabulary needs a GPT-2 tokenizer; throughput does not depend on the
text). Exits with status 0 and the message "no CUDA device" where there is no GPU.

    python -m benchmarks.bench_gpu [--quick] [--batch-size 16] [--peak-tflops N]
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import time
from typing import Any, Optional

import torch
import torch.nn.functional as F

from .common import (OPTIM, SEED, alternate, base_parser, flops_per_token, goal, log, paired, peer_attention,
                     peer_model, quiet_libraries, start, summarize, timed_cuda_fit, wordformer_model)
from .report import finish

NAME = "gpu"
MODULE = "benchmarks.bench_gpu"
GPT2_SMALL = dict(num_layers=12, num_heads=12, d_model=768, block_size=1024)
VOCAB = 50304  # GPT-2's 50257 rounded up to a multiple of 64, as nanoGPT does
# bf16 dense tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets
PEAKS = {"H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "GH200": 989.4,
         "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0, "RTX 4090": 165.2}


def bf16_peak(name: str) -> Optional[float]:
    for key in sorted(PEAKS, key=len, reverse=True):  # the most specific name first
        if key.lower() in name.lower():
            return PEAKS[key]
    return None


def gpu_optimizer(model: torch.nn.Module):
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": OPTIM["weight_decay"]},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=OPTIM["lr"], betas=OPTIM["betas"], fused=True)


def plain_gpu(model: torch.nn.Module, logits_fn, batches, *, warmup: int, steps: int) -> dict[str, Any]:
    """Compiled bf16-autocast training loop; CUDA-synchronised timing of the steps after ``warmup``."""
    model = model.cuda().train()
    step_model = torch.compile(model)
    opt = gpu_optimizer(model)
    tokens = batches[0][0].numel()
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = batches[i % len(batches)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = logits_fn(step_model, x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {"tokens_per_s": steps * tokens / seconds, "seconds": seconds, "steps": steps, "loss": float(loss),
           "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    del step_model, opt, model
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return out


def trainer_gpu(batches, *, warmup: int, steps: int) -> dict[str, Any]:
    """wordformer's LightningModule in a Trainer (compile=True, bf16-mixed), fed the same batches from host memory."""
    import itertools

    from wordformer.config import ModelConfig, TrainConfig
    from wordformer.training import WordPredictorModule

    host = [(x.cpu(), y.cpu()) for x, y in batches]  # the Trainer moves each batch to the GPU itself
    cfg = TrainConfig(max_steps=warmup + steps, compile=True, precision="bf16-mixed", batch_size=batches[0][0].size(0),
                      progress=False)
    module = WordPredictorModule(ModelConfig(vocab_size=VOCAB, positional="learned", dropout=0.0, **GPT2_SMALL), cfg)
    seconds, trainer = timed_cuda_fit(module, lambda: itertools.cycle(host), warmup=warmup, steps=steps, devices=1,
                                      gradient_clip_val=OPTIM["grad_clip"])
    out = {"tokens_per_s": steps * batches[0][0].numel() / seconds, "seconds": seconds, "steps": steps,
           "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    del trainer, module
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return out


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step (16 x 1024 tokens)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 50, quick 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps incl. compilation (default 15, quick 5)")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of this GPU, if not in the table")
    p.add_argument("--no-trainer", action="store_true", help="skip the Lightning Trainer measurement")
    p.add_argument("--no-peer", action="store_true", help="skip the HuggingFace peer")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device; the GPU benchmark was not run (BENCHMARKS.md lists it as not measured)")
        return 0
    started = start()
    quiet_libraries()
    torch.manual_seed(SEED)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    repeats = args.repeats or (1 if args.quick else 3)
    steps = args.steps or (10 if args.quick else 50)
    warmup = args.warmup or (5 if args.quick else 15)
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or bf16_peak(name)
    gen = torch.Generator().manual_seed(SEED)
    shape = (args.batch_size, GPT2_SMALL["block_size"] + 1)
    batches = []
    for _ in range(8):
        w = torch.randint(VOCAB, shape, generator=gen)
        batches.append((w[:, :-1].contiguous().cuda(), w[:, 1:].contiguous().cuda()))

    probe = wordformer_model(VOCAB, **GPT2_SMALL)
    flops = flops_per_token(probe, num_layers=12, d_model=768, block_size=1024, positional_params=1024 * 768)
    params = sum(q.numel() for q in probe.parameters())
    peer_probe = peer_model(VOCAB, **GPT2_SMALL)
    attn = peer_attention(peer_probe)
    del probe, peer_probe
    log(f"{name}: bf16 peak {peak} TFLOP/s; {params / 1e6:.1f} M parameters, {flops / 1e6:.0f} MFLOP/token")

    cases = {"wordformer_plain": lambda: plain_gpu(wordformer_model(VOCAB, **GPT2_SMALL), lambda m, x: m(x), batches,
                                                   warmup=warmup, steps=steps)}
    trainer_error = None
    if not args.no_trainer:
        # wordformer's configure_optimizers picks fused AdamW on CUDA, and Lightning 2.6 refuses to clip the
        # gradients of a fused optimizer under mixed precision: try once, and record the error instead of dying
        try:
            trainer_gpu(batches, warmup=2, steps=2)
            cases["wordformer_trainer"] = lambda: trainer_gpu(batches, warmup=warmup, steps=steps)
        except RuntimeError as exc:
            trainer_error = f"{type(exc).__name__}: {exc}"
            log(f"wordformer through the Trainer failed, measured without it: {trainer_error}")
    if not args.no_peer:
        cases["peer_plain"] = lambda: plain_gpu(peer_model(VOCAB, **GPT2_SMALL),
                                                lambda m, x: m(input_ids=x, use_cache=False).logits, batches,
                                                warmup=warmup, steps=steps)
    runs = alternate(cases, repeats)
    summary = {n: summarize([r["tokens_per_s"] for r in rs]) for n, rs in runs.items()}
    mfu = {n: summarize([r["tokens_per_s"] * flops / (peak * 1e12) for r in rs]) if peak else None
           for n, rs in runs.items()}
    ratios = {}
    if "peer_plain" in runs:
        ratios["plain_over_peer"] = paired(runs["wordformer_plain"], runs["peer_plain"], "tokens_per_s", lambda a, b: a / b)
    headline = "wordformer_trainer" if "wordformer_trainer" in runs else "wordformer_plain"
    is_h100 = "h100" in name.lower()
    goals = [goal(f"GPU: MFU of wordformer ({headline.split('_')[1]}), GPT-2 small, bf16, compiled",
                  mfu[headline]["median"] if mfu[headline] else None, 0.45,
                  note=name + ("" if is_h100 else " (the goal is stated for an H100)"))]
    finish(NAME, MODULE, args, started, {
        "config": {**GPT2_SMALL, "vocab_size": VOCAB, "batch_size": args.batch_size, "dtype": "bf16 autocast",
                   "compiled": True, "optimizer": "AdamW fused", "data": "random token ids", "parameters": params,
                   "flops_per_token": flops, "device": name, "bf16_peak_tflops": peak, "peer_attention": attn,
                   "warmup_steps_untimed": warmup, "timed_steps": steps, "repeats": repeats,
                   "trainer_error": trainer_error},
        "tokens_per_s": summary, "mfu": mfu, "ratios": ratios, "runs": runs, "goals": goals,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
