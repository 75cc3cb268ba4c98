"""The recipe options of issue 15 in the model: RoPE, RMS norm, QK-norm and the attention scale, squared ReLU and
SwiGLU, zero-initialised projections and output layer, logit soft-capping; their validation, their CLI flags and
YAML keys, and checkpoints of today's kind (without these fields) loading as before."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TINY_TRAIN, assert_one_line_error, run_cli
from wordformer import DataConfig, ModelConfig, TrainConfig, WordPredictor, load_checkpoint
from wordformer.block import FeedForward, feed_forward_hidden
from wordformer.checkpoint import wordformer_entry
from wordformer.config import build_configs, read_config_file
from wordformer.errors import WordformerError
from wordformer.generation import generate_ids
from wordformer.positional import RotaryPositionalEncoding, rotate
from wordformer.tokenizers import WordTokenizer

OPTIONS = {  # each option alone, then together
    "rope": dict(positional="rope"),
    "rope_base": dict(positional="rope", rope_base=50.0),
    "rmsnorm": dict(norm_type="rmsnorm"),
    "qk_norm": dict(qk_norm=True),
    "qk_norm_scale": dict(qk_norm=True, attn_scale=0.5),
    "attn_scale": dict(attn_scale=0.1),
    "relu2": dict(activation="relu2"),
    "swiglu": dict(activation="swiglu"),
    "softcap": dict(logit_softcap=5.0),
    "zero_init_residual": dict(zero_init_residual=True),
    "zero_init_output": dict(tie_weights=False, zero_init_output=True),
    "all": dict(positional="rope", norm_type="rmsnorm", qk_norm=True, attn_scale=0.3, activation="swiglu",
                logit_softcap=4.0, zero_init_residual=True, tie_weights=False, zero_init_output=True, bias=False),
}


def perturbed(model: WordPredictor, seed: int = 0, scale: float = 0.3) -> WordPredictor:
    """Weights moved away from the initialisation (zero-initialised layers included), so every path matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()


def model_with(options: dict, *, block_size: int = 12, vocab: int = 30, seed: int = 0, **sizes) -> WordPredictor:
    torch.manual_seed(seed)
    kw = {**dict(vocab_size=vocab, block_size=block_size, d_model=16, num_heads=4, num_layers=2), **sizes}
    return perturbed(WordPredictor(ModelConfig(**kw, **options)), seed)


# ------------------------------------------------------------------------------------------ RoPE


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 300), st.integers(1, 4), st.integers(0, 2**16),
       st.sampled_from([10.0, 100.0, 10000.0]))
def test_rope_scores_depend_only_on_the_relative_offset(m, n, shift, half, seed, base):
    """q rotated to position m dotted with k rotated to n equals the same pair rotated to m + s and n + s."""
    d = 2 * half
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    rope = RotaryPositionalEncoding(d, base)

    def score(i: int, j: int) -> float:
        (cos_q, sin_q), (cos_k, sin_k) = rope.angles(torch.tensor([i])), rope.angles(torch.tensor([j]))
        return float(rotate(q[None], cos_q.double(), sin_q.double())[0] @ rotate(k[None], cos_k.double(), sin_k.double())[0])

    # float32 angles (as the model computes them) lose ~1e-7 relative per radian of angle: tolerance to match
    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-4 * d)
    if m != n and half > 1:  # and it does depend on the offset (not a rotation that cancels out)
        assert score(m, n) != pytest.approx(score(m, m), abs=1e-6) or score(n, n) != pytest.approx(score(m, n))


def test_rope_turns_each_pair_by_position_times_its_frequency_and_keeps_lengths():
    rope = RotaryPositionalEncoding(4, base=100.0)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # pairs (1, 3) and (2, 4), frequencies 1 and 1/10
    cos, sin = rope.angles(torch.tensor([5]))
    y = rotate(x, cos, sin)[0]
    a, b = 5.0, 0.5  # angles of the two pairs at position 5
    expected = [math.cos(a) * 1 - math.sin(a) * 3, math.cos(b) * 2 - math.sin(b) * 4,
                math.cos(a) * 3 + math.sin(a) * 1, math.cos(b) * 4 + math.sin(b) * 2]
    assert y.tolist() == pytest.approx(expected, abs=1e-5)
    assert float(y.norm()) == pytest.approx(float(x.norm()), rel=1e-6)
    assert torch.equal(rotate(x, *rope.angles(torch.tensor([0]))), x)  # position 0: no rotation


def test_a_rope_model_gives_the_same_logits_when_every_position_shifts():
    """Only relative positions enter: feeding the window at positions 7.. instead of 0.. changes nothing."""
    model = model_with(OPTIONS["rope"], block_size=32)
    x = torch.randint(0, 30, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x, positions=torch.arange(7, 16)), model(x), rtol=1e-5, atol=1e-5)
    learned = model_with({"positional": "learned"}, block_size=32)
    with torch.no_grad():
        assert not torch.allclose(learned(x, positions=torch.arange(7, 16)), learned(x), atol=1e-3)


def test_rope_adds_no_parameters_and_no_vector_to_the_embedding():
    rope, sinusoidal = model_with(OPTIONS["rope"]), model_with({})
    assert rope.num_parameters() == sinusoidal.num_parameters()
    x = torch.tensor([[1, 2, 3]])
    assert torch.equal(rope.embed(x), rope.token_embedding(x))
    with pytest.raises(TypeError, match="rotary"):
        rope.positional_encoding(torch.arange(3))


@pytest.mark.parametrize("name", ["rope", "rope_base", "all"])
def test_rope_cache_and_no_cache_greedy_agree_also_past_block_size(name):
    model = model_with(OPTIONS[name], block_size=8)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        prompt = torch.randint(0, 30, (int(torch.randint(1, 12, (1,), generator=gen)),), generator=gen).tolist()
        cached = generate_ids(model, [prompt], max_new_tokens=30, temperature=0, use_cache=True)
        plain = generate_ids(model, [prompt], max_new_tokens=30, temperature=0, use_cache=False)
        assert cached == plain and len(cached[0]) == 30  # 30 new tokens slide an 8-token window several times


def test_rope_batched_rows_with_left_padding_decode_as_alone_through_slides():
    model = model_with(OPTIONS["rope"], block_size=8)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11], [12, 13]]
    for use_cache in (True, False):
        batched = generate_ids(model, prompts, max_new_tokens=20, temperature=0, use_cache=use_cache)
        alone = [generate_ids(model, [p], max_new_tokens=20, temperature=0, use_cache=use_cache)[0] for p in prompts]
        assert batched == alone


def test_rope_cached_logits_equal_the_full_forward_step_by_step():
    model = model_with(OPTIONS["all"], block_size=12)
    x = torch.randint(0, 30, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2)
        steps = [model(x[:, :5], cache=cache)] + [model(x[:, i:i + 1], cache=cache) for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ fused == explicit


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_fused_attention_equals_the_explicit_path_for_every_option(name):
    model = model_with(OPTIONS[name])
    x = torch.randint(0, 30, (3, 12), generator=torch.Generator().manual_seed(2))
    padding = torch.ones(3, 12, dtype=torch.bool)
    padding[1, :4] = False  # a left-padded row
    with torch.no_grad():
        for kwargs in ({}, {"key_padding_mask": padding}):
            fused, explicit = model(x, fused=True, **kwargs), model(x, fused=False, **kwargs)
            assert (fused - explicit).abs().max() < 1e-5, kwargs
            with_weights, _ = model(x, return_attention=True, **kwargs)
            assert (fused - with_weights).abs().max() < 1e-5, kwargs
        cache_f, cache_e = model.new_cache(3), model.new_cache(3)
        for part in (x[:, :7], x[:, 7:8], x[:, 8:]):  # prefill, one token, a few tokens with the cache
            assert (model(part, cache=cache_f, fused=True) - model(part, cache=cache_e, fused=False)).abs().max() < 1e-5


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_option_keeps_the_model_causal(name):
    model = model_with(OPTIONS[name])
    x = torch.randint(0, 30, (2, 12), generator=torch.Generator().manual_seed(5))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 30
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :6], model(y)[:, :6], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ norms, QK-norm, scale


def test_rmsnorm_blocks_use_rms_norms_without_bias_and_layernorm_stays_the_default():
    rms = WordPredictor(ModelConfig(vocab_size=10, d_model=8, num_heads=2, num_layers=1, norm_type="rmsnorm"))
    assert isinstance(rms.blocks[0].norm1, torch.nn.RMSNorm) and isinstance(rms.final_norm, torch.nn.RMSNorm)
    x = torch.randn(3, 8)
    expected = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(rms.blocks[0].norm1(x), expected)
    plain = WordPredictor(ModelConfig(vocab_size=10, d_model=8, num_heads=2, num_layers=1))
    assert isinstance(plain.blocks[0].norm1, torch.nn.LayerNorm)


def test_qk_norm_makes_each_heads_queries_and_keys_unit_rms():
    model = model_with(OPTIONS["qk_norm"])
    attention = model.blocks[0].attention
    with torch.no_grad():
        attention.q_norm.weight.fill_(1.0)
        attention.k_norm.weight.fill_(1.0)
        q, k, _ = attention.project_qkv(torch.randn(2, 5, 16) * 7)
        q, k = attention.normalize_qk(q, k)
    for z in (q, k):  # (B, H, T, D)
        torch.testing.assert_close(z.pow(2).mean(-1), torch.ones(2, 4, 5), rtol=1e-3, atol=1e-3)


def test_attn_scale_replaces_one_over_sqrt_head_size():
    """Head size 4 here: attn_scale 0.5 = 1/sqrt(4) is the default model, 0.2 is another one."""
    x = torch.randint(0, 30, (1, 6), generator=torch.Generator().manual_seed(0))
    default = model_with({})
    with torch.no_grad():
        for scale, same in ((0.5, True), (0.2, False)):
            other = model_with({"attn_scale": scale})
            other.load_state_dict(default.state_dict())
            assert torch.allclose(other(x), default(x), atol=1e-6) == same, scale


# ------------------------------------------------------------------------------------------ feed-forward


def test_squared_relu_is_relu_squared():
    ff = FeedForward(ModelConfig(vocab_size=10, d_model=8, num_heads=2, activation="relu2"))
    x = torch.randn(4, 32)
    torch.testing.assert_close(ff.act(x), torch.relu(x) ** 2)


@pytest.mark.parametrize("d_model, ff_mult, bias", [(24, 4, False), (24, 4, True), (16, 4, True), (128, 4, True),
                                                    (128, 4, False), (10, 3, True), (64, 2, False)])
def test_swiglu_spends_the_plain_feed_forwards_parameters(d_model, ff_mult, bias):
    """Its hidden width h is the closest to the plain net's count: within half of one hidden unit's parameters
    (3 d_model + 2 bias) and exactly equal where the division comes out even (d_model 24, ff_mult 4, no bias)."""
    def count(activation: str) -> int:
        cfg = ModelConfig(vocab_size=10, d_model=d_model, num_heads=2, ff_mult=ff_mult, bias=bias, activation=activation)
        return sum(p.numel() for p in FeedForward(cfg).parameters())

    plain, gated = count("gelu"), count("swiglu")
    assert abs(gated - plain) <= (3 * d_model + 2 * bias) / 2
    if (d_model, ff_mult, bias) == (24, 4, False):
        assert gated == plain
        assert feed_forward_hidden(ModelConfig(vocab_size=10, d_model=24, num_heads=2, activation="swiglu",
                                               bias=False)) == 64


def test_swiglu_gates_one_map_with_the_silu_of_another():
    ff = FeedForward(ModelConfig(vocab_size=10, d_model=8, num_heads=2, activation="swiglu", bias=False)).eval()
    x = torch.randn(3, 8)
    expected = ff.down(torch.nn.functional.silu(ff.gate(x)) * ff.up(x))
    torch.testing.assert_close(ff(x), expected)


# ------------------------------------------------------------------------------------------ init and head


def test_zero_init_residual_starts_every_block_as_the_identity():
    model = WordPredictor(ModelConfig(vocab_size=20, d_model=16, num_heads=2, num_layers=2, zero_init_residual=True,
                                      norm="pre", positional="learned"))
    for block in model.blocks:
        assert not block.attention.out.weight.any() and not block.feed_forward.down.weight.any()
        x = torch.randn(2, 5, 16)
        assert torch.equal(block(x)[0], x + block.attention.out.bias + block.feed_forward.down.bias)


def test_zero_init_output_starts_with_uniform_predictions():
    model = WordPredictor(ModelConfig(vocab_size=20, d_model=16, num_heads=2, tie_weights=False, zero_init_output=True))
    assert not model.output_layer.weight.any() and model.token_embedding.weight.any()
    probs = torch.softmax(model(torch.tensor([[1, 2, 3]])), -1)
    torch.testing.assert_close(probs, torch.full_like(probs, 1 / 20))


def test_logit_softcap_bounds_the_logits_smoothly():
    capped, free = model_with({"logit_softcap": 2.0}), model_with({})
    with torch.no_grad():
        free.load_state_dict(capped.state_dict())
        capped.output_layer.weight.mul_(3)
        free.output_layer.weight.mul_(3)
        x = torch.randint(0, 30, (2, 8))
        a, b = capped(x), free(x)
    assert float(b.abs().max()) > 4.0 and float(a.abs().max()) <= 2.0
    torch.testing.assert_close(a, 2.0 * torch.tanh(b / 2.0), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("kwargs, words", [
    (dict(positional="alibi"), ["positional='alibi'", "rope"]),
    (dict(positional="rope", d_model=12, num_heads=4), ["rope", "head size", "3"]),
    (dict(rope_base=0.5), ["rope_base=0.5"]),
    (dict(rope_base="big"), ["rope_base='big'", "number"]),
    (dict(norm_type="batchnorm"), ["norm_type='batchnorm'", "rmsnorm"]),
    (dict(qk_norm="yes"), ["qk_norm='yes'", "true or false"]),
    (dict(attn_scale=0.0), ["attn_scale=0.0"]),
    (dict(attn_scale=-1.0), ["attn_scale=-1.0"]),
    (dict(activation="gelu2"), ["activation='gelu2'", "swiglu"]),
    (dict(logit_softcap=-1.0), ["logit_softcap=-1.0"]),
    (dict(zero_init_residual=1), ["zero_init_residual=1"]),
    (dict(zero_init_output=True), ["zero_init_output=True", "tie_weights=False"]),
])
def test_bad_model_options_name_the_field_and_value(kwargs, words):
    with pytest.raises(WordformerError) as info:
        ModelConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("kwargs, words", [
    (dict(optimizer="sgd"), ["optimizer='sgd'", "muon"]),
    (dict(schedule="step"), ["schedule='step'", "wsd"]),
    (dict(cooldown_fraction=0.0), ["cooldown_fraction=0.0"]),
    (dict(cooldown_fraction=1.5), ["cooldown_fraction=1.5"]),
    (dict(muon_lr=0.0), ["muon_lr=0.0"]),
    (dict(muon_momentum=1.0), ["muon_momentum=1.0"]),
    (dict(muon_momentum_start=-0.1), ["muon_momentum_start=-0.1"]),
    (dict(muon_momentum_warmup=-1), ["muon_momentum_warmup=-1"]),
    (dict(muon_momentum_warmup=2.5), ["muon_momentum_warmup=2.5"]),
    (dict(muon_weight_decay=-0.1), ["muon_weight_decay=-0.1"]),
    (dict(muon_split_qkv="no"), ["muon_split_qkv='no'"]),
])
def test_bad_training_options_name_the_field_and_value(kwargs, words):
    with pytest.raises(WordformerError) as info:
        TrainConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_cli_flags_and_yaml_keys_reach_the_configs(tmp_path):
    from wordformer.cli import build_parser
    from wordformer.cli.options import configs_from_args

    args = build_parser().parse_args([
        "train", "--positional", "rope", "--rope-base", "500", "--norm-type", "rmsnorm", "--qk-norm",
        "--attn-scale", "0.12", "--activation", "swiglu", "--zero-init-residual", "--no-tie-weights",
        "--zero-init-output", "--logit-softcap", "15", "--optimizer", "muon", "--muon-lr", "0.03",
        "--muon-momentum", "0.9", "--muon-momentum-start", "0.8", "--muon-momentum-warmup", "50",
        "--muon-weight-decay", "0.01", "--no-muon-split-qkv", "--schedule", "wsd", "--cooldown-fraction", "0.3"])
    model, _, train = configs_from_args(args)
    assert (model.positional, model.rope_base, model.norm_type, model.qk_norm, model.attn_scale, model.activation,
            model.zero_init_residual, model.tie_weights, model.zero_init_output, model.logit_softcap) == (
        "rope", 500.0, "rmsnorm", True, 0.12, "swiglu", True, False, True, 15.0)
    assert (train.optimizer, train.muon_lr, train.muon_momentum, train.muon_momentum_start, train.muon_momentum_warmup,
            train.muon_weight_decay, train.muon_split_qkv, train.schedule, train.cooldown_fraction) == (
        "muon", 0.03, 0.9, 0.8, 50, 0.01, False, "wsd", 0.3)
    yaml_file = tmp_path / "recipe.yaml"
    yaml_file.write_text("model: {positional: rope, norm_type: rmsnorm, attn_scale: 1.0e-1}\n"
                         "train: {optimizer: muon, schedule: wsd, cooldown_fraction: 0.5}\n")
    m2, _, t2 = build_configs(read_config_file(str(yaml_file)))
    assert (m2.positional, m2.norm_type, m2.attn_scale, t2.optimizer, t2.schedule, t2.cooldown_fraction) == (
        "rope", "rmsnorm", 0.1, "muon", "wsd", 0.5)


@pytest.mark.parametrize("argv, words", [
    (["--norm-type", "batch"], ["invalid choice", "layernorm"]),
    (["--positional", "rope", "--d-model", "12", "--num-heads", "4"], ["rope", "head size"]),
    (["--zero-init-output"], ["--zero-init-output", "tie_weights=False"]),
    (["--cooldown-fraction", "2"], ["--cooldown-fraction 2.0"]),
])
def test_bad_recipe_options_on_the_command_line_are_one_line(small_text, tmp_path, capsys, argv, words):
    try:
        code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", tmp_path / "run", *TINY_TRAIN, *argv)
    except SystemExit as exc:  # argparse refuses a choice itself (exit 2, its own usage line)
        code, err = exc.code, capsys.readouterr().err
        assert code == 2 and all(w in err for w in words), err
        return
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ checkpoints


NEW_MODEL_FIELDS = ("rope_base", "norm_type", "qk_norm", "attn_scale", "zero_init_residual", "zero_init_output",
                    "logit_softcap")
NEW_TRAIN_FIELDS = ("schedule", "cooldown_fraction", "optimizer", "muon_lr", "muon_momentum", "muon_momentum_start",
                    "muon_momentum_warmup", "muon_weight_decay", "muon_split_qkv")


def test_a_checkpoint_from_before_the_recipe_options_loads_with_todays_behaviour(tmp_path):
    """Configs saved without the new fields get their defaults: the same model, the same logits."""
    tok = WordTokenizer.train(["the cat sat on the mat"])
    torch.manual_seed(0)
    model = WordPredictor(ModelConfig(vocab_size=tok.vocab_size, d_model=8, num_heads=2, num_layers=1, block_size=8))
    entry = wordformer_entry(model.config, DataConfig(), TrainConfig(), tok, step=3)
    for name in NEW_MODEL_FIELDS:
        del entry["model_config"][name]
    for name in NEW_TRAIN_FIELDS:
        del entry["train_config"][name]
    path = tmp_path / "old.ckpt"
    torch.save({"wordformer": entry, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = load_checkpoint(path)
    assert asdict(loaded.model_config) == asdict(model.config)
    assert loaded.train_config == TrainConfig()
    x = torch.tensor([tok.encode("the cat sat")])
    torch.testing.assert_close(loaded.model(x), model.eval()(x), rtol=0, atol=0)


def test_recipe_options_are_saved_in_and_restored_from_checkpoints(small_text, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", tmp_path / "run", *TINY_TRAIN,
                           "--positional", "rope", "--norm-type", "rmsnorm", "--qk-norm", "--attn-scale", "0.4",
                           "--activation", "swiglu", "--logit-softcap", "20", "--no-tie-weights", "--zero-init-output",
                           "--zero-init-residual", "--optimizer", "muon", "--muon-lr", "0.01", "--schedule", "wsd",
                           "--cooldown-fraction", "0.5", "--muon-momentum-warmup", "5")
    assert code == 0, err
    loaded = load_checkpoint(tmp_path / "run" / "last.ckpt")
    m, t = loaded.model_config, loaded.train_config
    assert (m.positional, m.norm_type, m.qk_norm, m.attn_scale, m.activation, m.logit_softcap, m.tie_weights,
            m.zero_init_output, m.zero_init_residual) == ("rope", "rmsnorm", True, 0.4, "swiglu", 20.0, False, True, True)
    assert (t.optimizer, t.muon_lr, t.schedule, t.cooldown_fraction, t.muon_momentum_warmup) == (
        "muon", 0.01, "wsd", 0.5, 5)
    x = torch.tensor([loaded.tokenizer.encode("the cat sat")])
    assert torch.isfinite(loaded.model(x)).all()
    assert isinstance(loaded.model.blocks[0].norm1, torch.nn.RMSNorm)


def test_explain_shows_the_rotated_query_and_keys(tmp_path, capsys):
    from wordformer.cli import main

    tok = WordTokenizer.train(["what is statquest <eos> awesome <eos>"])
    model = model_with(dict(positional="rope", qk_norm=True), vocab=tok.vocab_size, d_model=8, num_heads=2)
    entry = wordformer_entry(model.config, DataConfig(), TrainConfig(), tok, step=0)
    path = tmp_path / "rope.ckpt"
    torch.save({"wordformer": entry, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    assert main(["explain", "--checkpoint", str(path), "--prompt", "what is statquest"]) == 0
    out = capsys.readouterr().out
    assert "RoPE adds no positional vector" in out
    assert "then rotated by its position (RoPE)" in out and "rotated, each by its own position (RoPE):" in out
    assert "RMS-normalised per head (qk_norm)" in out and "dot products of the rotated query" in out
