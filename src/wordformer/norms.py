"""Normalisation layers: which kind (layer norm or RMS norm) and where none is used.

A layer norm subtracts each vector's mean, divides by its standard deviation, then scales and shifts it
(GPT-2, the chapter). An RMS norm (Zhang and Sennrich, 2019; LLaMA, the modded-nanogpt speedruns) only divides
by the root mean square and scales: no mean, no shift, a little less work, and in practice the same quality.
Where the norms sit in a block (``norm``: pre, post, none) is a separate choice, made in ``block.py``.
Shape legend: C = d_model, D = head size.
"""

from __future__ import annotations

from torch import nn

from .config import ModelConfig


def build_norm(kind: str, width: int, *, eps: float, bias: bool = True) -> nn.Module:
    """A ``"layernorm"`` or ``"rmsnorm"`` over the last ``width`` numbers; both learn a per-number scale."""
    if kind == "layernorm":
        return nn.LayerNorm(width, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return nn.RMSNorm(width, eps=eps)
    raise ValueError(f"unknown norm type {kind!r}")


def make_norm(config: ModelConfig) -> nn.Module:
    """The block's norm over d_model (C), or nothing for ``norm="none"``: with d_model = 2 (the chapter's toy) a
    layer norm maps every vector to (1, -1) or (-1, 1) and erases what the embedding learned."""
    if config.norm == "none":
        return nn.Identity()
    return build_norm(config.norm_type, config.d_model, eps=config.layer_norm_eps, bias=config.bias)


def make_qk_norm(config: ModelConfig) -> nn.Module:
    """QK-norm: an RMS norm of each head's query or key (over its D numbers), or nothing.

    Normalised queries and keys keep the dot products of step 3 bounded, so no head's softmax saturates early
    in training (OLMo 2, the speedruns); the learned scale (one per number, shared by the heads) and
    ``attn_scale`` set how sharp attention can become.
    """
    if not config.qk_norm:
        return nn.Identity()
    return nn.RMSNorm(config.head_size, eps=config.layer_norm_eps)
