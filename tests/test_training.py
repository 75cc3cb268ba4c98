"""Training with Lightning: checkpoints, logs, metrics, schedule, resume, determinism."""

import csv
import math

import lightning as L
import pytest
import torch

from wordformer import DataConfig, ModelConfig, TrainConfig, load_checkpoint, train
from wordformer.errors import WordformerError
from wordformer.schedule import learning_rate
from wordformer.training import WordPredictorModule


def tiny_configs(data, **train_kw):
    model = ModelConfig(d_model=16, num_heads=2, num_layers=1, block_size=8)
    data_cfg = DataConfig(data=str(data))
    kw = dict(max_steps=12, batch_size=4, eval_interval=6, eval_batches=2, warmup_steps=2, progress=False)
    kw.update(train_kw)
    return model, data_cfg, TrainConfig(**kw)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    warm = [learning_rate(s, **kw) for s in range(10)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(1 / 11)
    assert learning_rate(10, **kw) == pytest.approx(1.0)
    assert learning_rate(60, **kw) == pytest.approx(0.55)
    assert learning_rate(110, **kw) == pytest.approx(0.1)
    decay = [learning_rate(s, **kw) for s in range(10, 111)]
    assert decay == sorted(decay, reverse=True)


def test_weight_decay_applies_to_weight_matrices_only():
    module = WordPredictorModule(ModelConfig(vocab_size=20, d_model=8, num_heads=2, num_layers=1), TrainConfig())
    module.trainer = None
    cfg = module.configure_optimizers()
    decay, no_decay = cfg["optimizer"].param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])


def test_train_writes_best_and_last_checkpoints_and_logs(small_text, tmp_path):
    out = tmp_path / "run"
    result = train(*tiny_configs(small_text), out)
    assert result.best_checkpoint.exists() and result.last_checkpoint.exists()
    assert result.steps == 12
    assert {"val_loss", "val_ppl", "val_acc"} <= set(result.metrics)
    assert result.metrics["val_ppl"] == pytest.approx(math.exp(result.metrics["val_loss"]), rel=1e-4)
    rows = list(csv.DictReader(open(out / "logs" / "csv" / "metrics.csv")))
    assert any(r.get("val_loss") for r in rows) and any(r.get("train_loss") for r in rows)
    assert any((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))


def test_checkpoint_alone_rebuilds_model_and_tokenizer(small_text, tmp_path):
    result = train(*tiny_configs(small_text), tmp_path / "run")
    loaded = load_checkpoint(result.best_checkpoint)
    assert loaded.tokenizer.kind == "word"
    assert loaded.model_config.vocab_size == loaded.tokenizer.vocab_size
    small_text.unlink()  # the data is not needed to generate
    assert isinstance(loaded.generate("the cat", max_new_tokens=3, temperature=0), str)


def test_training_lowers_the_loss(small_text, tmp_path):
    result = train(*tiny_configs(small_text, max_steps=250, eval_interval=250, lr=1e-2, min_lr=1e-3), tmp_path / "run")
    vocab = load_checkpoint(result.best_checkpoint).tokenizer.vocab_size
    assert result.val_loss < math.log(vocab) - 1.0  # well below a uniform guess


def test_same_seed_gives_identical_losses(small_text, tmp_path):
    a = train(*tiny_configs(small_text, seed=3), tmp_path / "a")
    b = train(*tiny_configs(small_text, seed=3), tmp_path / "b")
    c = train(*tiny_configs(small_text, seed=4), tmp_path / "c")
    assert a.metrics["val_loss"] == b.metrics["val_loss"]
    assert a.metrics["val_loss"] != c.metrics["val_loss"]


class CrashAfter(L.Callback):
    """Simulates a crash: the process dies after ``step`` optimiser steps (after the step-6 checkpoint)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")


def test_resume_continues_to_the_same_result(small_text, tmp_path):
    full = train(*tiny_configs(small_text), tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(*tiny_configs(small_text), tmp_path / "part", callbacks=[CrashAfter(9)])
    assert load_checkpoint(tmp_path / "part" / "last.ckpt").info["step"] == 6
    resumed = train(*tiny_configs(small_text), tmp_path / "part", resume=True)
    assert resumed.steps == 12
    assert resumed.metrics["val_loss"] == pytest.approx(full.metrics["val_loss"], abs=1e-6)
    a = load_checkpoint(full.last_checkpoint).model.state_dict()
    b = load_checkpoint(resumed.last_checkpoint).model.state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_an_existing_run_is_not_overwritten(small_text, tmp_path):
    out = tmp_path / "run"
    train(*tiny_configs(small_text), out)
    before = (out / "best.ckpt").read_bytes()
    with pytest.raises(WordformerError, match="already holds a run"):
        train(*tiny_configs(small_text), out)
    assert (out / "best.ckpt").read_bytes() == before


def test_pairs_mode_trains_the_chapter_toy_example(toy_pairs, tmp_path):
    """The chapter's word predictor: both prompts continue with "awesome <eos>"."""
    model = ModelConfig(d_model=2, num_heads=1, num_layers=1, block_size=8, norm="none")
    data = DataConfig(data=str(toy_pairs), pairs=True)
    cfg = TrainConfig(max_steps=300, batch_size=2, lr=0.05, min_lr=0.001, warmup_steps=10, weight_decay=0.0,
                      eval_interval=100, progress=False)
    result = train(model, data, cfg, tmp_path / "toy")
    loaded = load_checkpoint(result.best_checkpoint)
    assert loaded.pairs
    from wordformer.generation import encode_prompt, generate_ids

    tok = loaded.tokenizer
    assert sorted(t for t in (tok.id_to_token(i) for i in range(tok.vocab_size)) if not t.startswith("<")) == [
        "awesome", "is", "statquest", "what"]
    for prompt in ("what is statquest", "statquest is what"):
        ids = encode_prompt(tok, prompt, append_eos=True)
        assert ids[-1] == tok.eos_id
        new = generate_ids(loaded.model, [ids], max_new_tokens=5, temperature=0, eos_id=tok.eos_id)[0]
        assert [tok.id_to_token(i) for i in new] == ["awesome", "<eos>"]
        assert loaded.generate(prompt, temperature=0) == "awesome"


class _StepProbe(L.Callback):
    """Record, after each optimiser step, the norm of the gradients that step used."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.fused: list[bool] = []

    def on_train_start(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0]
        self.fused.append(bool(opt.defaults.get("fused")))
        def after_step(optimizer, *_):  # the closure (forward, backward, clipping) runs inside step()
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else -1.0)

        opt.register_step_post_hook(after_step)


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_gradients_are_clipped_with_the_fused_optimizer_in_bf16_and_float32(small_text, tmp_path, precision):
    probe = _StepProbe()
    model, data, cfg = tiny_configs(small_text, max_steps=4, grad_clip=1e-3, precision=precision, lr=1e-2)
    result = train(model, data, cfg, tmp_path / "run", callbacks=[probe], logger=False)
    assert result.steps == 4 and math.isfinite(result.val_loss)
    assert probe.fused == [True]
    assert len(probe.norms) == 4 and 0 < min(probe.norms) and max(probe.norms) <= 1e-3 * (1 + 1e-3)


def test_bf16_on_a_cpu_without_native_bf16_warns_that_it_is_slower(small_text, tmp_path, monkeypatch, caplog):
    import wordformer.training as training

    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    model, data, cfg = tiny_configs(small_text, max_steps=2, precision="bf16-mixed")
    with caplog.at_level("WARNING", logger="wordformer.training"):
        train(model, data, cfg, tmp_path / "run", logger=False)
    assert any("no native bf16" in r.getMessage() for r in caplog.records)


def test_d_model_two_under_a_layer_norm_is_named_when_the_run_starts(toy_pairs, tmp_path, caplog):
    """A layer norm over two numbers maps every vector to +-(1, -1): the chapter's toy would answer nothing."""
    data = DataConfig(data=str(toy_pairs), pairs=True)
    settings = TrainConfig(max_steps=2, eval_interval=2, eval_batches=1, batch_size=2, warmup_steps=0, progress=False)
    with caplog.at_level("WARNING", logger="wordformer.training"):
        train(ModelConfig(d_model=2, num_heads=1, num_layers=1, block_size=8), data, settings, tmp_path / "a")
    assert any("--norm none" in r.getMessage() and "d_model=2" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="wordformer.training"):
        train(ModelConfig(d_model=2, num_heads=1, num_layers=1, block_size=8, norm="none"), data, settings,
              tmp_path / "b")
    assert not any("--norm none" in r.getMessage() for r in caplog.records)
