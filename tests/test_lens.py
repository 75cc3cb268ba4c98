"""Logit lens, head ablation, the sampling distribution and readable tokens: the page's numbers, checked
against the model's own forward pass and generation's own sampling."""

import math

import pytest
import torch

from wordformer import ModelConfig, WordPredictor
from wordformer.errors import WordformerError
from wordformer.generation import filter_logits, generate_ids, next_token
from wordformer.lens import ablated_heads, check_heads, head_ablation, logit_lens, sampling_distribution
from wordformer.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer
from wordformer.token_display import byte_level_decoder, readable_tokens, visible


def model_for(norm: str, *, layers: int = 2, heads: int = 2, d_model: int = 8, vocab: int = 23) -> WordPredictor:
    torch.manual_seed(3)
    model = WordPredictor(ModelConfig(vocab_size=vocab, d_model=d_model, num_heads=heads, num_layers=layers,
                                      block_size=12, norm=norm)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)  # larger than the init, so every head matters
    return model


IDS = [3, 7, 1, 9, 4, 4, 12]


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_lens_stages_are_the_residual_stream_and_the_last_is_the_model_output(norm):
    model = model_for(norm)
    x = torch.tensor([IDS])
    lens = logit_lens(model, IDS)
    assert lens.stages == ["embedding", "layer 0", "layer 1"]
    assert lens.logits.shape == (3, len(IDS), 23) and lens.residual.shape == (3, len(IDS), 8)
    with torch.no_grad():
        logits = model(x)[0]
        torch.testing.assert_close(lens.logits[-1], logits)
        torch.testing.assert_close(lens.residual[0], model.embed(x)[0])
        h = model.embed(x)
        for i, block in enumerate(model.blocks):
            h, _ = block(h)
            torch.testing.assert_close(lens.residual[i + 1], h[0])
        # each stage read through the model's own final norm and output layer, the last one included
        torch.testing.assert_close(model.output_layer(model.final_norm(lens.residual[-1])), logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lens.probabilities.sum(-1), torch.ones(3, len(IDS)))


def test_lens_bans_ids_and_refuses_bad_sequences():
    model = model_for("pre")
    lens = logit_lens(model, IDS, banned=[0])
    assert torch.all(lens.probabilities[..., 0] == 0)
    with pytest.raises(WordformerError, match="block_size=12"):
        logit_lens(model, list(range(13)))
    with pytest.raises(WordformerError, match="vocabulary"):
        logit_lens(model, [1, 99])
    with pytest.raises(WordformerError, match="no tokens"):
        logit_lens(model, [])


def test_ablating_nothing_is_the_forward_pass():
    model = model_for("pre")
    with torch.no_grad():
        logits = model(torch.tensor([IDS]))[0]
    torch.testing.assert_close(logit_lens(model, IDS, ablate=[]).logits[-1], logits)
    result = head_ablation(model, IDS, [])
    assert result.heads == [] and result.kl_divergence == 0.0
    torch.testing.assert_close(result.before, result.after)


@pytest.mark.parametrize("norm", ["pre", "none"])
def test_ablating_a_head_is_zeroing_its_columns_of_the_output_projection(norm):
    """Switching head 1 of layer 1 off must equal a model whose W_o ignores that head, and leave earlier layers be."""
    model = model_for(norm)
    d = model.config.head_size
    plain = logit_lens(model, IDS)
    off = logit_lens(model, IDS, ablate=[(1, 1)])
    torch.testing.assert_close(off.residual[:2], plain.residual[:2])  # embedding and layer 0: untouched
    assert not torch.allclose(off.residual[2], plain.residual[2])  # layer 1's output changes
    surgery = model_for(norm)
    with torch.no_grad():
        surgery.blocks[1].attention.out.weight[:, d:2 * d] = 0.0
        torch.testing.assert_close(off.logits[-1], surgery(torch.tensor([IDS]))[0])
    # the head's attention weights are still computed: only its output is removed
    with ablated_heads(model, [(1, 1)]), torch.no_grad():
        _, maps_off = model(torch.tensor([IDS]), return_attention=True)
    with torch.no_grad():
        _, maps = model(torch.tensor([IDS]), return_attention=True)
    for a, b in zip(maps_off, maps):
        torch.testing.assert_close(a, b)
    result = head_ablation(model, IDS, [[1, 1]], position=3)
    assert result.heads == [(1, 1)] and result.position == 3 and result.kl_divergence > 0
    torch.testing.assert_close(result.after, torch.softmax(off.logits[-1, 3], -1))


def test_ablation_holds_in_cached_generation_and_the_hooks_go_away():
    model = model_for("pre")
    with ablated_heads(model, [(0, 0), (1, 1)]):
        cached = generate_ids(model, [IDS[:3]], max_new_tokens=6, temperature=0, use_cache=True)
        uncached = generate_ids(model, [IDS[:3]], max_new_tokens=6, temperature=0, use_cache=False)
    assert cached == uncached
    assert all(not block.attention.out._forward_pre_hooks for block in model.blocks)
    with pytest.raises(RuntimeError), ablated_heads(model, [(0, 1)]):
        raise RuntimeError("boom")
    assert all(not block.attention.out._forward_pre_hooks for block in model.blocks)


@pytest.mark.parametrize("bad, words", [([(2, 0)], "does not exist"), ([(0, -1)], "does not exist"),
                                        ([(0,)], "pair"), ([("0", 1)], "pair"), ([(True, 0)], "pair")])
def test_bad_heads_are_one_clear_error(bad, words):
    with pytest.raises(WordformerError, match=words):
        check_heads(model_for("pre"), bad)


def test_check_heads_sorts_and_drops_repeats():
    assert check_heads(model_for("pre"), [[1, 0], (0, 1), [1, 0]]) == [(0, 1), (1, 0)]


# ------------------------------------------------------------------------------------------ sampling


LOGITS = torch.tensor([2.0, 1.0, 0.5, -1.0, 3.0, 0.0, -0.5])


def test_sampling_distribution_plain_is_the_softmax():
    s = sampling_distribution(LOGITS)
    torch.testing.assert_close(s.renormalised, torch.softmax(LOGITS, -1))
    assert bool(s.kept.all())
    p = torch.softmax(LOGITS.double(), -1)
    assert s.entropy == pytest.approx(float(-(p * p.log()).sum()))
    assert s.entropy_bits == pytest.approx(s.entropy / math.log(2))


def test_sampling_distribution_cuts_like_generation():
    s = sampling_distribution(LOGITS, temperature=0.5, top_k=4, top_p=0.9, banned=[0])
    assert not s.kept[0] and float(s.probabilities[0]) == 0.0  # banned
    scaled = (LOGITS.double() - 3.0) / 0.5
    scaled[0] = float("-inf")
    expected = filter_logits(scaled[None], top_k=4, top_p=0.9)[0]
    assert s.kept.tolist() == torch.isfinite(expected).tolist()
    assert 1 <= int(s.kept.sum()) < 4
    torch.testing.assert_close(s.renormalised, torch.softmax(expected, -1).float())
    assert float(s.renormalised[~s.kept].sum()) == 0.0 and float(s.renormalised.sum()) == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(0)
    draws = {int(next_token(LOGITS[None].clone().index_fill_(1, torch.tensor([0]), float("-inf")), temperature=0.5,
                            top_k=4, top_p=0.9, generator=gen)) for _ in range(300)}
    assert draws <= {i for i, k in enumerate(s.kept.tolist()) if k}  # generation never picks a cut token
    hotter = sampling_distribution(LOGITS, temperature=2.0)
    assert hotter.entropy > s.entropy and hotter.entropy > sampling_distribution(LOGITS).entropy


def test_sampling_distribution_greedy_keeps_one():
    s = sampling_distribution(LOGITS, temperature=0)
    assert s.kept.tolist() == [i == 4 for i in range(7)] and s.entropy == 0.0
    assert float(s.renormalised[4]) == 1.0


@pytest.mark.parametrize("kwargs, words", [(dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p"),
                                           (dict(temperature=float("nan")), "temperature")])
def test_sampling_distribution_refuses_bad_options(kwargs, words):
    with pytest.raises(WordformerError, match=words):
        sampling_distribution(LOGITS, **kwargs)


# ------------------------------------------------------------------------------------------ readable tokens


def test_bpe_pieces_never_show_replacement_characters():
    tok = BPETokenizer.train(["the cat sat on the mat, naïve café"] * 10, vocab_size=270)
    text = "a café € 😀 x"
    ids = tok.encode(text + " <eos>")
    items = readable_tokens(tok, ids)
    assert all("\ufffd" not in (t["label"] + (t["text"] or "")) for t in items)
    assert items[-1]["special"] == "eos" and items[-1]["label"] == "<eos>"
    # the pieces' bytes spell the text exactly
    joined = bytes.fromhex(" ".join(t["bytes"] for t in items[:-1])).decode("utf-8")
    assert joined == text + " "
    euro = [t for t in items if any(c["text"] == "€" for c in t.get("chars", []))]
    assert len(euro) >= 2 and all(t["partial"] for t in euro) and all(t["label"].startswith("\\x") for t in euro)
    span = euro[0]["chars"][0]["span"]
    assert bytes.fromhex(" ".join(items[i]["bytes"] for i in range(span[0], span[1] + 1))).decode() == "€"
    emoji = [t for t in items if any(c["text"] == "😀" for c in t.get("chars", []))]
    assert len(emoji) >= 2
    space = next(t for t in items if t["text"] == " ")
    assert space["label"] == "␣" and space["entry"] == "Ġ"


def test_byte_level_table_covers_every_byte_once():
    table = byte_level_decoder()
    assert sorted(table.values()) == list(range(256)) and table["Ġ"] == 32 and table["Ċ"] == 10


def test_word_and_char_tokens_mark_specials():
    words = WordTokenizer.train(["what is statquest <eos> awesome <eos>"])
    items = readable_tokens(words, words.encode("what is zebra <eos>"))
    assert [t["special"] for t in items] == [None, None, "unk", "eos"]
    assert [t["label"] for t in items] == ["what", "is", "<unk>", "<eos>"]
    assert readable_tokens(words, [0])[0]["special"] == "pad"
    chars = CharTokenizer.train(["ab c\n"])
    labels = [t["label"] for t in readable_tokens(chars, chars.encode("a b\nc"))]
    assert labels == ["a", "␣", "b", "↵", "c"]
    assert visible("") == "∅" and visible("\x01") == "\\x01"


def test_gpt2_style_end_of_text_reads_as_eos():
    """GPT-2's <|endoftext|> is both <eos> and <pad>: the page must call it <eos> (it ends text), not <pad>."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(["the cat sat"] * 5, trainers.BpeTrainer(
        vocab_size=270, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = BPETokenizer(hf, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    items = readable_tokens(tok, tok.encode("the cat<|endoftext|>"))
    assert items[-1]["special"] == "eos" and items[-1]["label"] == "<|endoftext|>"
    assert "".join(t["text"] for t in items[:-1]) == "the cat"
