"""Masked (causal) multi-head self-attention, built on the chapter's ``scaled_dot_product``.

Shape legend: B = batch, T = query tokens, S = key tokens, H = heads, D = head size, C = d_model.

The chapter's seven steps map onto this module as follows:
  1-2, 5. queries, keys and values are linear maps of each token's vector       -> ``project_qkv``
          (then, as options, each head's queries and keys are RMS-normalised    -> ``normalize_qk``
          and rotated by their positions, RoPE                                  -> ``positional.rotate``)
  3.      dot product of each query with every key (scaled by 1/sqrt(D), or
          ``attn_scale``)                                                       -> ``scaled_dot_product``
  4.      softmax over the keys the mask allows                                 -> ``scaled_dot_product``
  6-7.    weight the values by the softmax and sum them                         -> ``scaled_dot_product``

Two paths compute the same math: the explicit one (returns the attention weights, for explanations and
plots) and the fused ``torch.nn.functional.scaled_dot_product_attention`` (for training and generation).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .norms import make_qk_norm
from .positional import rotate


def scaled_dot_product(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None, *,
                       scale: Optional[float] = None) -> tuple[Tensor, Tensor]:
    """Attention of every query over the keys: ``softmax(q k^T / sqrt(d_k)) v``.

    Args:
        q: queries (..., T, D); k: keys (..., S, D); v: values (..., S, D).
        mask: broadcastable to (..., T, S); positions where it is 0/False are not attended to.
        scale: factor on the dot products instead of 1/sqrt(d_k) (``ModelConfig.attn_scale``).
    Returns:
        ``(values, attention)``: the weighted sums (..., T, D) and the softmax weights (..., T, S).
    """
    d_k = q.size(-1)
    if scale is None:
        attn_logits = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d_k)  # steps 3: (..., T, S)
    else:
        attn_logits = torch.matmul(q, k.transpose(-2, -1)) * scale  # step 3 with the configured factor
    if mask is not None:
        # The most negative finite number rather than -inf: a row with every key masked (a pad query)
        # becomes uniform instead of NaN, and exp(min - max) is exactly 0 for masked keys otherwise.
        attn_logits = attn_logits.masked_fill(mask == 0, torch.finfo(attn_logits.dtype).min)
    attention = F.softmax(attn_logits, dim=-1)  # step 4
    values = torch.matmul(attention, v)  # steps 6-7: (..., T, D)
    return values, attention


def causal_mask(num_queries: int, num_keys: Optional[int] = None, device: Optional[torch.device] = None) -> Tensor:
    """Boolean (T, S) mask: query i may look at key j when j <= i + (S - T).

    With S > T the queries are the last T of S tokens (the earlier keys come from a KV cache).
    """
    num_keys = num_queries if num_keys is None else num_keys
    offset = num_keys - num_queries
    q_pos = torch.arange(num_queries, device=device)[:, None] + offset
    k_pos = torch.arange(num_keys, device=device)[None, :]
    return k_pos <= q_pos  # (T, S)


class LayerKVCache:
    """Keys and values of one attention layer for the tokens seen so far, preallocated to ``max_len``."""

    def __init__(self, batch: int, heads: int, max_len: int, head_size: int, *, dtype: torch.dtype, device: torch.device):
        self.keys = torch.zeros(batch, heads, max_len, head_size, dtype=dtype, device=device)  # (B, H, L, D)
        self.values = torch.zeros_like(self.keys)
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new keys/values (B, H, T, D) and return all keys/values so far (B, H, S, D)."""
        t = k.size(2)
        end = self.length + t
        if end > self.keys.size(2):
            raise ValueError(f"KV cache overflow: {end} tokens > capacity {self.keys.size(2)}")
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """One :class:`LayerKVCache` per decoder block, used by incremental generation."""

    def __init__(self, config: ModelConfig, batch: int, *, dtype: torch.dtype, device: torch.device, max_len: Optional[int] = None):
        max_len = config.block_size if max_len is None else max_len
        self.layers = [
            LayerKVCache(batch, config.num_heads, max_len, config.head_size, dtype=dtype, device=device)
            for _ in range(config.num_layers)
        ]

    @property
    def length(self) -> int:
        return self.layers[0].length


def fused_attention(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
    """``F.scaled_dot_product_attention``, in float32 when bf16/fp16 tensors are on a CPU.

    Why: on CPU torch's fused attention kernel runs its backward pass about 4x slower in bf16 than in float32
    (torch 2.13, measured at the benchmark sizes), which took away most of what bf16 matmuls gain. Attention
    is a small share of the FLOPs, so computing it in float32 costs little and is at least as accurate; the
    linear layers around it stay in low precision.
    """
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class MultiHeadSelfAttention(nn.Module):
    """Masked self-attention with ``num_heads`` heads of size ``d_model // num_heads``.

    One linear layer computes queries, keys and values for all heads at once (the "NN" of steps 1, 2
    and 5); a second one mixes the heads' outputs back into ``d_model``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_size = config.head_size
        self.dropout = config.dropout
        self.scale = config.attn_scale  # None: 1/sqrt(D)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.q_norm = make_qk_norm(config)  # identity unless qk_norm
        self.k_norm = make_qk_norm(config)
        self.out = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.out_dropout = nn.Dropout(config.dropout)

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values per head, each (B, H, T, D) — the chapter's steps 1, 2 and 5."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)  # 3 x (B, T, C)
        shape = (b, t, self.num_heads, self.head_size)
        return tuple(z.view(shape).transpose(1, 2) for z in (q, k, v))  # type: ignore[return-value]

    def normalize_qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """QK-norm: each head's queries and keys (B, H, T, D) RMS-normalised over D (unchanged when off)."""
        return self.q_norm(q), self.k_norm(k)

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
        """Attend causally over ``x`` (B, T, C), plus any cached earlier tokens.

        Args:
            cache: this layer's KV cache; the new keys/values are appended to it (keys already rotated).
            rotary: RoPE's (cos, sin) for the new tokens' positions, (T, D/2) or (B, 1, T, D/2).
            key_padding_mask: (B, S) bool, False for padding tokens that no query may attend to.
            return_attention: also return the weights (B, H, T, S); forces the explicit path.
            fused: use ``F.scaled_dot_product_attention`` when no weights are asked for.
        Returns:
            ``(output (B, T, C), attention or None)``.
        """
        b, t, c = x.shape
        q, k, v = self.project_qkv(x)  # (B, H, T, D)
        q, k = self.normalize_qk(q, k)
        if rotary is not None:
            q, k = rotate(q, *rotary), rotate(k, *rotary)  # positions enter here, as rotations
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, S, D)
        s = k.size(2)

        mask: Optional[Tensor] = None
        needs_mask = key_padding_mask is not None or (s != t and t > 1)
        if needs_mask or return_attention or not fused:
            mask = causal_mask(t, s, device=x.device)  # (T, S)
            if key_padding_mask is not None:
                # padding keys are hidden from every query; a padding query still sees itself, so no row
                # is empty (an all-masked row would make the fused kernel return NaN)
                own = torch.arange(s, device=x.device)[None, :] == (torch.arange(t, device=x.device)[:, None] + s - t)
                mask = (mask & key_padding_mask[:, None, None, :]) | own  # (B, 1, T, S)

        attention: Optional[Tensor] = None
        dropout_p = self.dropout if self.training else 0.0
        if return_attention or not fused:
            y, attention = scaled_dot_product(q, k, v, mask, scale=self.scale)  # (B, H, T, D), (B, H, T, S)
            if dropout_p > 0:
                y = torch.matmul(F.dropout(attention, dropout_p), v)
        elif mask is None:
            # no cache and no padding: the plain causal case (t == s), or one new token that sees all keys
            y = fused_attention(q, k, v, dropout_p=dropout_p, is_causal=(t == s and t > 1), scale=self.scale)
        else:
            y = fused_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale)
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # concatenate heads: (B, T, C)
        return self.out_dropout(self.out(y)), attention
