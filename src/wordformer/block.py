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

from torch import Tensor, nn

from .attention import LayerKVCache, MultiHeadSelfAttention
from .config import ModelConfig


def make_norm(config: ModelConfig) -> nn.Module:
    """Layer norm, or nothing for ``norm="none"``: with d_model = 2 (the chapter's toy) a layer norm maps
    every vector to (1, -1) or (-1, 1) and erases what the embedding learned."""
    if config.norm == "none":
        return nn.Identity()
    return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)


class FeedForward(nn.Module):
    """Position-wise network C -> ff_mult*C -> C with ReLU or GELU."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.ff_mult * config.d_model
        self.up = nn.Linear(config.d_model, hidden, bias=config.bias)
        if config.activation == "relu":
            self.act: nn.Module = nn.ReLU()
        else:  # GPT-2 uses the tanh approximation of GELU ("gelu_new" in HuggingFace)
            self.act = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.down = nn.Linear(hidden, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
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
    ) -> tuple[Tensor, Optional[Tensor]]:
        kwargs = dict(cache=cache, key_padding_mask=key_padding_mask, return_attention=return_attention, fused=fused)
        if self.pre_norm:
            a, attention = self.attention(self.norm1(x), **kwargs)
            x = x + a  # residual connection around attention
            x = x + self.feed_forward(self.norm2(x))  # residual connection around the feed-forward net
        else:
            a, attention = self.attention(x, **kwargs)
            x = self.norm1(x + a)
            x = self.norm2(x + self.feed_forward(x))
        return x, attention
