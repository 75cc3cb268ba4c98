"""wordformer: decoder-only transformer word predictors, built piece by piece, trained with Lightning.

The public API follows the chapter "HPT PyTorch Lightning Transformer: Introduction":
``scaled_dot_product`` (masked self-attention's core), the model (:class:`WordPredictor`, configured by
:class:`ModelConfig`), the Lightning module, the tokenizers, and ``generate`` / ``predict_next``.

Names are imported on first use, so ``import wordformer`` (and ``wordformer --help``) does not pay for
importing Lightning until something needs it.
"""

from __future__ import annotations

import importlib
import os

# OpenMP threads that busy-wait make PyTorch 10-50x slower on CPU whenever other processes compete for the
# cores (measured: the demo ran 0.5 steps/s instead of 11), but waiting passively costs about a third of the
# speed on an idle machine (benchmarks/results/omp.json). So: passive only when the machine is already busy
# at import. It takes effect only if set before torch is first imported; an explicit setting wins.
try:
    if os.getloadavg()[0] >= (os.cpu_count() or 1):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
except OSError:  # pragma: no cover - no load average on this platform
    pass
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "MultiHeadSelfAttention": "attention",
    "causal_mask": "attention",
    "scaled_dot_product": "attention",
    "LoadedModel": "checkpoint",
    "load_checkpoint": "checkpoint",
    "DataConfig": "config",
    "ModelConfig": "config",
    "TrainConfig": "config",
    "WordformerError": "errors",
    "WordPredictor": "model",
    "BPETokenizer": "tokenizers",
    "CharTokenizer": "tokenizers",
    "Tokenizer": "tokenizers",
    "WordTokenizer": "tokenizers",
    "build_tokenizer": "tokenizers",
    "generate": "generation",
    "generate_ids": "generation",
    "predict_next": "generation",
    "TrainResult": "training",
    "WordPredictorModule": "training",
    "train": "training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wordformer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # for type checkers and IDEs
    from .attention import MultiHeadSelfAttention, causal_mask, scaled_dot_product
    from .checkpoint import LoadedModel, load_checkpoint
    from .config import DataConfig, ModelConfig, TrainConfig
    from .errors import WordformerError
    from .generation import generate, generate_ids, predict_next
    from .model import WordPredictor
    from .tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, build_tokenizer
    from .training import TrainResult, WordPredictorModule, train
