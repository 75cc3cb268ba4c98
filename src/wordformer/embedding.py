"""Token embedding (one input per vocabulary token -> a d_model vector) and the output layer.

The chapter notes that a decoder can reuse the embedding network for its output, "run in the opposite
direction": the output layer's weight matrix is then the embedding matrix itself (weight tying).
Shape legend: B = batch, T = tokens, C = d_model, V = vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TokenEmbedding(nn.Module):
    """A lookup table, equivalent to a linear layer applied to one-hot token vectors.

    ``scale`` multiplies the looked-up vectors. With fixed sinusoidal positions (values up to 1) and small
    initial embeddings (std 0.02), the position would drown the token and training stalls at the unigram
    loss; Vaswani et al. (section 3.4) scale the embedding by sqrt(d_model), and so does the model here.
    """

    def __init__(self, vocab_size: int, d_model: int, *, scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, d_model) * 0.02)  # (V, C)
        self.scale = scale

    def forward(self, idx: Tensor) -> Tensor:
        vectors = self.weight[idx]  # (B, T) -> (B, T, C)
        return vectors if self.scale == 1.0 else vectors * self.scale


class OutputLayer(nn.Module):
    """From the residual stream to one logit per vocabulary token.

    ``tied_to`` shares the embedding matrix: logits = x @ E^T, the embedding run backwards. ``softcap`` > 0
    bounds the logits smoothly to (-softcap, softcap) with ``softcap * tanh(logits / softcap)`` (Gemma 2, the
    speedruns): the model cannot grow its confidence by inflating logits, which steadies early training.
    """

    def __init__(self, d_model: int, vocab_size: int, *, tied_to: TokenEmbedding | None = None, bias: bool = False,
                 softcap: float = 0.0):
        super().__init__()
        self.softcap = softcap
        self.tied = tied_to is not None
        if tied_to is not None:
            self.weight = tied_to.weight  # weight tying: one (V, C) matrix for both directions
        else:
            self.weight = nn.Parameter(torch.randn(vocab_size, d_model) * 0.02)  # (V, C)
        self.bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        logits = x @ self.weight.t()  # (B, T, C) @ (C, V) -> (B, T, V)
        if self.bias is not None:
            logits = logits + self.bias
        if self.softcap > 0:  # in float32: tanh of bf16 logits would lose the small differences that matter
            logits = self.softcap * torch.tanh(logits.float() / self.softcap)
        return logits
