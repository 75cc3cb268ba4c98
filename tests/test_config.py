"""config.py: each config validates itself and names the field and value; YAML and flat options become the
three configs; field types are read from the annotations."""

from __future__ import annotations

import pytest

from wordformer.config import (MIN_BPE_VOCAB, DataConfig, ModelConfig, TrainConfig, build_configs, coerce, field_help,
                               field_type, from_dict, read_config_file)
from wordformer.errors import WordformerError


@pytest.mark.parametrize("cls, kwargs, words", [
    (ModelConfig, dict(d_model=10, num_heads=3), ["num_heads=3", "d_model=10", "choose num_heads from [1, 2, 5, 10]"]),
    (ModelConfig, dict(d_model=0), ["d_model=0", "integer >= 1"]),
    (ModelConfig, dict(num_layers=0), ["num_layers=0"]),
    (ModelConfig, dict(block_size=-1), ["block_size=-1"]),
    (ModelConfig, dict(dropout=1.0), ["dropout=1.0", "[0.0, 1.0)"]),
    (ModelConfig, dict(dropout=-0.1), ["dropout=-0.1"]),
    (ModelConfig, dict(dropout=float("nan")), ["dropout=nan", "must be a number"]),
    (ModelConfig, dict(norm="middle"), ["norm='middle'", "pre, post, none"]),
    (ModelConfig, dict(activation="tanh"), ["activation='tanh'"]),
    (ModelConfig, dict(positional="rotary"), ["positional='rotary'", "sinusoidal, learned"]),
    (ModelConfig, dict(tie_weights="yes"), ["tie_weights='yes'", "true or false"]),
    (ModelConfig, dict(num_heads=True), ["num_heads=True", "integer"]),
    (DataConfig, dict(tokenizer="morse"), ["tokenizer='morse'", "word, char, bpe"]),
    (DataConfig, dict(tokenizer="bpe", bpe_vocab_size=MIN_BPE_VOCAB - 1), [f"bpe_vocab_size={MIN_BPE_VOCAB - 1}",
                                                                           f"below {MIN_BPE_VOCAB}"]),
    (DataConfig, dict(val_fraction=0.0), ["val_fraction=0.0", "(0.0, 0.5]"]),
    (TrainConfig, dict(lr=1e-3, min_lr=1e-2), ["min_lr=0.01", "lr=0.001"]),
    (TrainConfig, dict(warmup_steps=-1), ["warmup_steps=-1", "integer >= 0"]),
    (TrainConfig, dict(seed=2**32), ["seed=4294967296"]),
    (TrainConfig, dict(devices="0"), ["devices='0'"]),
])
def test_a_bad_value_is_refused_with_the_field_and_the_value(cls, kwargs, words):
    with pytest.raises(WordformerError) as info:
        cls(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_a_large_bpe_floor_only_matters_for_the_bpe_tokenizer():
    assert DataConfig(tokenizer="word", bpe_vocab_size=5).bpe_vocab_size == 5


def test_eos_auto_is_per_line_for_words_and_per_document_otherwise():
    assert [DataConfig(tokenizer=t).eos_mode() for t in ("word", "char", "bpe")] == ["line", "document", "document"]
    assert DataConfig(tokenizer="word", eos="none").eos_mode() == "none"


def test_field_types_come_from_the_annotations():
    assert field_type(ModelConfig, "d_model") is int
    assert field_type(TrainConfig, "max_time") is float  # Optional[float]
    assert field_type(DataConfig, "max_vocab") is int  # Optional[int]
    assert field_type(ModelConfig, "tie_weights") is bool
    assert field_type(DataConfig, "data") is str


def test_every_field_documents_itself_in_a_comment():
    for cls in (ModelConfig, DataConfig, TrainConfig):
        helps = field_help(cls)
        assert set(helps) == {f for f in cls.__dataclass_fields__}, cls.__name__


def test_yaml_values_are_coerced_and_a_misfit_names_its_key():
    assert coerce(TrainConfig, {"lr": "1e-3", "max_steps": 10.0, "max_time": None}, where="f.yaml") == {
        "lr": 1e-3, "max_steps": 10, "max_time": None}
    for values, words in [({"max_steps": 2.5}, "max_steps: 2.5 in f.yaml is not a valid int"),
                          ({"compile": "yes"}, "compile: 'yes' in f.yaml is not a valid bool"),
                          ({"lr": [1]}, "lr: [1] in f.yaml is not a valid float")]:
        with pytest.raises(WordformerError, match=words.replace("[", r"\[").replace("]", r"\]")):
            coerce(TrainConfig, values, where="f.yaml")


def test_unknown_keys_are_named_with_the_known_ones():
    with pytest.raises(WordformerError, match="unknown option.* in ckpt: flash; known: .*d_model"):
        from_dict(ModelConfig, {"flash": True}, where="ckpt")
    with pytest.raises(WordformerError, match="unknown option.*: heads"):
        build_configs({"heads": 2})


def test_a_config_file_may_be_flat_or_in_sections(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("d-model: 32\nnum_heads: 2\nlr: 1.0e-3\ntokenizer: char\n")
    sections = tmp_path / "sections.yaml"
    sections.write_text("model: {d_model: 32, num_heads: 2}\ntrain: {lr: 1.0e-3}\ndata: {tokenizer: char}\n")
    assert read_config_file(str(flat)) == read_config_file(str(sections))
    model, data, train = build_configs(read_config_file(str(sections)))
    assert (model.d_model, model.num_heads, data.tokenizer, train.lr) == (32, 2, "char", 1e-3)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_config_file(str(empty)) == {}
