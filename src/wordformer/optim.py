"""Optimisers and their schedule: AdamW for everything, or Muon for the hidden matrices and AdamW for the rest.

Muon (Jordan et al. 2024, ``torch.optim.Muon``) keeps a momentum of each weight matrix's gradient and replaces it
by the nearest orthogonal matrix (a few Newton–Schulz iterations) before stepping: every direction of the
matrix moves by the same amount, so rarely used directions learn as fast as dominant ones. It is made for the
2-D matrices inside the blocks; the token embedding, the output layer, norms and biases stay with AdamW, as
torch's documentation says. Lightning steps, clips, schedules and checkpoints one optimiser, so both live in
:class:`MuonWithAdamW`, a single ``torch.optim.Optimizer``.

Queries, keys and values come from one fused (3C, C) matrix here. Orthogonalising it as a whole couples the
three maps (their updates share one set of singular values); the speedruns orthogonalise them as separate
(C, C) matrices, and ``muon_split_qkv`` (the default) does the same: :class:`Muon` updates the three row blocks
of the fused matrix exactly as ``torch.optim.Muon`` would update three separate matrices.
Shape legend: C = d_model, N = matrices in a batch.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor, nn

from .config import TrainConfig
from .schedule import learning_rate

__all__ = ["Muon", "MuonWithAdamW", "WarmupSchedule", "adamw_implementation", "build_optimizer", "build_scheduler",
           "hidden_matrices", "muon_momentum", "newton_schulz"]

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's defaults (Keller Jordan's quintic iteration)


def newton_schulz(g: Tensor, coefficients: tuple[float, float, float] = NS_COEFFICIENTS, steps: int = 5,
                  eps: float = 1e-7) -> Tensor:
    """An approximately orthogonal matrix near ``g`` (m, n), or a batch of them (N, m, n), in bfloat16.

    The same iteration as ``torch.optim.Muon`` (which accepts one matrix): scale to spectral norm <= 1, then
    X <- aX + (bA + cA^2)X with A = XX^T, on the wide orientation (m <= n). A batch runs every iteration as one
    batched matmul; that is what makes it cheaper on a CPU (see :class:`Muon`).
    """
    a, b, c = coefficients
    x = g.bfloat16()
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    if x.dim() == 2:
        x = x.div(x.norm().clamp(min=eps))
        for _ in range(steps):
            gram = x @ x.T  # (m, m)
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    else:
        x = x.div(x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps))  # (N, m, n), each matrix its own norm
        for _ in range(steps):
            gram = x @ x.mT  # (N, m, m)
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: Optional[str], shape: torch.Size) -> float:
    """torch.optim.Muon's per-shape learning rate: "original" sqrt(max(1, rows/cols)), or Moonshot's
    0.2 sqrt(max(rows, cols)) ("match_rms_adamw")."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` that also orthogonalises a fused matrix block by block, and can batch the work.

    A parameter group with ``split: k`` holds matrices made of ``k`` stacked row blocks (the fused q/k/v map,
    k = 3): each block gets its own Newton–Schulz and its own shape's learning rate, exactly what torch's Muon
    does to k separate matrices, while the momentum buffer stays one tensor per parameter (so checkpoints keep
    torch's layout). ``batch``: orthogonalise all matrices of one shape in one batched iteration instead of one
    after another (fewer, larger matmuls). Without split blocks or batching, torch's own ``step`` runs.
    """

    def __init__(self, params: Iterable[Any], *, batch: bool = False, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.batch = batch

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        if not self.batch and all(group.get("split", 1) == 1 for group in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        jobs: list[tuple[Tensor, Tensor, float]] = []  # (rows of a parameter, update of those rows, their lr)
        for group in self.param_groups:
            lr, momentum, wd = float(group["lr"]), group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(grad, 1 - momentum)  # torch.optim.Muon's order of operations, step for step
                update = grad.lerp(buf, momentum) if group["nesterov"] else buf
                p.mul_(1 - lr * wd)  # decoupled weight decay, scaled by the scheduled lr
                split = group.get("split", 1)
                for rows, part in zip(p.chunk(split, dim=0), update.chunk(split, dim=0)):
                    jobs.append((rows, part, adjusted_lr(lr, group["adjust_lr_fn"], rows.shape)))
        group0 = self.param_groups[0]
        ns = dict(coefficients=group0["ns_coefficients"], steps=group0["ns_steps"], eps=group0["eps"])
        if self.batch:
            by_shape: dict[tuple[int, int], list[int]] = {}
            for i, (_, part, _) in enumerate(jobs):
                wide = tuple(sorted(part.shape))  # a tall matrix is orthogonalised as its (wide) transpose
                by_shape.setdefault(wide, []).append(i)
            for indices in by_shape.values():
                stack = torch.stack([jobs[i][1] if jobs[i][1].size(0) <= jobs[i][1].size(1) else jobs[i][1].mT
                                     for i in indices])  # (N, m, n), m <= n
                ortho = newton_schulz(stack, **ns)
                for i, o in zip(indices, ortho):
                    rows, part, step_lr = jobs[i]
                    rows.add_(o if part.size(0) <= part.size(1) else o.mT, alpha=-step_lr)
        else:
            for rows, part, step_lr in jobs:
                rows.add_(newton_schulz(part, **ns), alpha=-step_lr)
        return loss


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon and AdamW as one optimiser: one ``step``, one ``zero_grad``, one state dict, all parameter groups.

    Both inner optimisers share this object's parameter groups (the very dicts) and its ``state``, so the
    learning-rate schedule, gradient clipping and Lightning's checkpointing see every parameter.
    """

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw
        super().__init__([*muon.param_groups, *adamw.param_groups], {})
        self._share()

    def _share(self) -> None:
        n = len(self.muon.param_groups)
        self.muon.param_groups, self.adamw.param_groups = self.param_groups[:n], self.param_groups[n:]
        self.muon.state = self.adamw.state = self.state

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:  # Lightning's closure: forward, backward, gradient clipping
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # replaces the group dicts and the state: share them again
        self._share()


def hidden_matrices(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The blocks' 2-D weight matrices (attention q/k/v and output, feed-forward up/gate/down): Muon's share."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError("Muon needs a model with decoder blocks (model.blocks)")
    return [(f"blocks.{name}", p) for name, p in blocks.named_parameters() if p.dim() == 2 and p.requires_grad]


def adamw_implementation(device_type: str, precision: str, grad_clip: float) -> dict[str, bool]:
    """Fused AdamW (one kernel for all parameters) on CUDA and CPU; the multi-tensor one under fp16 with clipping.

    Lightning refuses to clip the gradients of a fused optimizer under mixed precision; bf16 is clipped by the
    training module itself (``configure_gradient_clipping``), fp16 with its loss scaler needs ``foreach``.
    """
    if precision == "16-mixed" and grad_clip > 0:
        return {"foreach": True}
    return {"fused": True} if device_type in ("cuda", "cpu") else {}


def build_optimizer(model: nn.Module, cfg: TrainConfig, *, device_type: str = "cpu",
                    precision: str = "32-true") -> torch.optim.Optimizer:
    """AdamW over every parameter (``optimizer="adamw"``) or :class:`MuonWithAdamW` (``"muon"``).

    Weight decay goes on matrices (and embeddings) only; biases and norms are left alone. With Muon the hidden
    matrices decay by ``muon_weight_decay`` (decoupled, times the scheduled ``muon_lr``, as torch's Muon does).
    """
    params = [p for p in model.parameters() if p.requires_grad]  # tied tensors appear once
    impl = adamw_implementation(device_type, precision, cfg.grad_clip)
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adamw":
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, **impl)
    hidden = hidden_matrices(model)
    mine = {id(p) for _, p in hidden}
    qkv = [p for name, p in hidden if name.endswith("attention.qkv.weight")] if cfg.muon_split_qkv else []
    whole = [p for _, p in hidden if not any(p is q for q in qkv)]
    muon_groups = [{"params": whole, "split": 1, "muon": True}]
    if qkv:
        muon_groups.append({"params": qkv, "split": 3, "muon": True})
    # batch=True: one batched Newton-Schulz per matrix shape instead of one per matrix, about half the time on a
    # 2-core CPU at d_model 128 (9 vs 19 ms a step for 4 layers; BENCHMARKS.md, step cost), the same numbers
    muon = Muon(muon_groups, lr=cfg.muon_lr, momentum=cfg.muon_momentum, weight_decay=cfg.muon_weight_decay,
                nesterov=True, batch=True)
    rest = [p for p in params if id(p) not in mine]
    adamw_groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                    {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(adamw_groups, lr=cfg.lr, betas=betas, **impl)
    return MuonWithAdamW(muon, adamw)


def muon_momentum(step: int, *, start: float, end: float, warmup: int) -> float:
    """Muon's momentum at ``step``: linear from ``start`` to ``end`` over ``warmup`` steps (the speedruns' 0.85 ->
    0.95 over 300), then ``end``. A low momentum at first follows the fast-changing early gradients."""
    if warmup <= 0 or step >= warmup:
        return end
    return start + (end - start) * step / warmup


class WarmupSchedule(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` (every group's peak lr times one factor) that also warms up Muon's momentum.

    The momentum settings are plain numbers, so they are saved with the scheduler and a resumed run continues
    them exactly; groups marked ``muon`` get ``group["momentum"]`` for the coming step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr_lambda: Callable[[int], float], *,
                 momentum: Optional[tuple[float, float, int]] = None) -> None:
        self.momentum = momentum  # (start, end, warm-up steps), or None without Muon
        super().__init__(optimizer, lr_lambda)

    def step(self, epoch: Optional[int] = None) -> None:
        super().step(epoch)
        if self.momentum is not None:
            start, end, warmup = self.momentum
            value = muon_momentum(self.last_epoch, start=start, end=end, warmup=warmup)
            for group in self.optimizer.param_groups:
                if group.get("muon"):
                    group["momentum"] = value


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    rate: Optional[Callable[[int], float]] = None) -> WarmupSchedule:
    """Every group's lr follows ``rate`` (default: ``schedule.learning_rate`` of ``cfg``; a resume that changed
    ``max_steps`` passes its :class:`~wordformer.schedule.Schedule`'s) scaled to its own peak (``lr``, or
    ``muon_lr``)."""

    def factor(step: int) -> float:  # a closure, not an object: LambdaLR then saves none of its state
        if rate is not None:
            return rate(step) / cfg.lr
        return learning_rate(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps,
                             max_steps=cfg.max_steps, schedule=cfg.schedule,
                             cooldown_fraction=cfg.cooldown_fraction) / cfg.lr

    momentum = None
    if cfg.optimizer == "muon":
        momentum = (cfg.muon_momentum_start, cfg.muon_momentum, cfg.muon_momentum_warmup)
    return WarmupSchedule(optimizer, factor, momentum=momentum)
