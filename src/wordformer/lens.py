"""What each layer would predict (the logit lens), what a head contributes (head ablation), and the
next-token distribution as sampling shapes it.

* :func:`logit_lens` reads the residual stream after the embedding and after every decoder block and sends
  it through the model's own final norm and output layer, as if the model stopped there. The last stage is
  the model's real output.
* Head ablation switches heads off: their step-7 sums (the masked self-attention values) are set to zero
  before the attention output projection mixes the heads, so everything else the model computes stays as it
  is. :func:`ablated_heads` does it for any forward pass; :func:`head_ablation` compares the predictions.
* :func:`sampling_distribution` applies temperature, top-k and top-p together, with the same
  ``filter_logits`` generation uses, and reports the full, the kept and the renormalised probabilities.

Shape legend: T = tokens, C = d_model, V = vocabulary, L = layers, H = heads, D = head size.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import WordformerError
from .generation import check_sampling, filter_logits, suppress
from .model import WordPredictor

__all__ = [
    "AblationResult", "LensResult", "SamplingDistribution", "ablated_heads", "check_heads", "head_ablation",
    "logit_lens", "sampling_distribution",
]

Head = tuple[int, int]  # (layer, head)


def check_heads(model: WordPredictor, heads: Iterable[Sequence[int]]) -> list[Head]:
    """``(layer, head)`` pairs, each inside the model, sorted and without repeats; anything else is one clear error."""
    cfg = model.config
    checked: set[Head] = set()
    for pair in heads:
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or any(isinstance(x, bool) or not isinstance(x, int) for x in pair)):
            raise WordformerError(f"a head to switch off is a pair [layer, head] of integers, not {pair!r}")
        layer, head = int(pair[0]), int(pair[1])
        if not (0 <= layer < cfg.num_layers and 0 <= head < cfg.num_heads):
            raise WordformerError(f"head [{layer}, {head}] does not exist: the model has layers 0..{cfg.num_layers - 1} "
                                  f"and heads 0..{cfg.num_heads - 1}")
        checked.add((layer, head))
    return sorted(checked)


@contextmanager
def ablated_heads(model: WordPredictor, heads: Iterable[Sequence[int]]) -> Iterator[list[Head]]:
    """Within the block, forward passes run with ``heads`` switched off (their step-7 sums set to zero).

    A forward pre-hook on each affected layer's output projection zeroes the head's D channels of the
    concatenated head outputs (B, T, C): the head's attention weights are still computed (and returned with
    ``return_attention``), but nothing of it reaches the residual stream. Works with the fused kernel and the
    KV cache alike. The hooks are removed on leaving, even after an error.
    """
    checked = check_heads(model, heads)
    d = model.config.head_size
    by_layer: dict[int, list[int]] = {}
    for layer, head in checked:
        by_layer.setdefault(layer, []).append(head)
    handles = []

    def zero_heads(off: list[int]) -> Any:
        def hook(module: Any, args: tuple[Any, ...]) -> tuple[Tensor]:
            y = args[0].clone()  # (B, T, C): the heads' sums side by side
            for h in off:
                y[..., h * d:(h + 1) * d] = 0.0
            return (y,)
        return hook

    try:
        for layer, off in by_layer.items():
            handles.append(model.blocks[layer].attention.out.register_forward_pre_hook(zero_heads(off)))
        yield checked
    finally:
        for handle in handles:
            handle.remove()


def _checked_ids(model: WordPredictor, ids: Sequence[int]) -> list[int]:
    ids = [int(i) for i in ids]
    cfg = model.config
    if not ids:
        raise WordformerError("nothing to look at: the sequence has no tokens")
    if len(ids) > cfg.block_size:
        raise WordformerError(f"the prompt has {len(ids)} tokens but the model reads at most block_size={cfg.block_size}; "
                              "shorten it")
    bad = [i for i in ids if not 0 <= i < cfg.vocab_size]
    if bad:
        raise WordformerError(f"token id(s) {bad[:5]} outside the model's vocabulary 0..{cfg.vocab_size - 1}")
    return ids


@dataclass
class LensResult:
    """The residual stream at every stage, read through the final norm and output layer."""

    stages: list[str]  # "embedding", "layer 0", ..., "layer L-1" (S = L + 1 stages)
    residual: Tensor  # (S, T, C) the residual stream after each stage
    logits: Tensor  # (S, T, V) final_norm + output layer applied to it; the last stage is the model's output
    probabilities: Tensor  # (S, T, V) softmax of the logits with the banned ids at 0


@torch.no_grad()
def logit_lens(model: WordPredictor, ids: Sequence[int], *, banned: Sequence[int] = (),
               ablate: Iterable[Sequence[int]] = ()) -> LensResult:
    """Logit lens over ``ids`` (one sequence, at most ``block_size`` tokens), with ``ablate`` heads switched off.

    ``banned`` ids (``<pad>``, see :func:`wordformer.generation.never_generated`) get probability 0, as in
    generation. The stages are the embedding (token embedding + positional encoding) and each block's output.
    """
    ids = _checked_ids(model, ids)
    was_training = model.training
    model.eval()
    device = model.token_embedding.weight.device
    x_ids = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    captured: list[Tensor] = []
    handles = [model.blocks[0].register_forward_pre_hook(lambda m, a: captured.append(a[0][0].detach()))]
    handles += [block.register_forward_hook(lambda m, a, out: captured.append(out[0][0].detach()))
                for block in model.blocks]
    try:
        with ablated_heads(model, ablate):
            final = model(x_ids)[0]  # (T, V)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    residual = torch.stack(captured).float()  # (S, T, C)
    logits = model.output_layer(model.final_norm(residual)).float()  # (S, T, V)
    logits[-1] = final.float()  # the model's own numbers for the last stage (identical up to rounding)
    probabilities = F.softmax(suppress(logits, list(banned)), dim=-1)
    stages = ["embedding"] + [f"layer {i}" for i in range(model.config.num_layers)]
    return LensResult(stages, residual.cpu(), logits.cpu(), probabilities.cpu())


@dataclass
class AblationResult:
    """The next-token distribution at one position with all heads on and with some switched off."""

    heads: list[Head]
    position: int
    before: Tensor  # (V,) probabilities with every head on
    after: Tensor  # (V,) probabilities with ``heads`` off
    kl_divergence: float  # KL(before || after) in nats: how much the prediction changed

    @property
    def changed_top(self) -> bool:
        return int(self.before.argmax()) != int(self.after.argmax())


@torch.no_grad()
def head_ablation(model: WordPredictor, ids: Sequence[int], heads: Iterable[Sequence[int]], *,
                  position: int = -1, banned: Sequence[int] = ()) -> AblationResult:
    """How the prediction after token ``position`` changes when ``heads`` are switched off."""
    ids = _checked_ids(model, ids)
    if isinstance(position, bool) or not isinstance(position, int) or not -len(ids) <= position < len(ids):
        raise WordformerError(f"position {position!r} is out of range: the prompt has {len(ids)} tokens")
    position %= len(ids)
    was_training = model.training
    model.eval()
    device = model.token_embedding.weight.device
    x_ids = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    try:
        before_logits = model(x_ids)[0, position].float()  # (V,)
        with ablated_heads(model, heads) as checked:
            after_logits = model(x_ids)[0, position].float()  # (V,)
    finally:
        model.train(was_training)
    before = F.softmax(suppress(before_logits, list(banned)), dim=-1)
    after = F.softmax(suppress(after_logits, list(banned)), dim=-1)
    keep = before > 0
    kl = float((before[keep] * (before[keep].log() - after[keep].clamp_min(1e-45).log())).sum())
    return AblationResult(checked, position, before.cpu(), after.cpu(), max(0.0, kl))


@dataclass
class SamplingDistribution:
    """One next-token distribution before and after temperature, top-k and top-p."""

    probabilities: Tensor  # (V,) softmax of the logits at temperature 1 (banned ids at 0)
    tempered: Tensor  # (V,) softmax(logits / temperature): what temperature alone does (greedy: one-hot)
    kept: Tensor  # (V,) bool: the tokens sampling may still pick after top-k and top-p
    renormalised: Tensor  # (V,) the distribution sampling draws from (0 outside ``kept``)
    entropy: float  # of ``renormalised``, in nats
    entropy_bits: float
    entropy_before: float  # of ``probabilities``, in nats

    def to_dict(self) -> dict[str, Any]:
        return {"probabilities": self.probabilities.tolist(), "tempered": self.tempered.tolist(),
                "kept": self.kept.tolist(), "renormalised": self.renormalised.tolist(), "entropy": self.entropy,
                "entropy_bits": self.entropy_bits, "entropy_before": self.entropy_before}


def _entropy(p: Tensor) -> float:
    nz = p[p > 0].double()
    return max(0.0, float(-(nz * nz.log()).sum()))


def sampling_distribution(logits: Tensor, *, temperature: float = 1.0, top_k: Optional[int] = None,
                          top_p: Optional[float] = None, banned: Sequence[int] = ()) -> SamplingDistribution:
    """What :func:`wordformer.generation.next_token` draws from for (V,) ``logits``, step by step.

    The steps are generation's own: banned ids to -inf, logits shifted and divided by the temperature,
    ``filter_logits`` for top-k and top-p, softmax. ``temperature <= 0`` is greedy: only the most likely
    token is kept (probability 1).
    """
    check_sampling(temperature, top_k, top_p, 0)
    if not isinstance(logits, Tensor) or logits.dim() != 1:
        raise WordformerError("sampling_distribution reads one position's logits, a (V,) tensor")
    raw = suppress(logits.detach().double().cpu(), list(banned))  # (V,)
    probabilities = F.softmax(raw, dim=-1)
    if temperature <= 0:
        kept = torch.zeros_like(raw, dtype=torch.bool)
        kept[int(raw.argmax())] = True
        tempered = kept.double()
        renormalised = kept.double()
    else:
        scaled = (raw - raw.max()) / temperature
        tempered = F.softmax(scaled, dim=-1)
        filtered = filter_logits(scaled[None], top_k=top_k, top_p=top_p)[0]
        kept = torch.isfinite(filtered)
        renormalised = F.softmax(filtered, dim=-1)
    h = _entropy(renormalised)
    return SamplingDistribution(probabilities.float(), tempered.float(), kept, renormalised.float(), h,
                                h / math.log(2), _entropy(probabilities))
