"""Import the UvA tutorial 6 checkpoints (``ReverseTask.ckpt``, ``SetAnomalyTask.ckpt``) into our model.

The tutorial's ``TransformerPredictor`` was saved by PyTorch Lightning 1.x. Its weights map one to one
onto :class:`~wordformer.tasks.encoder.EncoderPredictor` except for the attention input projection:
the tutorial views the 3*C outputs of ``qkv_proj`` as (heads, 3 * head_dim) and splits each head's
slice into q, k, v, whereas we stack all queries, then all keys, then all values. The rows are
permuted accordingly, so both layouts compute the same function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from torch import Tensor

from ..errors import WordformerError
from .encoder import EncoderConfig, EncoderPredictor

HPARAM_KEYS = ("input_dim", "model_dim", "num_classes", "num_heads", "num_layers")
# Tutorial name -> our name, for everything outside the transformer layers.
_TOP_LEVEL = {
    "input_net.1.weight": "input_net.1.weight",
    "input_net.1.bias": "input_net.1.bias",
    "output_net.0.weight": "output_net.0.weight",
    "output_net.0.bias": "output_net.0.bias",
    "output_net.1.weight": "output_net.1.weight",
    "output_net.1.bias": "output_net.1.bias",
    "output_net.4.weight": "output_net.4.weight",
    "output_net.4.bias": "output_net.4.bias",
}
# Within layer N: tutorial suffix -> our suffix (qkv is handled separately).
_LAYER = {
    "self_attn.o_proj.weight": "attn.proj.weight",
    "self_attn.o_proj.bias": "attn.proj.bias",
    "linear_net.0.weight": "ff.0.weight",
    "linear_net.0.bias": "ff.0.bias",
    "linear_net.3.weight": "ff.3.weight",
    "linear_net.3.bias": "ff.3.bias",
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
}
_IGNORED = ("positional_encoding.pe",)  # a fixed table some versions stored; we recompute it


@dataclass
class TutorialModel:
    """A tutorial checkpoint turned into our predictor, with the task it was trained for."""

    task: str  # "reverse" or "anomaly"
    model: EncoderPredictor
    hparams: dict[str, Any]
    lightning_version: Optional[str]


def is_tutorial_checkpoint(raw: Any) -> bool:
    """True for a Lightning checkpoint of the tutorial's ``TransformerPredictor``."""
    if not isinstance(raw, dict) or not isinstance(raw.get("state_dict"), Mapping):
        return False
    return "input_net.1.weight" in raw["state_dict"] and isinstance(raw.get("hyper_parameters"), Mapping)


def infer_task(hparams: Mapping[str, Any]) -> str:
    """One output per element means an anomaly score; several mean token classes (reverse)."""
    return "anomaly" if int(hparams["num_classes"]) == 1 else "reverse"


def tutorial_config(hparams: Mapping[str, Any], *, positional_encoding: bool) -> EncoderConfig:
    """Our :class:`EncoderConfig` for the tutorial's hyperparameters (feed-forward 2 x model_dim, as it used)."""
    missing = [k for k in HPARAM_KEYS if k not in hparams]
    if missing:
        raise WordformerError(f"tutorial checkpoint lacks hyper_parameters {missing}: it is not a TransformerPredictor")
    return EncoderConfig(
        input_dim=int(hparams["input_dim"]),
        model_dim=int(hparams["model_dim"]),
        num_classes=int(hparams["num_classes"]),
        num_heads=int(hparams["num_heads"]),
        num_layers=int(hparams["num_layers"]),
        dropout=float(hparams.get("dropout", 0.0)),
        input_dropout=float(hparams.get("input_dropout", 0.0)),
        positional_encoding=positional_encoding,
        ff_mult=2,
    )


def per_head_to_stacked(tensor: Tensor, num_heads: int) -> Tensor:
    """Reorder qkv rows from the tutorial's (heads, [q|k|v], head_dim) to our ([q|k|v], heads, head_dim).

    Works for the weight (3C, C_in) and the bias (3C,).
    """
    rows = tensor.shape[0]
    head_dim = rows // (3 * num_heads)
    rest = tensor.shape[1:]
    per_head = tensor.reshape(num_heads, 3, head_dim, *rest)  # (H, 3, D, ...)
    return per_head.transpose(0, 1).reshape(rows, *rest).contiguous()  # (3 * H * D, ...)


def convert_state_dict(state_dict: Mapping[str, Tensor], config: EncoderConfig) -> dict[str, Tensor]:
    """Rename (and for qkv, reorder) the tutorial's weights into our module's state_dict."""
    out: dict[str, Tensor] = {}
    unused = set(state_dict)
    for theirs, ours in _TOP_LEVEL.items():
        if theirs not in state_dict:
            raise WordformerError(f"tutorial checkpoint lacks weight {theirs!r}: it is not a TransformerPredictor")
        out[ours] = state_dict[theirs]
        unused.discard(theirs)
    for n in range(config.num_layers):
        prefix = f"transformer.layers.{n}."
        for kind in ("weight", "bias"):
            name = f"{prefix}self_attn.qkv_proj.{kind}"
            if name not in state_dict:
                raise WordformerError(f"tutorial checkpoint lacks weight {name!r}: num_layers does not match the weights")
            out[f"blocks.{n}.attn.qkv.{kind}"] = per_head_to_stacked(state_dict[name], config.num_heads)
            unused.discard(name)
        for theirs, ours in _LAYER.items():
            name = prefix + theirs
            if name not in state_dict:
                raise WordformerError(f"tutorial checkpoint lacks weight {name!r}: it is not a TransformerPredictor")
            out[f"blocks.{n}.{ours}"] = state_dict[name]
            unused.discard(name)
    unused -= set(_IGNORED)
    if unused:
        extra = sorted(unused)
        layer = next((m for m in (re.match(r"transformer\.layers\.(\d+)\.", k) for k in extra) if m), None)
        hint = "hyper_parameters num_layers is smaller than the stored layers" if layer else "unknown weights"
        raise WordformerError(f"tutorial checkpoint has unexpected weights {extra[:3]}: {hint}; is it a TransformerPredictor?")
    return out


def import_tutorial(raw: Mapping[str, Any]) -> TutorialModel:
    """Build our predictor from a loaded tutorial checkpoint dict (see :func:`~.loading.safe_load`)."""
    hparams = dict(raw["hyper_parameters"])
    task = infer_task(hparams) if "num_classes" in hparams else "reverse"
    # The tutorial passed add_positional_encoding to forward(); honour it if a variant stored it.
    positional = bool(hparams.get("add_positional_encoding", task == "reverse"))
    config = tutorial_config(hparams, positional_encoding=positional)
    model = EncoderPredictor(config)
    state = convert_state_dict(raw["state_dict"], config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise WordformerError(f"tutorial weights do not fit its hyper_parameters ({detail}): the file is inconsistent") from None
    model.eval()
    version = raw.get("pytorch-lightning_version")
    return TutorialModel(task=task, model=model, hparams=hparams, lightning_version=str(version) if version else None)


__all__ = [
    "TutorialModel",
    "convert_state_dict",
    "import_tutorial",
    "infer_task",
    "is_tutorial_checkpoint",
    "per_head_to_stacked",
    "tutorial_config",
]
