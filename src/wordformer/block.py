"""One decoder block: masked self-attention and a feed-forward network, each inside a residual connection.

The chapter adds the attention output back onto its input ("residual connection values"). Where the
layer norm goes is a choice the sources differ on:
  post-norm (the original transformer, uvadlc tutorial 6): x = norm(x + sublayer(x))
  pre-norm  (GPT-2):                                        x = x + sublayer(norm(x))
  none      (the chapter's plain residual connection):      x = x + sublayer(x)
Shape legend: B = batch, T = tokens, C = d_model.
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import LayerKVCache, MultiHeadSelfAttention
from .config import ModelConfig
from .norms import make_norm

__all__ = ["DecoderBlock", "FeedForward", "ReLUSquared", "feed_forward_hidden", "make_norm"]


class ReLUSquared(nn.Module):
    """relu(x)^2 (So et al., Primer 2021; the modded-nanogpt speedruns): as cheap as ReLU, smooth at 0."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).square()


def feed_forward_hidden(config: ModelConfig) -> int:
    """Hidden width of the feed-forward net: ``ff_mult * d_model``, or for SwiGLU the width that spends the same
    parameters.

    The plain net has two matrices (C x H, H x C) and H + C biases: 2CH + b(H + C). SwiGLU has three (gate, up,
    down) of width h: 3Ch + b(2h + C). Setting them equal gives h = H (2C + b) / (3C + 2b), about 2H/3 (as in
    LLaMA); rounded to the nearest integer, the count is within half a hidden unit's parameters of the plain
    net's, and equal when the division is exact (e.g. d_model 24, ff_mult 4, no biases: h = 64).
    """
    hidden = config.ff_mult * config.d_model
    if config.activation != "swiglu":
        return hidden
    c, b = config.d_model, int(config.bias)
    return max(1, round(hidden * (2 * c + b) / (3 * c + 2 * b)))


class FeedForward(nn.Module):
    """Position-wise network C -> hidden -> C: ReLU, GELU, squared ReLU, or the gated SwiGLU.

    SwiGLU (Shazeer 2020) multiplies two linear maps, one through SiLU: down(silu(gate(x)) * up(x)); its hidden
    width is chosen by :func:`feed_forward_hidden` so the net has the plain net's parameter count.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = feed_forward_hidden(config)
        self.up = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.gate = nn.Linear(config.d_model, hidden, bias=config.bias) if config.activation == "swiglu" else None
        if config.activation == "relu":
            self.act: nn.Module = nn.ReLU()
        elif config.activation == "relu2":
            self.act = ReLUSquared()
        elif config.activation == "swiglu":
            self.act = nn.SiLU()
        else:  # GPT-2 uses the tanh approximation of GELU ("gelu_new" in HuggingFace)
            self.act = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.down = nn.Linear(hidden, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is not None:  # SwiGLU: (B, T, h) * (B, T, h)
            return self.dropout(self.down(self.act(self.gate(x)) * self.up(x)))
        return self.dropout(self.down(self.act(self.up(x))))


class DecoderBlock(nn.Module):
    """Residual attention, then residual feed-forward, with pre- or post-norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.norm1 = make_norm(config)
        self.attention = MultiHeadSelfAttention(config)
        self.norm2 = make_norm(config)
        self.feed_forward = FeedForward(config)

    def forward(
        self,
        x: Tensor,
        *,
        cache: Optional[LayerKVCache] = None,
        key_padding_mask: Optional[Tensor] = None,
        return_attention: bool = False,
        fused: bool = True,
        rotary: Optional[tuple[Tensor, Tensor]] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        kwargs = dict(cache=cache, key_padding_mask=key_padding_mask, return_attention=return_attention, fused=fused,
                      rotary=rotary)
        if self.pre_norm:
            a, attention = self.attention(self.norm1(x), **kwargs)
            x = x + a  # residual connection around attention
            x = x + self.feed_forward(self.norm2(x))  # residual connection around the feed-forward net
        else:
            a, attention = self.attention(x, **kwargs)
            x = self.norm1(x + a)
            x = self.norm2(x + self.feed_forward(x))
        return x, attention
