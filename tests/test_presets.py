"""Presets: `--preset chapter|gpt2|fast`, overridden by options beside them, in YAML, listed by `wordformer presets`,
round-tripping through YAML files and checkpoints; GPT-2 export of the gpt2 preset and refusals for the others."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from conftest import TINY_TRAIN, assert_one_line_error, run_cli
from wordformer import ModelConfig, TrainConfig, WordPredictor, load_checkpoint
from wordformer.cli import build_parser
from wordformer.cli.options import configs_from_args
from wordformer.config import DataConfig, build_configs, read_config_file
from wordformer.errors import WordformerError
from wordformer.presets import PRESETS, preset_values, preset_yaml


def configs(*argv: str):
    return configs_from_args(build_parser().parse_args(["train", *argv]))


def test_chapter_is_todays_default():
    model, data, train = configs("--preset", "chapter")
    assert (model, data, train) == configs()
    assert (model, train) == (ModelConfig(), TrainConfig())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_sets_what_it_says_and_builds_a_model(name):
    model, _, train = configs("--preset", name)
    values = {**asdict(model), **asdict(train)}
    for key, value in preset_values(name).items():
        assert values[key] == value, key
    WordPredictor(model)


def test_options_beside_a_preset_override_it_in_any_order(tmp_path):
    model, _, train = configs("--lr", "5e-3", "--preset", "fast", "--positional", "learned")
    assert model.positional == "learned" and train.lr == 5e-3
    assert train.optimizer == preset_values("fast")["optimizer"]
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("preset: fast\nmodel: {qk_norm: true}\ntrain: {muon_lr: 0.05}\n")
    model, _, train = configs("--config", str(yaml_file))
    assert model.qk_norm is True and train.muon_lr == 0.05  # the file's own values beat its preset's
    assert model.positional == preset_values("fast")["positional"] and train.optimizer == "muon"
    model, _, train = configs("--config", str(yaml_file), "--preset", "gpt2")  # the command line's preset wins
    assert model.positional == "learned" and model.activation == "gelu_tanh" and train.optimizer == "adamw"
    assert model.qk_norm is True  # and the file still overrides it


def test_a_preset_round_trips_through_its_yaml(tmp_path):
    for name in PRESETS:
        path = tmp_path / f"{name}.yaml"
        path.write_text(preset_yaml(name))
        assert build_configs(read_config_file(str(path))) == configs("--preset", name), name
        with_key = tmp_path / f"{name}-key.yaml"
        with_key.write_text(f"preset: {name}\n")
        assert configs("--config", str(with_key)) == configs("--preset", name), name


def test_a_preset_round_trips_through_a_checkpoint(small_text, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", tmp_path / "run", "--preset", "fast",
                           *TINY_TRAIN)
    assert code == 0, err
    loaded = load_checkpoint(tmp_path / "run" / "best.ckpt")
    model, _, train = configs("--preset", "fast", *[str(a) for a in TINY_TRAIN])
    assert asdict(loaded.model_config) == {**asdict(model), "vocab_size": loaded.model_config.vocab_size}
    assert loaded.train_config == train
    # and the run continues under the same preset without saying it again
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "run", "--max-steps", "14", "--no-progress")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "run" / "last.ckpt").train_config.optimizer == train.optimizer


def test_resume_refuses_another_preset(small_text, tmp_path, capsys):
    assert run_cli(capsys, "train", "--data", small_text, "--out", tmp_path / "run", *TINY_TRAIN)[0] == 0
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "run", "--max-steps", "14", "--preset", "fast")
    assert_one_line_error(code, err, "cannot change", "resuming")


def test_unknown_presets_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--preset", "turbo"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(WordformerError, match="unknown preset 'turbo'.*chapter, gpt2, fast"):
        preset_values("turbo")
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("preset: turbo\n")
    code, _, err = run_cli(capsys, "train", "--config", yaml_file, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "unknown preset 'turbo'")


def test_the_presets_command_lists_each_with_what_it_sets(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    for name, preset in PRESETS.items():
        assert f"{name}" in out and preset.summary in out
    assert "chapter (the default)" in out and "optimizer=muon" in out and "positional=rope" in out
    code, out, _ = run_cli(capsys, "presets", "gpt2", "--yaml")
    assert code == 0 and "positional: learned" in out and "activation: gelu_tanh" in out
    code, _, err = run_cli(capsys, "presets", "--yaml")
    assert_one_line_error(code, err, "--yaml", "name")


def test_demo_and_tune_take_a_preset_too():
    parser = build_parser()
    assert parser.parse_args(["demo", "--preset", "fast"]).preset == "fast"
    assert parser.parse_args(["tune", "--preset", "gpt2"]).preset == "gpt2"


def test_the_demo_trains_the_fast_preset_at_its_own_sizes_and_chapter_brings_the_chapter_back(capsys):
    """The demo's default is fast (it won at the demo's sizes, BENCHMARKS.md section 12); its sizes stay whatever
    preset is chosen, and options beside the preset still win."""
    from wordformer.cli.train import DEMO_OPTIONS, DEMO_SIZES

    parser = build_parser()

    def demo(*argv: str):
        return configs_from_args(parser.parse_args(["demo", *argv]), DEMO_OPTIONS)

    model, data, train = demo()
    assert (model.positional, train.optimizer, train.muon_lr, train.lr) == ("rope", "muon", 0.01, 4e-3)
    assert (model.d_model, model.num_layers, data.tokenizer, train.max_time) == (
        DEMO_SIZES["d_model"], DEMO_SIZES["num_layers"], "word", DEMO_SIZES["max_time"])
    model, data, train = demo("--preset", "chapter")
    assert (model.positional, train.optimizer, train.lr) == ("sinusoidal", "adamw", 1e-3)
    assert (model.d_model, data.tokenizer, train.max_steps) == (DEMO_SIZES["d_model"], "word", DEMO_SIZES["max_steps"])
    model, _, train = demo("--preset", "chapter", "--lr", "3e-3", "--positional", "learned")
    assert (model.positional, train.lr) == ("learned", 3e-3)
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and "fast (wordformer demo's default)" in out


# ------------------------------------------------------------------------------------------ GPT-2


def test_the_gpt2_preset_exports_to_gpt2_and_back_exactly():
    transformers = pytest.importorskip("transformers")
    from wordformer.gpt2 import from_hf_model, to_hf_model

    model_cfg, _, _ = configs("--preset", "gpt2", "--d-model", "16", "--num-heads", "2", "--num-layers", "2",
                              "--block-size", "16")
    torch.manual_seed(0)
    model = WordPredictor(ModelConfig(**{**asdict(model_cfg), "vocab_size": 40})).eval()
    hf = to_hf_model(model)
    assert isinstance(hf, transformers.GPT2LMHeadModel)
    x = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=x).logits, model(x), rtol=1e-5, atol=1e-5)
        back = from_hf_model(hf)
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("options, words", [
    (dict(positional="rope"), ["--positional rope"]),
    (dict(norm_type="rmsnorm"), ["norm_type='rmsnorm'"]),
    (dict(qk_norm=True), ["qk_norm=True"]),
    (dict(activation="relu2"), ["activation='relu2'"]),
    (dict(activation="swiglu"), ["activation='swiglu'"]),
    (dict(logit_softcap=30.0), ["logit_softcap=30.0"]),
    (dict(attn_scale=0.2), ["attn_scale=0.2"]),
])
def test_exporting_what_gpt2_cannot_express_names_the_option(options, words):
    from wordformer.gpt2 import to_hf_state_dict, to_nanogpt_checkpoint

    base = dict(vocab_size=20, d_model=16, num_heads=2, num_layers=1, block_size=8, positional="learned")
    model = WordPredictor(ModelConfig(**{**base, **options}))
    for export in (to_hf_state_dict, to_nanogpt_checkpoint):
        with pytest.raises(WordformerError) as info:
            export(model)
        message = str(info.value)
        assert "\n" not in message and "GPT-2" in message
        for word in words:
            assert word in message


def test_an_untied_zero_initialised_output_layer_and_gpt2s_own_scale_still_export():
    from wordformer.gpt2 import to_hf_state_dict

    def model(scale: float) -> WordPredictor:  # head size 8: GPT-2 scales by 1/sqrt(8)
        return WordPredictor(ModelConfig(vocab_size=20, d_model=16, num_heads=2, num_layers=1, block_size=8,
                                         positional="learned", tie_weights=False, zero_init_output=True,
                                         zero_init_residual=True, attn_scale=scale))

    with pytest.raises(WordformerError, match="attn_scale=0.25"):
        to_hf_state_dict(model(0.25))
    state = to_hf_state_dict(model(8 ** -0.5))
    assert not state["lm_head.weight"].any() and state["lm_head.weight"] is not state["transformer.wte.weight"]


def test_a_preset_names_data_options_nowhere():
    for name in PRESETS:
        assert not set(preset_values(name)) & set(asdict(DataConfig()))
