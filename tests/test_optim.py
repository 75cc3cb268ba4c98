"""Optimisers and schedules: AdamW, Muon (torch.optim.Muon, split and batched), their parameter groups, the momentum
warm-up, the WSD schedule, and Lightning's loop around them (clipping, bf16)."""

from __future__ import annotations

import math

import pytest
import torch

from wordformer import ModelConfig, TrainConfig, WordPredictor, train
from wordformer.config import DataConfig
from wordformer.optim import (Muon, MuonWithAdamW, WarmupSchedule, build_optimizer, build_scheduler, hidden_matrices,
                              muon_momentum, newton_schulz)
from wordformer.schedule import learning_rate


def tiny_model(**options) -> WordPredictor:
    torch.manual_seed(0)
    return WordPredictor(ModelConfig(vocab_size=20, d_model=16, num_heads=2, num_layers=2, block_size=8, **options))


def backward(model: WordPredictor, seed: int = 0) -> None:
    x = torch.randint(0, 20, (3, 8), generator=torch.Generator().manual_seed(seed))
    loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(-1, 1).flatten())
    loss.backward()


# ------------------------------------------------------------------------------------------ Newton-Schulz and Muon


@pytest.mark.parametrize("shape", [(48, 16), (16, 16), (16, 64)])
def test_newton_schulz_is_torch_muons_iteration(shape):
    from torch.optim._muon import _zeropower_via_newtonschulz  # the reference: torch's own (private) function

    g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(newton_schulz(g), _zeropower_via_newtonschulz(g, (3.4445, -4.7750, 2.0315), 5, 1e-7))


def test_newton_schulz_makes_the_singular_values_near_one():
    g = torch.randn(32, 96, generator=torch.Generator().manual_seed(1))
    s = torch.linalg.svdvals(newton_schulz(g).float())
    assert 0.5 < float(s.min()) and float(s.max()) < 1.3  # the quintic's band, not exactly 1 (Jordan et al.)


def test_a_batch_of_matrices_is_orthogonalised_each_on_its_own():
    gen = torch.Generator().manual_seed(2)
    stack = torch.randn(5, 16, 40, generator=gen) * torch.tensor([1.0, 10.0, 0.1, 3.0, 7.0])[:, None, None]
    together = newton_schulz(stack)
    for i in range(5):
        torch.testing.assert_close(together[i].float(), newton_schulz(stack[i]).float(), rtol=0, atol=1e-2)


def test_splitting_the_fused_qkv_is_torch_muon_on_separate_q_k_v():
    """Block by block, bitwise what torch.optim.Muon does to three separate (C, C) matrices."""
    c = 16
    w = torch.randn(3 * c, c, generator=torch.Generator().manual_seed(3))
    fused = torch.nn.Parameter(w.clone())
    parts = [torch.nn.Parameter(w[i * c:(i + 1) * c].clone()) for i in range(3)]
    ours = Muon([{"params": [fused], "split": 3}], lr=0.02, weight_decay=0.1, momentum=0.9)
    torchs = torch.optim.Muon(parts, lr=0.02, weight_decay=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(4)
    for _ in range(4):
        g = torch.randn(3 * c, c, generator=gen)
        fused.grad = g.clone()
        for i, p in enumerate(parts):
            p.grad = g[i * c:(i + 1) * c].clone()
        ours.step()
        torchs.step()
    assert torch.equal(fused.data, torch.cat([p.data for p in parts]))
    whole = torch.nn.Parameter(w.clone())  # and orthogonalising the fused matrix as one is something else
    one = Muon([whole], lr=0.02, weight_decay=0.1, momentum=0.9)
    whole.grad = g.clone()
    one.step()
    assert not torch.allclose(whole.data, w - 0.02 * 0.1 * w - 0.02 * torch.cat(
        [newton_schulz(g[i * c:(i + 1) * c]).float() for i in range(3)]), atol=1e-4)


def test_batched_newton_schulz_gives_the_same_steps_as_one_matrix_at_a_time():
    shapes = [(48, 16), (16, 16), (64, 16), (16, 64), (16, 16)]
    gen = torch.Generator().manual_seed(5)
    a = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    b = [torch.nn.Parameter(p.data.clone()) for p in a]
    batched = Muon([{"params": a[:1], "split": 3}, {"params": a[1:]}], lr=0.05, batch=True)
    plain = Muon([{"params": b[:1], "split": 3}, {"params": b[1:]}], lr=0.05, batch=False)
    for _ in range(3):
        for p, q in zip(a, b):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        batched.step()
        plain.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p.data, q.data, rtol=0, atol=1e-6)


def test_without_split_or_batching_the_step_is_torch_muons_own():
    gen = torch.Generator().manual_seed(6)
    p = torch.nn.Parameter(torch.randn(24, 8, generator=gen))
    q = torch.nn.Parameter(p.data.clone())
    ours, torchs = Muon([p], lr=0.03, weight_decay=0.05), torch.optim.Muon([q], lr=0.03, weight_decay=0.05)
    for _ in range(3):
        p.grad = torch.randn(24, 8, generator=gen)
        q.grad = p.grad.clone()
        ours.step()
        torchs.step()
    assert torch.equal(p.data, q.data)


# ------------------------------------------------------------------------------------------ parameter groups


def test_muon_gets_the_hidden_matrices_and_adamw_everything_else():
    model = tiny_model(tie_weights=False, activation="swiglu", qk_norm=True, positional="learned")
    opt = build_optimizer(model, TrainConfig(optimizer="muon", muon_split_qkv=True))
    assert isinstance(opt, MuonWithAdamW)
    muon_params = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = sorted(names[i] for i in muon_params)
    assert muon_names == sorted(n for n, p in model.named_parameters()
                                if n.startswith("blocks.") and p.dim() == 2)
    assert any(n.endswith("feed_forward.gate.weight") for n in muon_names)
    adamw_names = sorted(names[id(p)] for g in opt.adamw.param_groups for p in g["params"])
    for must in ("token_embedding.weight", "output_layer.weight", "positional_encoding.table.weight",
                 "final_norm.weight", "blocks.0.attention.q_norm.weight", "blocks.0.attention.qkv.bias"):
        assert must in adamw_names
    assert len(muon_params) + len(adamw_names) == len(list(model.parameters()))
    split = [g for g in opt.muon.param_groups if g["split"] == 3][0]
    assert [names[id(p)] for p in split["params"]] == ["blocks.0.attention.qkv.weight", "blocks.1.attention.qkv.weight"]
    decay = {names[id(p)]: g["weight_decay"] for g in opt.adamw.param_groups for p in g["params"]}
    assert decay["token_embedding.weight"] == 0.1 and decay["final_norm.weight"] == 0.0


def test_muon_can_orthogonalise_the_fused_qkv_as_one_matrix():
    opt = build_optimizer(tiny_model(), TrainConfig(optimizer="muon", muon_split_qkv=False))
    assert [g["split"] for g in opt.muon.param_groups] == [1]


def test_hidden_matrices_need_a_model_with_blocks():
    with pytest.raises(ValueError, match="blocks"):
        hidden_matrices(torch.nn.Linear(2, 2))


def test_adamw_stays_the_default_with_todays_groups():
    opt = build_optimizer(tiny_model(), TrainConfig())
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 2


def test_one_step_moves_every_parameter_with_its_own_optimizer():
    model = tiny_model(tie_weights=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, TrainConfig(optimizer="muon", lr=1e-2, muon_lr=0.05))
    backward(model)
    opt.step()
    for n, p in model.named_parameters():
        assert not torch.equal(before[n], p.detach()), n
    w0, w1 = before["blocks.0.attention.out.weight"], model.blocks[0].attention.out.weight.detach()
    # Muon's update of a (C, C) matrix is near-orthogonal with step lr: its singular values are about lr (those of
    # directions the small batch's gradient hardly has stay smaller: 5 iterations amplify them only so far)
    s = torch.linalg.svdvals(w0 - w1)
    assert float(s.max()) < 0.05 * 1.3 and float(s.median()) > 0.05 * 0.4


def test_muon_weight_decay_is_decoupled_and_scaled_by_the_scheduled_lr():
    model = tiny_model()
    opt = build_optimizer(model, TrainConfig(optimizer="muon", muon_lr=0.02, muon_weight_decay=0.5))
    p = model.blocks[0].feed_forward.up.weight
    p.grad = torch.zeros_like(p)  # no gradient: only the decay acts
    w = p.detach().clone()
    opt.muon.param_groups[0]["lr"] = 0.01  # as a schedule would have set it
    for group in opt.param_groups:
        for q in group["params"]:
            if q is not p and q.grad is None:
                q.grad = torch.zeros_like(q)
    opt.step()
    torch.testing.assert_close(p.detach(), w * (1 - 0.01 * 0.5) - 0.01 * 2 * newton_schulz(torch.zeros_like(w)).float())


def test_the_combined_state_dict_round_trips():
    model = tiny_model()
    cfg = TrainConfig(optimizer="muon")
    opt = build_optimizer(model, cfg)
    backward(model)
    opt.step()
    saved = opt.state_dict()
    fresh = build_optimizer(model, cfg)
    fresh.load_state_dict(saved)
    assert fresh.muon.state is fresh.state and fresh.adamw.state is fresh.state
    assert fresh.muon.param_groups[0] is fresh.param_groups[0]
    for p in model.parameters():
        for key, value in opt.state[p].items():
            assert torch.equal(fresh.state[p][key], value), key


# ------------------------------------------------------------------------------------------ schedules


def test_wsd_warms_up_holds_then_decays_linearly_over_the_cooldown():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=100, schedule="wsd", cooldown_fraction=0.2)
    assert [learning_rate(s, **kw) for s in range(10)] == [learning_rate(s, lr=1.0, min_lr=0.1, warmup_steps=10,
                                                                          max_steps=100) for s in range(10)]
    assert all(learning_rate(s, **kw) == 1.0 for s in range(10, 81))
    assert learning_rate(90, **kw) == pytest.approx(0.55)
    assert learning_rate(99, **kw) == pytest.approx(1.0 - 0.9 * 19 / 20)
    assert learning_rate(100, **kw) == 0.1
    decay = [learning_rate(s, **kw) for s in range(80, 101)]
    assert decay == sorted(decay, reverse=True)
    assert max(abs((a - b) - (decay[0] - decay[1])) for a, b in zip(decay[:-2], decay[1:-1])) < 1e-12  # linear


def test_wsd_never_decays_during_the_warm_up():
    kw = dict(lr=1.0, min_lr=0.0, warmup_steps=90, max_steps=100, schedule="wsd", cooldown_fraction=0.5)
    assert learning_rate(89, **kw) == pytest.approx(90 / 91) and learning_rate(90, **kw) == 1.0
    assert learning_rate(95, **kw) == pytest.approx(0.5)


def test_muon_momentum_warms_up_linearly():
    assert muon_momentum(0, start=0.85, end=0.95, warmup=300) == 0.85
    assert muon_momentum(150, start=0.85, end=0.95, warmup=300) == pytest.approx(0.90)
    assert muon_momentum(300, start=0.85, end=0.95, warmup=300) == 0.95
    assert muon_momentum(5, start=0.85, end=0.95, warmup=0) == 0.95


def test_the_scheduler_sets_every_groups_lr_and_muons_momentum_per_step():
    model = tiny_model()
    cfg = TrainConfig(optimizer="muon", lr=2e-3, min_lr=2e-4, muon_lr=0.02, warmup_steps=4, max_steps=20,
                      schedule="wsd", muon_momentum_start=0.8, muon_momentum=0.9, muon_momentum_warmup=10)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    assert isinstance(sched, WarmupSchedule)
    for step in range(20):
        factor = learning_rate(step, lr=1.0, min_lr=0.1, warmup_steps=4, max_steps=20, schedule="wsd")
        for group in opt.param_groups:
            peak = 0.02 if group.get("muon") else 2e-3
            assert group["lr"] == pytest.approx(peak * factor), step
            if group.get("muon"):
                assert group["momentum"] == pytest.approx(0.8 + 0.1 * min(step, 10) / 10)
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert state["momentum"] == (0.8, 0.9, 10) and state["last_epoch"] == 20


# ------------------------------------------------------------------------------------------ in Lightning's loop


class _Probe:
    """Gradient norm at every optimizer step (after Lightning clipped it) and the optimizer's type."""

    def __init__(self) -> None:
        import lightning as L

        self.norms: list[float] = []
        self.kind = ""
        probe = self

        class Callback(L.Callback):
            def on_train_start(self, trainer, module) -> None:
                opt = trainer.optimizers[0]
                probe.kind = type(opt).__name__

                def after(optimizer, *_):
                    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                    probe.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

                opt.register_step_post_hook(after)

        self.callback = Callback()


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_muon_trains_in_lightning_with_clipping_in_float32_and_bf16(small_text, tmp_path, precision):
    probe = _Probe()
    model = ModelConfig(d_model=16, num_heads=2, num_layers=1, block_size=8, positional="rope")
    cfg = TrainConfig(max_steps=6, batch_size=4, eval_interval=6, eval_batches=2, warmup_steps=2, progress=False,
                      optimizer="muon", schedule="wsd", grad_clip=1e-3, precision=precision)
    result = train(model, DataConfig(data=str(small_text)), cfg, tmp_path / "run", callbacks=[probe.callback],
                   logger=False)
    assert result.steps == 6 and math.isfinite(result.val_loss)
    assert probe.kind == "MuonWithAdamW"
    assert len(probe.norms) == 6 and max(probe.norms) <= 1e-3 * (1 + 1e-3)


def test_muon_lowers_the_loss(small_text, tmp_path):
    model = ModelConfig(d_model=16, num_heads=2, num_layers=1, block_size=8)
    cfg = TrainConfig(max_steps=40, batch_size=8, eval_interval=40, eval_batches=2, warmup_steps=5, progress=False,
                      optimizer="muon", lr=3e-3, muon_lr=0.02)
    result = train(model, DataConfig(data=str(small_text)), cfg, tmp_path / "run", logger=False)
    assert result.val_loss < math.log(30) - 0.3  # clearly below a uniform guess over the ~30-word vocabulary (3.40)
