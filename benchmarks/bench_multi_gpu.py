"""Multi-GPU training through wordformer's LightningModule: DDP against FSDP (``--strategy``), on every GPU of one
machine, at GPT-2-small sizes (12 layers, 12 heads, d_model 768, block 1024, vocabulary 50304), bf16-mixed,
random token ids. Reports tokens/s over all GPUs, tokens/s per GPU, the peak memory of each GPU and the scaling
against one GPU with the same per-GPU batch.

Exits with status 0 and the message "needs CUDA GPUs" on a machine without one. Lightning starts one process per
GPU by re-running this command, so every process parses the same arguments; rank 0 writes the result file.

    python -m benchmarks.bench_multi_gpu [--quick] [--strategies ddp,fsdp] [--devices N] [--batch-size 8]

Not run on this project's machines yet (no multi-GPU machine was lent); expect to fix small things the first
time. Multi-node: start the same command on every machine with MASTER_ADDR, MASTER_PORT and NODE_RANK set and
``--num-nodes N`` (README, "Large corpora and many machines").
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import os
from typing import Any

import torch

from .common import SEED, base_parser, log, quiet_libraries, start, summarize, timed_cuda_fit
from .report import finish

NAME = "multi_gpu"
MODULE = "benchmarks.bench_multi_gpu"
GPT2_SMALL = dict(num_layers=12, num_heads=12, d_model=768, block_size=1024)
VOCAB = 50304


def run(strategy: str, devices: int, num_nodes: int, batch_size: int, warmup: int, steps: int,
        compile_model: bool) -> dict[str, Any]:
    """One Trainer run; every rank measures its own step times, rank 0 returns them."""
    from wordformer.config import ModelConfig, TrainConfig
    from wordformer.distributed import lightning_strategy
    from wordformer.training import WordPredictorModule

    def stream():  # random tokens, seeded per rank (read in the process that trains)
        gen = torch.Generator().manual_seed(SEED + int(os.environ.get("LOCAL_RANK", 0)))
        while True:
            w = torch.randint(VOCAB, (batch_size, GPT2_SMALL["block_size"] + 1), generator=gen)
            yield w[:, :-1], w[:, 1:]

    cfg = TrainConfig(max_steps=warmup + steps, compile=compile_model, precision="bf16-mixed", batch_size=batch_size,
                      progress=False, strategy=strategy)
    module = WordPredictorModule(ModelConfig(vocab_size=VOCAB, positional="learned", dropout=0.0, **GPT2_SMALL), cfg)
    seconds, trainer = timed_cuda_fit(module, stream, warmup=warmup, steps=steps, devices=devices, num_nodes=num_nodes,
                                      strategy=lightning_strategy(strategy), gradient_clip_val=1.0)
    world = trainer.world_size
    peak = torch.tensor([torch.cuda.max_memory_allocated() / 2**30], device="cuda")
    peaks = trainer.strategy.all_gather(peak).flatten().tolist() if world > 1 else [float(peak)]
    return {"strategy": strategy, "world_size": world, "rank": trainer.global_rank,
            "tokens_per_s": world * steps * batch_size * GPT2_SMALL["block_size"] / seconds,
            "tokens_per_s_per_gpu": steps * batch_size * GPT2_SMALL["block_size"] / seconds,
            "step_ms": seconds / steps * 1000, "max_memory_gib_per_gpu": peaks}


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--strategies", default="ddp,fsdp", help="Lightning strategies to compare")
    p.add_argument("--devices", type=int, default=None, help="GPUs per machine (default: all)")
    p.add_argument("--num-nodes", type=int, default=1, help="machines (start this command on each)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per GPU per step")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 30, quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 10, quick 3)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_multi_gpu: needs CUDA GPUs; not run (BENCHMARKS.md lists it as not measured)")
        return 0
    started = start()
    quiet_libraries()
    devices = args.devices or torch.cuda.device_count()
    steps, warmup = args.steps or (5 if args.quick else 30), args.warmup or (3 if args.quick else 10)
    # Lightning starts the other GPUs' processes by re-running this command at the first multi-GPU fit; they (and
    # the processes of other machines) must run the same sequence of multi-GPU fits, and none of the 1-GPU ones
    replica = int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 or int(os.environ.get("NODE_RANK", "0") or 0) > 0
    strategies = [s for s in args.strategies.split(",") if s]
    plan = [] if replica else [(s, 1, 1) for s in strategies]
    if devices * args.num_nodes > 1:
        plan += [(s, devices, args.num_nodes) for s in strategies]
    results: dict[str, Any] = {}
    for strategy, n, nodes in plan:
        try:
            r = run(strategy, n, nodes, args.batch_size, warmup, steps, args.compile)
        except Exception as exc:  # record and go on: one failing strategy must not hide the others
            r = {"strategy": strategy, "error": f"{type(exc).__name__}: {str(exc)[:300]}", "rank": 0}
        results[f"{strategy}/{n * nodes}"] = r
        if not replica:
            log(f"{strategy} on {n * nodes} GPU(s): {r.get('tokens_per_s', r.get('error'))}")
    if replica:
        return 0
    scaling = {}
    for strategy in args.strategies.split(","):
        one, many = results.get(f"{strategy}/1", {}), results.get(f"{strategy}/{devices * args.num_nodes}", {})
        if one.get("tokens_per_s") and many.get("tokens_per_s") and devices * args.num_nodes > 1:
            scaling[strategy] = summarize([many["tokens_per_s"] / one["tokens_per_s"] / (devices * args.num_nodes)])
    finish(NAME, MODULE, args, started, {
        "config": {**GPT2_SMALL, "vocab_size": VOCAB, "batch_size_per_gpu": args.batch_size, "precision": "bf16-mixed",
                   "compiled": args.compile, "devices": devices, "num_nodes": args.num_nodes,
                   "device": torch.cuda.get_device_name(0), "warmup_steps_untimed": warmup, "timed_steps": steps},
        "results": results, "scaling_efficiency": scaling, "goals": [],
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
