"""Search spaces: parsing, every invalid-space message, power-of-two transform, heads dividing widths."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml

from wordformer.config import ModelConfig, TrainConfig
from wordformer.errors import WordformerError
from wordformer.tune.space import HEAD_SIZE, load_space, parse_space, power_2, sample_configs

REQUIRED_TUNABLES = {
    "model.num_heads", "model.num_layers", "model.ff_mult", "model.dropout", "model.block_size",
    "model.positional", "model.norm", "model.tie_weights", "train.lr", "train.weight_decay",
    "train.warmup_steps", "train.batch_size", "train.max_steps",
}


def space(**params: dict) -> dict:
    return {"params": params}


def test_default_space_loads_and_covers_the_tunables() -> None:
    s = load_space()
    assert REQUIRED_TUNABLES <= set(s.targets)
    assert HEAD_SIZE in s.targets  # the width is num_heads * head_size
    model, _, train = s.configs(s.defaults())
    assert (model.d_model, model.num_heads, model.block_size) == (128, 4, 64)
    assert train.batch_size == 16 and train.min_lr <= train.lr


def test_default_space_every_sample_has_heads_dividing_width() -> None:
    widths = set()
    for model, data, train in sample_configs(load_space(), 200, seed=3):
        assert model.d_model % model.num_heads == 0
        ModelConfig(**{**model.__dict__})  # the config accepts it (validates again)
        assert train.min_lr <= train.lr
        widths.add(model.d_model)
    assert len(widths) > 3  # the width really varies


def test_power_2_transform() -> None:
    assert [power_2(x) for x in range(5)] == [1, 2, 4, 8, 16]
    s = parse_space(space(bs={"target": "train.batch_size", "type": "int", "low": 2, "high": 5,
                              "transform": "power_2", "default": 3}))
    p = s.param("bs")
    assert p.values() == [4, 8, 16, 32]
    assert s.defaults() == {"bs": 3}
    _, _, train = s.configs({"bs": 5})
    assert train.batch_size == 32


def test_all_types_parse_and_apply(tmp_path: Path) -> None:
    text = """
params:
  lr: {target: train.lr, type: float, low: 1.0e-4, high: 1.0e-2, log: true, default: 1.0e-3}
  layers: {target: model.num_layers, type: int, low: 1, high: 4}
  pos: {target: model.positional, type: categorical, choices: [sinusoidal, learned]}
  tie: {target: model.tie_weights, type: bool, default: false}
  tok: {target: data.tokenizer, type: categorical, choices: [word, char, bpe], default: char}
fixed:
  train.eval_interval: 7
"""
    path = tmp_path / "s.yaml"
    path.write_text(text)
    s = load_space(path)
    assert s.names == ["lr", "layers", "pos", "tie", "tok"]
    assert s.defaults() == {"lr": 1e-3, "layers": 2, "pos": "sinusoidal", "tie": False, "tok": "char"}
    model, data, train = s.configs({"lr": 5e-3, "layers": 3, "pos": "learned", "tie": True, "tok": "bpe"})
    assert (model.num_layers, model.positional, model.tie_weights) == (3, "learned", True)
    assert data.tokenizer == "bpe" and train.eval_interval == 7
    assert math.isclose(train.lr, 5e-3) and math.isclose(train.min_lr, 5e-4)
    # round trip through the form stored with a study
    again = parse_space(s.as_dict())
    assert again.as_dict() == s.as_dict()


def test_grid_values_and_float_without_step() -> None:
    s = parse_space(space(
        d={"target": "model.dropout", "type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
        n={"target": "model.num_layers", "type": "int", "low": 1, "high": 5, "step": 2},
        t={"target": "model.tie_weights", "type": "bool"},
    ))
    assert s.grid() == {"d": [0.0, 0.1, 0.2], "n": [1, 3, 5], "t": [False, True]}
    lr = parse_space(space(lr={"target": "train.lr", "type": "float", "low": 1e-4, "high": 1e-2, "log": True}))
    with pytest.raises(WordformerError, match=r"grid sampler: float parameter 'lr' has no step"):
        lr.grid()


def test_direct_width_and_heads_accepted_when_all_divide() -> None:
    s = parse_space(space(
        w={"target": "model.d_model", "type": "int", "low": 4, "high": 7, "transform": "power_2"},
        h={"target": "model.num_heads", "type": "categorical", "choices": [1, 2, 4, 8, 16]},
    ))
    for model, _, _ in sample_configs(s, 50, seed=0):
        assert model.d_model % model.num_heads == 0


def test_fixed_width_checked_against_head_choices() -> None:
    s = parse_space(space(h={"target": "model.num_heads", "type": "categorical", "choices": [1, 2, 3]}))
    with pytest.raises(WordformerError, match=r"num_heads=3 does not divide d_model=128"):
        s.check_heads(ModelConfig())
    s.check_heads(ModelConfig(d_model=96, num_heads=2))


def test_without_drops_command_line_fixed_entries() -> None:
    s = load_space()
    fewer = s.without(["train.max_steps", "model.d_model"])
    assert "train.max_steps" not in fewer.targets and HEAD_SIZE not in fewer.targets
    assert len(fewer.params) == len(s.params) - 2


BAD = [
    ("not: [valid", r"invalid YAML at line 1"),
    ("- a\n- b\n", r"must be a mapping with 'params'"),
    ("params: {}\n", r"'params' must be a non-empty mapping"),
    ("params: {x: {target: model.d_model, type: int, low: 1, high: 2}}\nextra: 1\n", r"unknown top-level key\(s\) extra"),
    ("params: {x: {target: model.nope, type: int, low: 1, high: 2}}", r"entry 'x' has target 'model.nope', which is not a model config field"),
    ("params: {x: {target: optim.lr, type: float, low: 1, high: 2}}", r"entry 'x' has target 'optim.lr' with unknown section 'optim'"),
    ("params: {x: {type: int, low: 1, high: 2}}", r"entry 'x' needs target: section.field"),
    ("params: {x: {target: model.num_layers, type: complex, low: 1, high: 2}}", r"entry 'x': type 'complex' is not one of: int, float, categorical, bool"),
    ("params: {x: {target: model.num_layers, type: int, low: 5, high: 2}}", r"entry 'x': low=5 is greater than high=2"),
    ("params: {x: {target: model.num_layers, type: int, low: 1}}", r"entry 'x': a int needs both low and high"),
    ("params: {x: {target: model.num_layers, type: int, low: 1, high: 4, default: 9}}", r"entry 'x': default=9 lies outside \[1, 4\]"),
    ("params: {x: {target: train.lr, type: float, low: 0.0, high: 0.1, log: true}}", r"entry 'x': log scale needs low > 0, got low=0.0"),
    ("params: {x: {target: train.lr, type: float, low: -1.0, high: 0.1, log: true}}", r"entry 'x': log scale needs low > 0"),
    ("params: {x: {target: model.norm, type: categorical, choices: []}}", r"entry 'x': a categorical needs a non-empty list of choices"),
    ("params: {x: {target: model.norm, type: categorical}}", r"entry 'x': a categorical needs a non-empty list of choices"),
    ("params: {x: {target: model.norm, type: categorical, choices: [pre, post], default: mid}}", r"entry 'x': default='mid' is not one of the choices"),
    ("params: {x: {target: model.num_layers, type: int, low: 1, high: 4, colour: red}}", r"entry 'x': unknown key\(s\) colour"),
    ("params: {x: {target: model.num_layers, type: int, low: 1, high: 4, transform: cube}}", r"entry 'x': transform 'cube' is not one of"),
    ("params: {x: {target: model.num_layers, type: int, low: 0, high: 3, transform: power_2, default: 8}}", r"default=8 lies outside \[0, 3\] \(an exponent"),
    ("params: {x: {target: train.lr, type: float, low: 1.0, high: 3.0, transform: power_2}}", r"transform power_2 needs type: int"),
    ("params: {x: {target: model.num_layers, type: float, low: 1.0, high: 3.0}}", r"type float does not fit model.num_layers"),
    ("params: {x: {target: model.norm, type: bool}}", r"type bool does not fit model.norm"),
    ("params: {x: {target: train.lr, type: float, low: 0.001, high: 0.1, step: 0.01, log: true}}", r"log scale cannot be combined with a step"),
    ("params: {x: {target: model.num_layers, type: int, low: 1.5, high: 3}}", r"low=1.5 must be an integer"),
    ("params: {x: {target: model.norm, type: categorical, choices: [pre, pre]}}", r"contain duplicates"),
    ("params: {x: {target: model.num_layers, type: int, low: 1, high: 2}, y: {target: model.num_layers, type: int, low: 1, high: 2}}",
     r"entries 'x' and 'y' both target model.num_layers"),
    ("params: {a: {target: model.head_size, type: int, low: 1, high: 4}, b: {target: model.d_model, type: int, low: 8, high: 16}}",
     r"'a' \(head_size\) and 'b' \(d_model\) both set the width"),
    ("params: {w: {target: model.d_model, type: int, low: 6, high: 8}, h: {target: model.num_heads, type: int, low: 1, high: 2}}",
     r"num_heads=2 does not divide d_model=7"),
    ("params: {w: {target: model.d_model, type: int, low: 8, high: 16}}\nfixed: {model.wat: 3}", r"entry 'fixed.model.wat' has target 'model.wat'"),
    # values the config refuses: at load time, not as failing trials
    ("params: {x: {target: model.norm, type: categorical, choices: [pre, banana]}}",
     r"entry 'x': choice 'banana' is refused by the config \(norm='banana' must be one of: pre, post, none\); remove it"),
    ("params: {x: {target: model.num_layers, type: int, low: 0, high: 3}}",
     r"entry 'x': low=0 is refused by the config \(num_layers=0 must be an integer >= 1\); narrow the range"),
    ("params: {x: {target: model.dropout, type: float, low: 0.0, high: 2.0}}",
     r"entry 'x': high=2.0 is refused by the config \(dropout=2.0 must lie in \[0.0, 1.0\)\)"),
    ("params: {x: {target: model.dropout, type: float, low: 0.0, high: 1.05, step: 0.5}}",
     r"entry 'x': high=1.0 is refused by the config"),  # the largest value on the grid
    ("params: {x: {target: train.lr, type: float, low: 1.0e-3, high: 20.0, log: true}}", r"high=20.0 is refused by the config \(lr=20.0"),
    ("params: {x: {target: data.tokenizer, type: categorical, choices: [word, sentencepiece]}}", r"choice 'sentencepiece' is refused"),
    ("params: {x: {target: train.lr, type: float, low: 1.0e-3, high: 1.0e-2}}\nfixed: {train.max_steps: 0}",
     r"fixed train.max_steps: 0 is refused by the config \(max_steps=0 must be an integer >= 1\)"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_invalid_space_files_name_entry_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(WordformerError, match=message) as info:
        load_space(path)
    assert "\n" not in str(info.value)  # one line
    assert str(path) in str(info.value)  # names the file


def test_missing_space_file(tmp_path: Path) -> None:
    with pytest.raises(WordformerError, match=r"search space file .* not found"):
        load_space(tmp_path / "nope.yaml")


def test_suggest_uses_exponents_and_bool_choices() -> None:
    s = parse_space(space(
        h={"target": "model.num_heads", "type": "int", "low": 0, "high": 2, "transform": "power_2"},
        t={"target": "model.tie_weights", "type": "bool"},
        hs={"target": "model.head_size", "type": "int", "low": 2, "high": 3, "transform": "power_2"},
    ))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    raw = s.suggest(trial)
    assert 0 <= raw["h"] <= 2 and raw["t"] in (False, True)
    model, _, _ = s.configs(raw)
    assert model.num_heads == 2 ** raw["h"] and model.d_model == model.num_heads * 2 ** raw["hs"]
    assert TrainConfig().lr == s.configs(raw)[2].lr  # untouched fields keep the base
    yaml.safe_dump(s.as_dict())  # storable


def test_config_check_judges_each_value_alone() -> None:
    """Fields that depend on another (heads and width, min_lr and lr) are judged with the other made to fit."""
    s = parse_space(space(
        h={"target": "model.num_heads", "type": "int", "low": 1, "high": 3},  # 3 does not divide the default 128
        m={"target": "train.min_lr", "type": "float", "low": 1e-5, "high": 5e-3},  # above the default lr 1e-3
        w={"target": "train.warmup_steps", "type": "int", "low": 0, "high": 10},  # 0 is allowed here
        p={"target": "model.block_size", "type": "int", "low": 2, "high": 4, "transform": "power_2"},
    ))
    assert s.names == ["h", "m", "w", "p"]
    with pytest.raises(WordformerError, match=r"entry 'p': low=-1 "):
        parse_space(space(p={"target": "model.block_size", "type": "int", "low": -1, "high": 4}))
    with pytest.raises(WordformerError, match=r"entry 'd': low=0 \(2\*\*0 = 1\) is refused by the config \(dropout=1 "):
        parse_space(space(d={"target": "model.dropout", "type": "int", "low": 0, "high": 2, "transform": "power_2"}))


def test_warm_up_is_bounded_by_half_the_step_budget() -> None:
    """The issue's case: the built-in space samples warm-up up to 200 while --max-steps 30 fixes the budget."""
    from wordformer.tune.space import bound_warmup

    fixed_budget = load_space().without(["train.max_steps"])
    bounded, train, note = bound_warmup(fixed_budget, TrainConfig(max_steps=30))
    assert "train.warmup_steps" not in bounded.targets and bounded.fixed["train.warmup_steps"] == 0
    assert note == "warm-up 0..200 fixed at 0: at most half the step budget (30 steps, the smallest max_steps of the study)"
    bounded, _, note = bound_warmup(fixed_budget, TrainConfig(max_steps=250))
    warmup = bounded.param("warmup_steps")
    assert (warmup.low, warmup.high, warmup.default) == (0, 100, 100) and "0..200 -> 0..100" in note
    assert all(v <= 125 for v in warmup.grid_values())
    unchanged, train, note = bound_warmup(load_space(), TrainConfig(max_steps=30))  # budget tuned: 500..2000
    assert note is None and unchanged.param("warmup_steps").high == 200
    # not tuned: the base warm-up (the default 100) is lowered, unless the command line gave it
    no_warmup = load_space().without(["train.max_steps", "train.warmup_steps"])
    _, train, note = bound_warmup(no_warmup, TrainConfig(max_steps=30))
    assert train.warmup_steps == 15 and note.startswith("warm-up 100 -> 15")
    _, train, note = bound_warmup(no_warmup, TrainConfig(max_steps=30, warmup_steps=40), warmup_given=True)
    assert train.warmup_steps == 40 and note is None
    for _, _, cfg in sample_configs(bounded, n=20, train=TrainConfig(max_steps=250)):  # every trial fits its budget
        assert cfg.warmup_steps <= cfg.max_steps // 2


# ------------------------------------------------------------------------------------------ the recipe space (issue 15)

RECIPE_TUNABLES = {
    "model.positional", "model.rope_base", "model.norm_type", "model.qk_norm", "model.attn_scale", "model.activation",
    "model.zero_init_residual", "model.zero_init_output", "model.logit_softcap", "train.optimizer", "train.muon_lr",
    "train.muon_momentum", "train.muon_momentum_start", "train.muon_momentum_warmup", "train.muon_weight_decay",
    "train.muon_split_qkv", "train.schedule", "train.cooldown_fraction",
}


def test_the_recipe_space_tunes_every_recipe_option_and_every_sample_is_valid() -> None:
    s = load_space("recipe")
    assert RECIPE_TUNABLES <= set(s.targets)
    assert {"rope", "learned", "sinusoidal"} == set(s.param("positional").choices)
    assert {"relu2", "swiglu"} <= set(s.param("activation").choices)
    seen: dict[str, set] = {"positional": set(), "optimizer": set(), "attn_scale": set(), "zero": set()}
    for model, _, train in sample_configs(s, 120, seed=5):
        ModelConfig(**{**model.__dict__})  # each sample passes the config's checks again
        TrainConfig(**{**train.__dict__})
        seen["positional"].add(model.positional)
        seen["optimizer"].add(train.optimizer)
        seen["attn_scale"].add(model.attn_scale)
        seen["zero"].add(model.zero_init_output)
    assert seen == {"positional": {"sinusoidal", "learned", "rope"}, "optimizer": {"adamw", "muon"},
                    "attn_scale": {None, 0.1, 0.2, 0.3}, "zero": {False, True}}


def test_a_space_file_named_recipe_wins_over_the_built_in_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("recipe").write_text(yaml.safe_dump(space(lr={"target": "train.lr", "type": "float", "low": 1e-4,
                                                       "high": 1e-2})))
    assert load_space("recipe").targets == ["train.lr"]


@pytest.mark.parametrize("params, fixed, words", [
    (dict(z={"target": "model.zero_init_output", "type": "bool"}, t={"target": "model.tie_weights", "type": "bool"}),
     None, ["zero_init_output", "tie_weights", "fixed"]),
    (dict(z={"target": "model.zero_init_output", "type": "bool"}), {"model.tie_weights": True},
     ["zero_init_output", "tie_weights"]),
    (dict(p={"target": "model.positional", "type": "categorical", "choices": ["learned", "rope"]},
          h={"target": "model.head_size", "type": "int", "low": 3, "high": 5}), None, ["rope", "even", "head size 3"]),
    (dict(p={"target": "model.positional", "type": "categorical", "choices": ["rope"]},
          d={"target": "model.d_model", "type": "categorical", "choices": [12, 18]},
          n={"target": "model.num_heads", "type": "categorical", "choices": [2, 3, 6]}), None, ["rope", "head size 3"]),
    (dict(c={"target": "train.cooldown_fraction", "type": "float", "low": 0.0, "high": 0.5}), None,
     ["cooldown_fraction=0.0"]),
    (dict(o={"target": "train.optimizer", "type": "categorical", "choices": ["adamw", "lion"]}), None,
     ["optimizer='lion'"]),
])
def test_recipe_options_are_validated_when_a_space_loads(params, fixed, words) -> None:
    data = space(**params)
    if fixed:
        data["fixed"] = fixed
    with pytest.raises(WordformerError) as info:
        parse_space(data, source="mine.yaml")
    for word in words:
        assert word in str(info.value)


def test_combinations_are_checked_against_the_base_config_when_tuning_starts() -> None:
    s = parse_space(space(z={"target": "model.zero_init_output", "type": "bool"}))  # fine alone: the base decides
    s.check_heads(ModelConfig(tie_weights=False))
    with pytest.raises(WordformerError, match="tie_weights"):
        s.check_heads(ModelConfig())
    rope = parse_space(space(p={"target": "model.positional", "type": "categorical", "choices": ["rope", "learned"]}))
    rope.check_heads(ModelConfig(d_model=16, num_heads=2))
    with pytest.raises(WordformerError, match="head size 3"):
        rope.check_heads(ModelConfig(d_model=12, num_heads=4))


def test_a_stepped_float_defaults_to_the_middle_step_despite_rounding():
    space = parse_space({"params": {"dropout": {"target": "model.dropout", "type": "float", "low": 0.0, "high": 0.3,
                                                "step": 0.05}}})
    assert space.params[0].default_raw() == 0.15  # (0.3 - 0.0) / 0.05 is 5.999...; int() of half gave 0.1
