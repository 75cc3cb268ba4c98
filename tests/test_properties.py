"""Properties that must hold for any input (hypothesis): the guarantees the rest of the code relies on.

* tokenizers: char and BPE round-trip any text exactly; word round-trips up to ``WordTokenizer.normalize``;
* the model is causal: later tokens never change earlier logits;
* decoding with the KV cache gives the logits and the greedy tokens of decoding without it;
* attention rows are probability distributions with nothing above the diagonal;
* reading any bytes as a checkpoint either works or raises WordformerError (one line), never anything else.
"""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import SMALL_TEXT
from wordformer.attention import causal_mask, scaled_dot_product
from wordformer.checkpoint import load_checkpoint, wordformer_entry
from wordformer.config import DataConfig, ModelConfig, TrainConfig
from wordformer.errors import WordformerError
from wordformer.generation import generate_ids
from wordformer.model import WordPredictor
from wordformer.tokenizers import EOS, BPETokenizer, CharTokenizer, WordTokenizer

PROPERTY = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FEW = settings(PROPERTY, max_examples=20)

# any text: every Unicode category except surrogates (not encodable), with the specials' literal text mixed in
texts = st.one_of(
    st.text(max_size=120),
    st.lists(st.sampled_from(["the", " ", "cat", "\n", "\r\n", "\t", "<eos>", "<pad>", "<unk>", "🙂", "é", "e\u0301",
                              "İ", "don't", "(", ")", ".", "  ", "\x00", "漢字", "\u200b"]),
             max_size=30).map("".join),
)


# ------------------------------------------------------------------------------------------ tokenizers


@PROPERTY
@given(texts)
def test_char_round_trip_is_exact_for_text_it_was_trained_on(text):
    if not text.replace(EOS, ""):
        with pytest.raises(WordformerError):
            CharTokenizer.train([text])
        return
    tok = CharTokenizer.train([text])
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids) and tok.unk_id not in ids


@PROPERTY
@given(st.text(min_size=1, max_size=60).filter(lambda t: EOS not in t))
def test_char_unknown_characters_become_unk_and_nothing_crashes(text):
    tok = CharTokenizer.train(["abc"])
    ids = tok.encode(text)
    assert ids == [tok.token_to_id(ch) if ch in "abc" else tok.unk_id for ch in text]
    assert tok.decode(ids) == "".join(ch if ch in "abc" else "<unk>" for ch in text)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train([SMALL_TEXT, "naïve café 🙂 漢字\n"], vocab_size=300)


@PROPERTY
@given(texts)
@example("ab ü🙂 漢 " * 4000)  # longer than one encoder chunk (split_for_bpe)
@example("x" * 20_000)  # one long run without spaces: no safe cut
def test_bpe_round_trip_is_exact_for_any_text(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert all(0 <= i < bpe.vocab_size for i in ids)


@PROPERTY
@given(texts, st.booleans())
def test_word_round_trip_is_exact_up_to_normalisation(text, lowercase):
    probe = WordTokenizer(["<pad>", "<eos>", "<unk>"], lowercase=lowercase)
    if not [w for w in probe.split(text) if w != EOS]:
        with pytest.raises(WordformerError):
            WordTokenizer.train([text], lowercase=lowercase)
        return
    tok = WordTokenizer.train([text], lowercase=lowercase)
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == tok.normalize(text)


# ------------------------------------------------------------------------------------------ the model


@st.composite
def models(draw, *, max_layers: int = 2) -> WordPredictor:
    heads = draw(st.sampled_from([1, 2, 4]))
    tied = draw(st.booleans())
    cfg = ModelConfig(vocab_size=draw(st.integers(5, 40)), block_size=draw(st.integers(2, 10)), d_model=16,
                      num_heads=heads, num_layers=draw(st.integers(1, max_layers)),
                      positional=draw(st.sampled_from(["sinusoidal", "learned", "rope"])),
                      norm=draw(st.sampled_from(["pre", "post", "none"])),
                      activation=draw(st.sampled_from(["gelu", "relu", "relu2", "swiglu"])), tie_weights=tied,
                      bias=draw(st.booleans()),
                      # the recipe options (issue 15); zero-initialised layers are scaled up below like the rest
                      norm_type=draw(st.sampled_from(["layernorm", "rmsnorm"])), qk_norm=draw(st.booleans()),
                      attn_scale=draw(st.sampled_from([None, 0.3])), logit_softcap=draw(st.sampled_from([0.0, 50.0])),
                      zero_init_output=not tied and draw(st.booleans()))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    model = WordPredictor(cfg).eval()
    with torch.no_grad():  # larger than initial weights, so a leak through the mask could not hide in rounding
        for p in model.parameters():
            if p.any():
                p.mul_(10.0)
            else:  # a zero-initialised output layer: give it weights too
                p.normal_(0.0, 0.2)
    return model


def token_ids(draw, model: WordPredictor, batch: int, length: int) -> torch.Tensor:
    values = draw(st.lists(st.integers(0, model.config.vocab_size - 1), min_size=batch * length,
                           max_size=batch * length))
    return torch.tensor(values, dtype=torch.long).view(batch, length)


@PROPERTY
@given(st.data(), models(), st.booleans())
def test_future_tokens_never_change_past_logits(data, model, fused):
    t = data.draw(st.integers(2, model.config.block_size))
    cut = data.draw(st.integers(1, t - 1))
    x = token_ids(data.draw, model, 2, t)
    y = x.clone()
    y[:, cut:] = token_ids(data.draw, model, 2, t - cut)
    with torch.no_grad():
        a, b = model(x, fused=fused), model(y, fused=fused)
    torch.testing.assert_close(a[:, :cut], b[:, :cut], rtol=1e-5, atol=1e-4)


@PROPERTY
@given(st.data(), models())
def test_cached_step_by_step_logits_equal_the_full_forward(data, model):
    t = data.draw(st.integers(1, model.config.block_size))
    prefix = data.draw(st.integers(1, t))
    x = token_ids(data.draw, model, 2, t)
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2)
        steps = [model(x[:, :prefix], cache=cache)]
        for i in range(prefix, t):
            steps.append(model(x[:, i:i + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-4)


@FEW
@given(st.data(), models(max_layers=1))
def test_cached_and_uncached_greedy_generation_agree(data, model):
    """Ragged batches, prompts longer than the context, and enough new tokens to slide the window."""
    block = model.config.block_size
    prompts = data.draw(st.lists(st.lists(st.integers(0, model.config.vocab_size - 1), min_size=1,
                                          max_size=2 * block), min_size=1, max_size=3))
    steps = data.draw(st.integers(0, 2 * block + 2))
    with_cache = generate_ids(model, prompts, max_new_tokens=steps, temperature=0, use_cache=True)
    without = generate_ids(model, prompts, max_new_tokens=steps, temperature=0, use_cache=False)
    assert with_cache == without
    assert all(len(row) == steps for row in with_cache)


@PROPERTY
@given(st.data(), models())
def test_attention_rows_sum_to_one_and_are_zero_above_the_diagonal(data, model):
    t = data.draw(st.integers(1, model.config.block_size))
    x = token_ids(data.draw, model, 2, t)
    with torch.no_grad():
        _, attentions = model(x, return_attention=True)
    assert len(attentions) == model.config.num_layers
    above = ~causal_mask(t)  # (T, T) True where a query would see the future
    for att in attentions:  # (B, H, T, T)
        assert att.shape == (2, model.config.num_heads, t, t)
        torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:-1]), rtol=0, atol=1e-5)
        assert torch.all(att[..., above] == 0)
        assert torch.all(att >= 0)


@PROPERTY
@given(st.integers(1, 6), st.integers(0, 6), st.integers(1, 8), st.integers(0, 2**16))
def test_scaled_dot_product_with_a_cache_offset_masks_exactly_the_future(t, past, d, seed):
    """Queries are the last T of S = past + T keys: query i sees keys 0..past+i and nothing else."""
    g = torch.Generator().manual_seed(seed)
    s = past + t
    q, k, v = (torch.randn(2, 3, n, d, generator=g) * 5 for n in (t, s, s))
    values, attention = scaled_dot_product(q, k, v, causal_mask(t, s))
    visible = torch.arange(s)[None, :] <= torch.arange(t)[:, None] + past  # (T, S)
    assert torch.all(attention[..., ~visible] == 0)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 3, t), rtol=0, atol=1e-5)
    torch.testing.assert_close(values, attention @ v)


# ------------------------------------------------------------------------------------------ checkpoint reading


class Blob(bytes):
    """Bytes with a short repr, so a failing example does not print the whole checkpoint."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes of a valid checkpoint>"


@pytest.fixture(scope="module")
def checkpoint_bytes() -> Blob:
    tok = CharTokenizer.train(["abc de"])
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=4, d_model=8, num_heads=2, num_layers=1)
    torch.manual_seed(0)
    model = WordPredictor(cfg)
    buffer = io.BytesIO()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "wordformer": wordformer_entry(cfg, DataConfig(tokenizer="char"), TrainConfig(), tok)}, buffer)
    return Blob(buffer.getvalue())


def _load_or_refuse(path) -> None:
    """A damaged file may still load (if the damage missed everything that matters) or be refused in one line."""
    try:
        load_checkpoint(path)
    except WordformerError as exc:
        assert "\n" not in str(exc)
        # torch's own advice (load with weights_only=False) is the unsafe thing to do with a foreign file
        assert "weights_only" not in str(exc), str(exc)


@PROPERTY
@given(st.binary(max_size=400), st.sampled_from(["x.ckpt", "x.safetensors"]))
@example(b"this is not a checkpoint\n", "x.ckpt")
@example(b"\x80\x02}q\x00.", "x.ckpt")  # a pickled empty dict: readable, but not a wordformer checkpoint
@example(b"\x80\x02%garbage", "x.ckpt")  # an opcode the weights-only unpickler refuses
def test_arbitrary_bytes_are_refused_in_one_line(tmp_path_factory, data, name):
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data)
    _load_or_refuse(path)


@PROPERTY
@given(st.data())
def test_damaged_checkpoints_load_or_are_refused_in_one_line(tmp_path_factory, checkpoint_bytes, data):
    raw = bytearray(checkpoint_bytes)
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="keep")]
    else:
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            at = data.draw(st.integers(0, len(raw) - 1), label="at")
            raw[at] = data.draw(st.integers(0, 255), label="byte")
    path = tmp_path_factory.mktemp("fuzz") / "damaged.ckpt"
    path.write_bytes(bytes(raw))
    _load_or_refuse(path)
