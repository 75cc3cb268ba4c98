"""The decoder-only transformer word predictor, assembled from the chapter's pieces.

token ids -> token embedding + positional encoding -> N decoder blocks (masked self-attention and
feed-forward, each with a residual connection) -> output layer -> one logit per vocabulary token.
Shape legend: B = batch, T = tokens, C = d_model, V = vocabulary, H = heads.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .attention import KVCache
from .block import DecoderBlock
from .config import ModelConfig
from .embedding import OutputLayer, TokenEmbedding
from .errors import WordformerError
from .norms import make_norm
from .positional import RotaryPositionalEncoding, build_positional_encoding


class WordPredictor(nn.Module):
    """Predicts, at every position, a distribution over the next token."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise WordformerError(f"WordPredictor needs a ModelConfig, not {type(config).__name__}: e.g. "
                                  "WordPredictor(ModelConfig(vocab_size=1000))")
        self.config = config
        scale = math.sqrt(config.d_model) if config.positional == "sinusoidal" else 1.0  # see TokenEmbedding
        self.token_embedding = TokenEmbedding(config.vocab_size, config.d_model, scale=scale)
        self.positional_encoding = build_positional_encoding(config.positional, config.block_size, config.d_model,
                                                             head_size=config.head_size, rope_base=config.rope_base)
        self.rotary = isinstance(self.positional_encoding, RotaryPositionalEncoding)  # rotates q, k; adds nothing
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.num_layers))
        # pre-norm blocks leave the residual stream un-normalised, so GPT-2 adds one final norm
        self.final_norm = make_norm(config) if config.norm == "pre" else nn.Identity()
        tied = self.token_embedding if config.tie_weights else None
        self.output_layer = OutputLayer(config.d_model, config.vocab_size, tied_to=tied, softcap=config.logit_softcap)
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * layers); or start them at
        # zero (zero_init_residual), so every block begins as the identity and the stream is the embedding
        for block in self.blocks:
            for proj in (block.attention.out, block.feed_forward.down):
                if config.zero_init_residual:
                    nn.init.zeros_(proj.weight)
                else:
                    nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * config.num_layers))
        if config.zero_init_output:  # untied only (the config refuses it with tied weights): uniform first guesses
            nn.init.zeros_(self.output_layer.weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (TokenEmbedding, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def num_parameters(self, *, non_embedding: bool = False) -> int:
        """Parameter count; shared (tied) tensors count once."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.token_embedding.weight.numel()
            if not self.config.tie_weights:
                total -= self.output_layer.weight.numel()
        return total

    def embed(self, idx: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        """Token embedding plus positional encoding: (B, T) -> (B, T, C); with RoPE the embedding alone."""
        if self.rotary:
            return self.token_embedding(idx)
        if positions is None:
            positions = torch.arange(idx.size(1), device=idx.device)  # (T,)
        return self.token_embedding(idx) + self.positional_encoding(positions)

    def forward(
        self,
        idx: Tensor,
        *,
        cache: Optional[KVCache] = None,
        positions: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        return_attention: bool = False,
        fused: bool = True,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits (B, T, V) for token ids ``idx`` (B, T).

        Args:
            cache: KV cache for incremental decoding; ``idx`` then holds only the new tokens.
            positions: position of each token (T,) or (B, T); default 0.. or continuing the cache.
            key_padding_mask: (B, S) bool over all tokens seen (cache + new), False at padding.
            return_attention: also return each layer's attention weights (B, H, T, S).
            fused: use the fused attention kernel (the explicit path is used when weights are returned).
        """
        # shape and type only (no look at the values: that would cost a device sync every step)
        if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            got = f"a {idx.dim()}-D {idx.dtype} tensor" if isinstance(idx, Tensor) else type(idx).__name__
            raise WordformerError(f"the model reads token ids as a (batch, tokens) integer tensor, not {got}: e.g. "
                                  "torch.tensor([[1, 2, 3]])")
        t = idx.size(1)
        past = cache.length if cache is not None else 0
        if positions is None:
            if past + t > self.config.block_size:
                raise WordformerError(f"sequence of {past + t} tokens exceeds block_size={self.config.block_size}; "
                                      "give at most that many (generation keeps the last block_size tokens)")
            positions = torch.arange(past, past + t, device=idx.device)
        x = self.dropout(self.embed(idx, positions))  # (B, T, C)
        rotary = self.positional_encoding.angles(positions) if self.rotary else None  # once for every layer
        attentions: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            x, attention = block(
                x, cache=layer_cache, key_padding_mask=key_padding_mask, return_attention=return_attention, fused=fused,
                rotary=rotary,
            )
            if attention is not None:
                attentions.append(attention)
        logits = self.output_layer(self.final_norm(x))  # (B, T, V)
        return (logits, attentions) if return_attention else logits

    def new_cache(self, batch: int, *, max_len: Optional[int] = None) -> KVCache:
        p = self.token_embedding.weight
        return KVCache(self.config, batch, dtype=p.dtype, device=p.device, max_len=max_len)
