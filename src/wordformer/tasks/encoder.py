"""The tutorial's encoder-style predictor: bidirectional attention, post-norm blocks, per-token outputs.

Unlike the chapter's decoder this model attends in both directions (no causal mask), which is what the
reverse and set-anomaly tasks need: every output may depend on every input.

Shape legend: B = batch, T = sequence (or set) length, C = model_dim, H = heads, D = head size,
F = input features, K = output classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from ..attention import scaled_dot_product
from ..errors import WordformerError, check_int
from ..positional import sinusoidal_table


def _check_prob(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise WordformerError(f"{name}={value!r} must be a number in [0, 1)")


@dataclass
class EncoderConfig:
    """Architecture of :class:`EncoderPredictor`; the defaults are the tutorial's reverse-task model."""

    input_dim: int = 10  # features per input element (one-hot size for the reverse task)
    model_dim: int = 32
    num_classes: int = 10  # outputs per element (1 for the anomaly score)
    num_heads: int = 1
    num_layers: int = 1
    dropout: float = 0.0  # inside the blocks and the output net
    input_dropout: float = 0.0  # on the raw input features
    positional_encoding: bool = True  # False keeps the model permutation-equivariant (sets)
    max_len: int = 5000  # longest sequence the sinusoidal table covers
    ff_mult: int = 2  # feed-forward hidden size = ff_mult * model_dim (the tutorial uses 2)

    def __post_init__(self) -> None:
        for name in ("input_dim", "model_dim", "num_classes", "num_heads", "num_layers", "max_len", "ff_mult"):
            check_int(name, getattr(self, name))
        if self.model_dim % self.num_heads:
            raise WordformerError(f"num_heads={self.num_heads} must divide model_dim={self.model_dim}: pick a divisor")
        _check_prob("dropout", self.dropout)
        _check_prob("input_dropout", self.input_dropout)
        if not isinstance(self.positional_encoding, bool):
            raise WordformerError(f"positional_encoding={self.positional_encoding!r} must be true or false")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of primitives, so checkpoints stay loadable with ``weights_only=True``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "EncoderConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise WordformerError(f"unknown encoder setting(s) {unknown}: the checkpoint is from another version")
        return cls(**dict(values))


class EncoderSelfAttention(nn.Module):
    """Multi-head self-attention over all positions, returning its weights for inspection.

    ``qkv`` holds the three projections stacked by kind: rows [0, C) are the queries of all heads,
    [C, 2C) the keys, [2C, 3C) the values; within each kind head h owns rows [h*D, (h+1)*D).
    (The tutorial interleaves them per head instead; :mod:`wordformer.tasks.tutorial` converts.)
    """

    def __init__(self, model_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(model_dim, 3 * model_dim)
        self.proj = nn.Linear(model_dim, model_dim)
        # Xavier init with zero biases, as in the tutorial: its small-model results depend on it.
        for layer in (self.qkv, self.proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """x (B, T, C) -> (output (B, T, C), attention (B, H, T, T)); mask 0/False = key not attended."""
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, c // self.num_heads)  # (B, T, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)
        values, attention = scaled_dot_product(q, k, v, mask=mask)  # (B, H, T, D), (B, H, T, T)
        values = values.transpose(1, 2).reshape(b, t, c)  # (B, T, C)
        return self.proj(values), attention


class EncoderBlock(nn.Module):
    """Post-norm transformer block (as in the tutorial and Vaswani et al.): add, then normalise."""

    def __init__(self, model_dim: int, num_heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.attn = EncoderSelfAttention(model_dim, num_heads)
        self.ff = nn.Sequential(
            nn.Linear(model_dim, ff_dim),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(ff_dim, model_dim),
        )
        self.norm1 = nn.LayerNorm(model_dim)
        self.norm2 = nn.LayerNorm(model_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """x (B, T, C) -> (x (B, T, C), attention (B, H, T, T))."""
        attn_out, attention = self.attn(x, mask)
        x = self.norm1(x + self.dropout(attn_out))  # (B, T, C)
        x = self.norm2(x + self.dropout(self.ff(x)))  # (B, T, C)
        return x, attention


class EncoderPredictor(nn.Module):
    """Input net -> optional sinusoidal positions -> encoder blocks -> output net, one output per element."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        c = config.model_dim
        self.input_net = nn.Sequential(nn.Dropout(config.input_dropout), nn.Linear(config.input_dim, c))
        if config.positional_encoding:
            self.register_buffer("pe", sinusoidal_table(config.max_len, c), persistent=False)  # (L, C)
        else:
            self.pe = None
        self.blocks = nn.ModuleList(
            EncoderBlock(c, config.num_heads, config.ff_mult * c, config.dropout) for _ in range(config.num_layers)
        )
        self.output_net = nn.Sequential(
            nn.Linear(c, c),
            nn.LayerNorm(c),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(c, config.num_classes),
        )

    def _embed(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.size(-1) != self.config.input_dim:
            raise WordformerError(
                f"input of shape {tuple(x.shape)} does not fit the model: expected (batch, length, {self.config.input_dim})"
            )
        h = self.input_net(x)  # (B, T, C)
        if self.pe is not None:
            if x.size(1) > self.pe.size(0):
                raise WordformerError(
                    f"sequence length {x.size(1)} exceeds max_len={self.pe.size(0)}: raise max_len in EncoderConfig"
                )
            h = h + self.pe[: x.size(1)]  # (B, T, C)
        return h

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x (B, T, F) -> logits (B, T, K)."""
        h = self._embed(x)
        for block in self.blocks:
            h, _ = block(h, mask)
        return self.output_net(h)

    @torch.no_grad()
    def get_attention_maps(self, x: Tensor, mask: Optional[Tensor] = None) -> list[Tensor]:
        """Attention weights of every layer for input x (B, T, F): a list of (B, H, T, T)."""
        h = self._embed(x)
        maps = []
        for block in self.blocks:
            h, attention = block(h, mask)
            maps.append(attention)
        return maps
