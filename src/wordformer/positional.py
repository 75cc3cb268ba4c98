"""Positional encoding: how the model tells the same token at two positions apart.

Sinusoidal and learned encodings are vectors added to the token embedding. Rotary position embedding (RoPE,
Su et al. 2021) adds nothing to the embedding: it rotates each head's query and key by an angle proportional to
the position, pair of numbers by pair of numbers, so that the dot product of a query at position m with a key at
position n depends only on m - n (step 3 sees relative positions).

Shape legend: B = batch, H = heads, T = tokens, C = d_model, D = head size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(num_positions: int, d_model: int) -> Tensor:
    """The Vaswani et al. / uvadlc table: PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(...).

    Works for any ``d_model >= 1``; with an odd width the last column is a sine.
    """
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]  # (T, 1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(num_positions, d_model)
    table[:, 0::2] = torch.sin(position * div_term)  # even columns
    table[:, 1::2] = torch.cos(position * div_term[: d_model // 2])  # odd columns
    return table  # (T, C)


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sine/cosine encodings: nothing to learn, and nothing stored in checkpoints."""

    def __init__(self, block_size: int, d_model: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(block_size, d_model), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """Encodings for integer ``positions`` of any shape (...,) -> (..., C)."""
        return self.table[positions]


class LearnedPositionalEncoding(nn.Module):
    """One trained vector per position (GPT-2); it cannot go beyond ``block_size``."""

    def __init__(self, block_size: int, d_model: int):
        super().__init__()
        self.table = nn.Embedding(block_size, d_model)

    def forward(self, positions: Tensor) -> Tensor:
        return self.table(positions)


class RotaryPositionalEncoding(nn.Module):
    """RoPE: rotate queries and keys instead of adding a vector to the embedding.

    Numbers ``i`` and ``i + D/2`` of a head form a pair (the "rotate half" layout of GPT-NeoX and LLaMA), turned
    by the angle ``position * base^(-2i/D)``. Nothing is learned and nothing is stored in checkpoints; any
    position works, so a KV cache simply continues the positions.
    """

    def __init__(self, head_size: int, base: float = 10000.0):
        super().__init__()
        if head_size % 2:
            raise ValueError(f"rotary embedding needs an even head size, got {head_size}")
        self.head_size = head_size
        self.base = base
        inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)  # (D/2,)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """Adds nothing to the embedding: zeros of shape (..., C) are not made; see :meth:`angles`."""
        raise TypeError("rotary positions are applied to queries and keys (angles/rotate), not added to the embedding")

    def angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Cosines and sines for integer ``positions`` (T,) or (B, T): each (T, D/2) or (B, 1, T, D/2), float32.

        The (B, 1, ...) form broadcasts over the heads of (B, H, T, D) queries and keys.
        """
        theta = positions.to(torch.float32)[..., None] * self.inv_freq  # (..., T, D/2)
        if positions.dim() == 2:
            theta = theta[:, None]  # (B, 1, T, D/2)
        return theta.cos(), theta.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (x_i, x_{i+D/2}) of ``x`` (..., T, D) by the angles whose cos/sin are given (..., T, D/2).

    Computed in float32 and returned in ``x``'s dtype, so bf16 queries keep exact angles.
    """
    half = x.size(-1) // 2
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)  # (..., T, D)


def build_positional_encoding(kind: str, block_size: int, d_model: int, *, head_size: int = 0,
                              rope_base: float = 10000.0) -> nn.Module:
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(block_size, d_model)
    if kind == "learned":
        return LearnedPositionalEncoding(block_size, d_model)
    if kind == "rope":
        return RotaryPositionalEncoding(head_size, rope_base)
    raise ValueError(f"unknown positional encoding {kind!r}")
