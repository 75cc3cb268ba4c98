"""checkpoint.py: the stored block round-trips the configs and tokenizer, both formats rebuild the same model,
and torch's load errors become one readable sentence. (Refusing pickled code, damaged files and crash-safe
writes are in test_reliability.py and test_bad_inputs.py.)"""

from __future__ import annotations

import torch
from safetensors import safe_open

from wordformer.checkpoint import (KEY, TIED_KEY, load_checkpoint, load_error_reason, model_state_dict, parse_entry,
                                   read_checkpoint, save_safetensors, wordformer_entry)
from wordformer.config import DataConfig, ModelConfig, TrainConfig
from wordformer.errors import WordformerError
from wordformer.tokenizers import CharTokenizer


def test_the_stored_block_round_trips_configs_tokenizer_and_info():
    tok = CharTokenizer.train(["hello world"])
    model, data, train = ModelConfig(vocab_size=tok.vocab_size, d_model=8, num_heads=2), DataConfig(
        tokenizer="char", pairs=True), TrainConfig(lr=3e-3, max_steps=7)
    entry = wordformer_entry(model, data, train, tok, step=5, metrics={"val_loss": 1.5})
    back_model, back_data, back_train, back_tok, info = parse_entry({KEY: entry}, "x.ckpt")
    assert (back_model, back_data, back_train) == (model, data, train)
    assert back_tok.to_dict() == tok.to_dict() and info == {"step": 5, "metrics": {"val_loss": 1.5}}


def test_lightning_prefixes_are_stripped_from_the_model_tensors():
    raw = {"state_dict": {"model.token_embedding.weight": torch.ones(2), "val_accuracy.tp": torch.zeros(1)}}
    assert list(model_state_dict(raw)) == ["token_embedding.weight"]


def test_a_run_folder_given_as_checkpoint_is_named_with_its_best_file(trained_run):
    try:
        read_checkpoint(trained_run)
    except WordformerError as exc:
        assert "is a folder" in str(exc) and "DIR/best.ckpt" in str(exc)
    else:  # pragma: no cover - the assertion above is the test
        raise AssertionError("a folder was read as a checkpoint")


def test_both_formats_rebuild_the_same_model_and_the_tied_matrix_is_stored_once(trained_run, tmp_path):
    loaded = load_checkpoint(trained_run / "best.ckpt")
    assert loaded.model_config.tie_weights and not loaded.pairs
    path = save_safetensors(loaded, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        assert TIED_KEY not in fh.keys() and KEY in (fh.metadata() or {})
    back = load_checkpoint(path)
    ids = torch.tensor([loaded.tokenizer.encode("the cat sat")])
    assert torch.equal(back.model(ids), loaded.model(ids))
    assert back.model.output_layer.weight is back.model.token_embedding.weight  # tied again, not a copy


def test_torch_load_errors_become_whole_sentences_without_its_advice():
    message = ("Weights only load failed. This file can still be loaded, to do so you have two options, do those "
               "steps only if you trust the source of the checkpoint. \n\t(1) In PyTorch 2.6, we changed the default "
               "value of the `weights_only` argument in `torch.load` from `False` to `True`. Re-running `torch.load` "
               "with `weights_only` set to `False` will likely succeed, but it can result in arbitrary code execution."
               "\n WeightsUnpickler error: Unsupported operand 149. The file is damaged. (Could this error message be "
               "improved? If so, please report an enhancement request to PyTorch.)\n\nCheck the documentation of "
               "torch.load to learn more about types accepted by default with weights_only")
    assert load_error_reason(message) == "Unsupported operand 149. The file is damaged"
    assert load_error_reason("invalid load key, '\\x00'.") == "invalid load key, '\\x00'"
    assert load_error_reason("7") == "not a file that torch.save wrote"
    long = "word " * 200
    assert load_error_reason(long).endswith(" ...") and len(load_error_reason(long)) <= 205
