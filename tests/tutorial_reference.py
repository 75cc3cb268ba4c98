"""A fresh reference of the tutorial 6 TransformerPredictor layout (same state_dict names, per-head qkv), and
checkpoints written the way the tutorial's Lightning 1.x wrote them: the task tests import these."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn


# --------------------------------------------------------------------------------------------------
class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        d = c // self.heads
        qkv = self.qkv_proj(x).reshape(b, t, self.heads, 3 * d).permute(0, 2, 1, 3)  # per head: [q | k | v]
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        return self.o_proj((weights @ v).permute(0, 2, 1, 3).reshape(b, t, c))


class RefLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = RefAttention(dim, heads)
        self.linear_net = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Dropout(0.0), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear_net(x))


class RefEncoder(nn.Module):
    def __init__(self, layers: int, dim: int, heads: int):
        super().__init__()
        self.layers = nn.ModuleList(RefLayer(dim, heads) for _ in range(layers))


class RefPredictor(nn.Module):
    def __init__(self, input_dim: int, model_dim: int, num_classes: int, num_heads: int, num_layers: int):
        super().__init__()
        self.input_net = nn.Sequential(nn.Dropout(0.0), nn.Linear(input_dim, model_dim))
        self.transformer = RefEncoder(num_layers, model_dim, num_heads)
        self.output_net = nn.Sequential(
            nn.Linear(model_dim, model_dim), nn.LayerNorm(model_dim), nn.ReLU(), nn.Dropout(0.0), nn.Linear(model_dim, num_classes)
        )
        with torch.no_grad():  # random everything, biases and norms included, so every mapping matters
            for p in self.parameters():
                p.normal_(0.0, 0.4)

    def forward(self, x, positional: bool):
        h = self.input_net(x)
        if positional:
            t, c = h.shape[1], h.shape[2]
            pos = torch.arange(t, dtype=torch.float32)[:, None]
            freq = torch.exp(-math.log(10000.0) * torch.arange(0, c, 2, dtype=torch.float32) / c)
            pe = torch.zeros(t, c)
            pe[:, 0::2] = torch.sin(pos * freq)
            pe[:, 1::2] = torch.cos(pos * freq)
            h = h + pe
        for layer in self.transformer.layers:
            h = layer(h)
        return self.output_net(h)


def tutorial_checkpoint(path: Path, ref: RefPredictor, hparams: dict, **extra) -> Path:
    torch.save(
        {"epoch": 9, "global_step": 3900, "pytorch-lightning_version": "1.5.0", "state_dict": ref.state_dict(),
         "hyper_parameters": hparams, **extra},
        path,
    )
    return path


def tutorial_hparams(input_dim: int, model_dim: int, num_classes: int, num_heads: int, num_layers: int) -> dict:
    return dict(input_dim=input_dim, model_dim=model_dim, num_classes=num_classes, num_heads=num_heads,
                num_layers=num_layers, lr=5e-4, warmup=50, max_iters=3900, dropout=0.0, input_dropout=0.0)
