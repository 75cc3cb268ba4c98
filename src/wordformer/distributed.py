"""Training on several processes and machines, on Lightning's own machinery (torch.distributed underneath).

Lightning starts and connects the processes: by hand (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK`` on every
machine, its ``LightningEnvironment``), under ``torchrun`` or under SLURM, which it detects. What is ours: which
process counts as rank 0 before Lightning has said (it prints, checks the output folder), the data each rank
draws (its share of one global batch, so N processes with batch B train like one process with batch N x B),
when a run may resume on another number of processes, and the strategy object for FSDP.
"""

from __future__ import annotations

import os
from typing import Any

from .config import STRATEGIES
from .errors import WordformerError

__all__ = ["STRATEGIES", "check_cluster", "check_same_global_batch", "is_fsdp", "is_rank_zero", "lightning_strategy",
           "rank_share", "resolve_accelerator"]

# environment variables that give a process's rank, for each way of starting several (Lightning reads only some
# of them before the Trainer exists: a second machine started by hand has NODE_RANK=1 but no RANK)
RANK_VARIABLES = ("RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_rank_zero() -> bool:
    """True in exactly one process of a run: the one that checks the output folder and prints reports. False in
    the extra processes Lightning starts for multi-device training and in every process of the other machines."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return False
    return all(os.environ.get(name, "0") in ("0", "") for name in RANK_VARIABLES)


def check_cluster(num_nodes: int) -> None:
    """Refuse settings under which the processes could never meet: Lightning would wait for the other machines
    for half an hour, or several single-machine runs would write the same folder."""
    managed = any(name in os.environ for name in ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "OMPI_COMM_WORLD_SIZE"))
    if num_nodes > 1 and "MASTER_ADDR" not in os.environ and not managed:
        raise WordformerError(f"num_nodes={num_nodes} needs MASTER_ADDR, MASTER_PORT and NODE_RANK set on every "
                              "machine (or torchrun, or SLURM); to train on this machine alone pass --num-nodes 1")
    node_rank = os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0"))
    if num_nodes == 1 and node_rank not in ("0", "") and not managed:
        raise WordformerError(f"NODE_RANK={node_rank} is set but num_nodes=1; pass --num-nodes with the number of "
                              "machines, or unset NODE_RANK")


def resolve_accelerator(strategy: str, accelerator: str) -> str:
    """The accelerator to ask Lightning for: FSDP runs only on CUDA GPUs in Lightning, so say so in one line."""
    if strategy != "fsdp":
        return accelerator
    import torch

    if accelerator not in ("auto", "cuda", "gpu") or not torch.cuda.is_available():
        raise WordformerError("strategy=fsdp needs CUDA GPUs: Lightning's FSDP does not run on CPUs; use --strategy "
                              "ddp there (each process then keeps a whole copy of the model)")
    return "cuda"


def lightning_strategy(name: str) -> Any:
    """Lightning's strategy for ``name``; FSDP shards each decoder block on its own (one all-gather per block)."""
    if name != "fsdp":
        return name
    from lightning.pytorch.strategies import FSDPStrategy

    from .block import DecoderBlock

    return FSDPStrategy(auto_wrap_policy={DecoderBlock})


def is_fsdp(strategy: Any) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(strategy, FSDPStrategy)


def check_same_global_batch(saved_batch: int, saved_world: int, batch: int, world: int, checkpoint: Any) -> None:
    """A resumed run continues exactly when its global batch (processes x batch size) is the one it trained
    with: every batch is then the same windows, shared out among other ranks."""
    total = saved_batch * saved_world
    if batch * world == total:
        return
    fix = (f"pass --batch-size {total // world} to continue it exactly" if total % world == 0
           else f"run it on a number of processes that divides {total}")
    raise WordformerError(f"cannot resume {checkpoint} with another global batch: it trained on {saved_world} "
                          f"process(es) x batch {saved_batch} = {total} sequences per step, here {world} x {batch} = "
                          f"{world * batch}; {fix}, or start a new run with --out")


def rank_share(rows: Any, rank: int, world: int) -> Any:
    """Rank ``rank``'s share of one global batch of ``world`` equal shares (its rows, in order)."""
    size = len(rows) // world
    return rows[rank * size:(rank + 1) * size]
