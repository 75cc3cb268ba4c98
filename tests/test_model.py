"""The decoder-only transformer: embedding, positions, blocks, output layer."""

import pytest
import torch

from wordformer import ModelConfig, WordPredictor
from wordformer.errors import WordformerError
from wordformer.positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding, sinusoidal_table


def small(**kw) -> ModelConfig:
    base = dict(vocab_size=20, block_size=16, d_model=8, num_heads=2, num_layers=2)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("d_model", [1, 2, 3, 8])
def test_any_d_model_from_one_works(d_model):
    model = WordPredictor(small(d_model=d_model, num_heads=1))
    logits = model(torch.randint(0, 20, (2, 5)))
    assert logits.shape == (2, 5, 20)


def test_sinusoidal_table_follows_the_vaswani_formula():
    table = sinusoidal_table(10, 6)
    p, i = 7, 1
    assert table[p, 2 * i] == pytest.approx(torch.sin(torch.tensor(p / 10000 ** (2 * i / 6))).item(), abs=1e-6)
    assert table[p, 2 * i + 1] == pytest.approx(torch.cos(torch.tensor(p / 10000 ** (2 * i / 6))).item(), abs=1e-6)
    assert torch.equal(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_same_token_at_two_positions_gets_two_different_vectors(positional):
    torch.manual_seed(0)
    model = WordPredictor(small(positional=positional))
    vectors = model.embed(torch.tensor([[5, 5, 5]]))[0]  # (T, C)
    assert not torch.allclose(vectors[0], vectors[1])
    assert not torch.allclose(vectors[1], vectors[2])
    # and the difference is exactly the positional encoding
    pe = model.positional_encoding(torch.arange(3))
    assert torch.allclose(vectors - pe, model.token_embedding(torch.tensor([5, 5, 5])), atol=1e-6)


def test_positional_encoding_kinds_are_distinct_modules():
    assert isinstance(WordPredictor(small()).positional_encoding, SinusoidalPositionalEncoding)
    assert isinstance(WordPredictor(small(positional="learned")).positional_encoding, LearnedPositionalEncoding)


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_later_tokens_leave_earlier_logits_unchanged(norm, positional):
    torch.manual_seed(1)
    model = WordPredictor(small(norm=norm, positional=positional)).eval()
    idx = torch.randint(0, 20, (2, 12))
    changed = idx.clone()
    t = 6
    changed[:, t + 1 :] = torch.randint(0, 20, (2, 12 - t - 1))
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_tied_output_layer_is_the_embedding_matrix():
    model = WordPredictor(small())
    assert model.output_layer.weight is model.token_embedding.weight
    untied = WordPredictor(small(tie_weights=False))
    assert untied.output_layer.weight is not untied.token_embedding.weight
    assert untied.num_parameters() == model.num_parameters() + 20 * 8


def test_tied_logits_are_the_residual_stream_times_the_embedding_transposed():
    torch.manual_seed(2)
    model = WordPredictor(small(norm="none")).eval()
    x = torch.randn(1, 3, 8)
    assert torch.allclose(model.output_layer(x), x @ model.token_embedding.weight.T)


def test_post_norm_blocks_normalise_after_the_residual_sum():
    model = WordPredictor(small(norm="post", bias=True)).eval()
    block = model.blocks[0]
    x = torch.randn(1, 4, 8)
    out, _ = block(x)
    # a post-norm block ends with a layer norm: zero mean, unit variance per token (weights are 1, biases 0)
    assert torch.allclose(out.mean(-1), torch.zeros(1, 4), atol=1e-5)
    assert isinstance(model.final_norm, torch.nn.Identity)


def test_relu_and_gelu_are_both_available():
    assert isinstance(WordPredictor(small(activation="relu")).blocks[0].feed_forward.act, torch.nn.ReLU)
    assert isinstance(WordPredictor(small(activation="gelu")).blocks[0].feed_forward.act, torch.nn.GELU)


def test_dropout_is_active_in_training_and_off_in_eval():
    torch.manual_seed(3)
    model = WordPredictor(small(dropout=0.5))
    idx = torch.randint(0, 20, (2, 6))
    model.train()
    assert not torch.allclose(model(idx), model(idx))
    model.eval()
    assert torch.allclose(model(idx), model(idx))


def test_attention_maps_are_returned_per_layer():
    model = WordPredictor(small()).eval()
    idx = torch.randint(0, 20, (1, 5))
    logits, maps = model(idx, return_attention=True)
    assert len(maps) == 2 and maps[0].shape == (1, 2, 5, 5)
    assert torch.allclose(logits, model(idx), atol=1e-5)  # the explicit path computes the same logits


def test_sequences_longer_than_block_size_are_refused():
    model = WordPredictor(small(block_size=4))
    with pytest.raises(WordformerError, match="block_size"):
        model(torch.zeros(1, 5, dtype=torch.long))


@pytest.mark.parametrize("idx, words", [
    (torch.tensor([1, 2, 3]), ["(batch, tokens)", "1-D"]),
    (torch.tensor([[1.0, 2.0]]), ["torch.float32"]),
    ([[1, 2, 3]], ["list"]),
])
def test_ids_of_the_wrong_shape_or_type_get_one_line(idx, words):
    with pytest.raises(WordformerError) as err:
        WordPredictor(small())(idx)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_model_needs_a_model_config():
    with pytest.raises(WordformerError, match="needs a ModelConfig"):
        WordPredictor({"d_model": 16})
