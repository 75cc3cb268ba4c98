"""What this machine can do: the precision ``auto`` means, native bf16 on CPUs, and whether a batch fits.

Kept apart from the training loop so the decisions can be read (and tested) without building a trainer.
"""

from __future__ import annotations

from typing import Optional

import torch

from .config import ModelConfig
from .errors import WordformerError


def resolve_precision(precision: str) -> str:
    """"auto" is bf16-mixed on GPUs that support it and 32-true elsewhere, CPUs included (bit-for-bit the
    chapter's float32 arithmetic; ask for bf16-mixed on CPUs with native bf16, see cpu_has_native_bf16)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 matmuls run natively and bf16-mixed trains faster than
    float32 (1.7x at the benchmark sizes on an AMD EPYC with AMX); elsewhere bf16 is emulated and slower."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # older torch: no way to tell
        return False


def on_cpu(accelerator: str) -> bool:
    """Whether Lightning will train on the CPU for this ``--accelerator``."""
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                    and not torch.backends.mps.is_available())


def memory_available() -> Optional[int]:
    """Bytes this machine can still give (Linux's MemAvailable), or None where that is unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_fits(model: ModelConfig, batch_size: int, accelerator: str) -> None:
    """Refuse, on CPU, a batch whose activations cannot fit in memory: the kernel's OOM killer would end the
    process without a word. A lower bound in float32: logits with their softmax and gradient (3V per token),
    and per layer the ~18 d_model-sized tensors a block keeps for its backward pass."""
    free = memory_available() if on_cpu(accelerator) else None
    per_token = 3 * model.vocab_size + (18 * model.num_layers + 2) * model.d_model
    need = 4 * batch_size * model.block_size * per_token
    if free is not None and need > free:
        raise WordformerError(
            f"batch_size={batch_size} x block_size={model.block_size} needs at least {need / 2**30:.1f} GiB for "
            f"activations, more than the {free / 2**30:.1f} GiB free here; use a smaller --batch-size (--grad-accum N "
            "keeps the effective batch)")
