"""The UvA tutorial 6 tasks on a bidirectional encoder: sequence reversal and set anomaly detection.

They complement the chapter's decoder-only word predictor: the same attention math
(:func:`wordformer.attention.scaled_dot_product`) without a causal mask, trained with Lightning,
and able to import the tutorial's own pretrained checkpoints without running pickled code.

Names are imported on first use so the CLI can register ``wordformer task`` without importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnomalyConfig": "anomaly",
    "AnomalyModule": "anomaly",
    "AnomalyResult": "anomaly",
    "EncoderBlock": "encoder",
    "EncoderConfig": "encoder",
    "EncoderPredictor": "encoder",
    "EncoderSelfAttention": "encoder",
    "FeatureSplit": "features",
    "ReverseConfig": "reverse",
    "ReverseDataset": "reverse",
    "ReverseModule": "reverse",
    "ReverseResult": "reverse",
    "SetAnomalyDataset": "anomaly",
    "TaskCheckpoint": "checkpoints",
    "TaskModule": "module",
    "cifar100_features": "features",
    "cosine_warmup_factor": "module",
    "digits_split": "features",
    "evaluate_anomaly": "anomaly",
    "evaluate_reverse": "reverse",
    "extract_features": "features",
    "import_tutorial": "tutorial",
    "is_tutorial_checkpoint": "tutorial",
    "load_anomaly_module": "anomaly",
    "load_reverse_module": "reverse",
    "load_task_checkpoint": "checkpoints",
    "resnet34_backbone": "features",
    "reverse_attention_maps": "reverse",
    "safe_load": "loading",
    "save_task_checkpoint": "checkpoints",
    "train_anomaly": "anomaly",
    "train_reverse": "reverse",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wordformer.tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
