"""Positional encoding, added to the token embedding so the same token at two positions differs.

Shape legend: T = tokens, C = d_model.
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


def build_positional_encoding(kind: str, block_size: int, d_model: int) -> nn.Module:
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(block_size, d_model)
    if kind == "learned":
        return LearnedPositionalEncoding(block_size, d_model)
    raise ValueError(f"unknown positional encoding {kind!r}")
