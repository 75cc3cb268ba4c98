"""The seven steps of masked self-attention: every number equals the real forward pass's intermediate."""

import json
import math
import re

import pytest
import torch

import wordformer.attention as attention_module
from wordformer import DataConfig, LoadedModel, ModelConfig, TrainConfig, WordPredictor, WordTokenizer
from wordformer.checkpoint import wordformer_entry
from wordformer.cli import main
from wordformer.errors import WordformerError
from wordformer.explain import explain_prompt, explain_token, format_explanation
from wordformer.generation import never_generated, next_token_probabilities, predict_next, suppress

TOY = ["what is statquest <eos> awesome <eos>", "statquest is what <eos> awesome <eos>"]


@pytest.fixture
def tok():
    return WordTokenizer.train(TOY)


def random_model(tok, **overrides):
    torch.manual_seed(1)
    kw = dict(vocab_size=tok.vocab_size, d_model=2, num_heads=1, num_layers=1, block_size=8, norm="none")
    kw.update(overrides)
    model = WordPredictor(ModelConfig(**kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.8)
    return model


def record_forward(model, idx, layer, monkeypatch):
    """Run the real forward pass, recording scaled_dot_product's inputs/outputs and the block's tensors."""
    calls = []
    real = attention_module.scaled_dot_product

    def recording(q, k, v, mask=None, *, scale=None):
        values, weights = real(q, k, v, mask, scale=scale)
        calls.append(dict(q=q, k=k, v=v, values=values, weights=weights))
        return values, weights

    monkeypatch.setattr(attention_module, "scaled_dot_product", recording)
    block = model.blocks[layer]
    seen = {}
    hooks = [
        block.register_forward_pre_hook(lambda m, a: seen.__setitem__("block_input", a[0])),
        block.attention.register_forward_hook(lambda m, a, out: seen.__setitem__("attention_output", out[0])),
        # the residual (x + attention) enters norm2 in a pre-norm block and norm1 otherwise
        (block.norm2 if block.pre_norm else block.norm1).register_forward_pre_hook(
            lambda m, a: seen.__setitem__("residual", a[0])),
        block.norm1.register_forward_hook(lambda m, a, out: seen.__setitem__("norm1_output", out)),
    ]
    try:
        with torch.no_grad():
            logits, attentions = model(idx, return_attention=True)
    finally:
        for h in hooks:
            h.remove()
    return calls[layer], seen, logits, attentions


RECIPE_OPTIONS = [  # issue 15: each option alone, then all at once
    dict(positional="rope"), dict(positional="rope", rope_base=100.0), dict(norm_type="rmsnorm"), dict(qk_norm=True),
    dict(qk_norm=True, attn_scale=0.3), dict(attn_scale=1.5), dict(activation="relu2"), dict(activation="swiglu"),
    dict(logit_softcap=2.0), dict(zero_init_residual=True), dict(tie_weights=False, zero_init_output=True),
    dict(positional="rope", norm_type="rmsnorm", qk_norm=True, attn_scale=0.4, activation="swiglu", logit_softcap=3.0,
         tie_weights=False, bias=False),
]


@pytest.mark.parametrize("norm, layer, head, token, options", [
    ("none", 0, 0, -1, {}), ("pre", 1, 1, 2, {}), ("post", 1, 0, 3, {}), ("pre", 0, 1, 0, {}),
    *[("pre", 1, 1, 3, o) for o in RECIPE_OPTIONS], ("post", 0, 0, 2, RECIPE_OPTIONS[-1]),
    ("none", 0, 1, 3, RECIPE_OPTIONS[0]),
])
def test_every_step_equals_the_forward_pass(tok, monkeypatch, norm, layer, head, token, options):
    model = random_model(tok, d_model=4, num_heads=2, num_layers=2, norm=norm, **options)
    ids = tok.encode("what is statquest <eos> awesome")
    e = explain_token(model, ids, layer, head, token, tokenizer=tok)
    t = token % len(ids)
    rec, seen, logits, attentions = record_forward(model, torch.tensor([ids]), layer, monkeypatch)
    close = dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e.block_input, seen["block_input"][0, : t + 1], **close)
    torch.testing.assert_close(e.query, rec["q"][0, head, t], **close)  # 1
    torch.testing.assert_close(e.keys, rec["k"][0, head, : t + 1], **close)  # 2
    scale = options.get("attn_scale", 1 / math.sqrt(2))
    assert e.score_factor == pytest.approx(scale)
    torch.testing.assert_close(e.scores, e.keys @ e.query * scale, **close)  # 3
    torch.testing.assert_close(e.weights, attentions[layer][0, head, t, : t + 1], **close)  # 4
    torch.testing.assert_close(e.weights, rec["weights"][0, head, t, : t + 1], **close)
    assert float(rec["weights"][0, head, t, t + 1 :].sum()) == 0.0  # later tokens are masked
    torch.testing.assert_close(e.values, rec["v"][0, head, : t + 1], **close)  # 5
    torch.testing.assert_close(e.weighted, e.weights[:, None] * e.values, **close)  # 6
    torch.testing.assert_close(e.summed, rec["values"][0, head, t], **close)  # 7
    torch.testing.assert_close(e.head_outputs, rec["values"][0, :, t].reshape(-1), **close)
    torch.testing.assert_close(e.attention_output, seen["attention_output"][0, t], **close)
    torch.testing.assert_close(e.residual, seen["residual"][0, t], **close)
    torch.testing.assert_close(e.residual, e.block_input[t] + e.attention_output, **close)
    if norm == "post":
        torch.testing.assert_close(e.normed_residual, seen["norm1_output"][0, t], **close)
    else:
        assert e.normed_residual is None
    if norm == "pre":
        torch.testing.assert_close(e.attention_input, seen["norm1_output"][0, : t + 1], **close)
    allowed = suppress(logits[0, t], never_generated(tok))  # <pad> is masked, as in generation
    torch.testing.assert_close(e.probabilities, torch.softmax(allowed, -1), **close)
    assert e.top[0][0] == tok.id_to_token(int(allowed.argmax()))
    if layer == 0:
        torch.testing.assert_close(e.embedding + e.position, e.block_input, **close)


def test_a_hand_built_toy_gives_numbers_a_person_can_check(tok):
    """d_model = 2, identity query/key/value maps, no positions: step 3 is q . k / sqrt(2) of the embeddings."""
    model = WordPredictor(ModelConfig(vocab_size=tok.vocab_size, d_model=2, num_heads=1, num_layers=1,
                                      block_size=8, norm="none", positional="learned")).eval()
    vectors = {"what": [1.0, 0.0], "is": [0.0, 1.0], "statquest": [1.0, 1.0], "<eos>": [-1.0, 0.0]}
    with torch.no_grad():
        model.positional_encoding.table.weight.zero_()
        for word, vec in vectors.items():
            model.token_embedding.weight[tok.token_to_id(word)] = torch.tensor(vec)
        model.blocks[0].attention.qkv.weight.copy_(torch.eye(2).repeat(3, 1))  # q = k = v = x
        model.blocks[0].attention.qkv.bias.zero_()
    e = explain_token(model, tok.encode("what is statquest <eos>"), tokenizer=tok)
    assert e.query.tolist() == [-1.0, 0.0]
    assert e.keys.tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]
    scores = [-1 / math.sqrt(2), 0.0, -1 / math.sqrt(2), 1 / math.sqrt(2)]
    assert e.scores.tolist() == pytest.approx(scores, abs=1e-6)
    total = sum(math.exp(s) for s in scores)
    weights = [math.exp(s) / total for s in scores]
    assert e.weights.tolist() == pytest.approx(weights, abs=1e-6)
    assert e.summed.tolist() == pytest.approx(
        [weights[0] + weights[2] - weights[3], weights[1] + weights[2]], abs=1e-6)


def test_the_first_token_attends_only_to_itself(tok):
    model = random_model(tok)
    e = explain_token(model, tok.encode("statquest is what"), token=0, tokenizer=tok)
    assert e.weights.tolist() == [1.0]
    torch.testing.assert_close(e.summed, e.values[0])
    assert "sees only itself" in format_explanation(e)


@pytest.mark.parametrize("kwargs, words", [
    (dict(layer=1), ["layer 1", "1 layer", "0..0"]),
    (dict(head=2), ["head 2", "2 heads", "0..1"]),
    (dict(token=4), ["token 4", "4 tokens", "0..3"]),
    (dict(token=-5), ["token -5", "-4..-1"]),
])
def test_bad_indices_name_the_valid_range(tok, kwargs, words):
    model = random_model(tok, d_model=4, num_heads=2)
    with pytest.raises(WordformerError) as info:
        explain_token(model, tok.encode("what is statquest <eos>"), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_format_labels_each_step_with_tokens_and_four_decimals(tok):
    model = random_model(tok)
    loaded = LoadedModel(model, tok, model.config, DataConfig(pairs=True), TrainConfig())
    e = explain_prompt(loaded, "what is statquest")  # a pair model: <eos> is appended and explained
    assert e.tokens == ["what", "is", "statquest", "<eos>"] and e.token == 3
    text = format_explanation(e, weights=True)
    for step in range(1, 8):
        assert re.search(rf"^{step}\. ", text, re.M), step
    assert "W_q" in text and "residual connection" in text
    step4 = text.split("\n4. ")[1].split("\n5. ")[0].splitlines()[1:]
    assert [line.split()[1] for line in step4] == e.tokens
    assert [float(line.split()[2]) for line in step4] == pytest.approx(e.weights.tolist(), abs=5e-5)
    numbers = re.findall(r"-?\d+\.\d+", text.split("\n1. ")[1])
    assert numbers and all(len(n.split(".")[1]) == 4 for n in numbers)
    wide = format_explanation(explain_token(random_model(tok, d_model=32, num_heads=2), e.ids, tokenizer=tok))
    assert "(16 values)" in wide  # long vectors are abbreviated


def save_checkpoint(model, tok, path):
    entry = wordformer_entry(model.config, DataConfig(pairs=True), TrainConfig(), tok, step=0)
    torch.save({"wordformer": entry, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return str(path)


def test_cli_prints_the_steps_and_json(tok, tmp_path, capsys):
    ckpt = save_checkpoint(random_model(tok), tok, tmp_path / "toy.ckpt")
    assert main(["explain", "--checkpoint", ckpt, "--prompt", "what is statquest", "--weights"]) == 0
    out = capsys.readouterr().out
    assert "token 3 '<eos>'" in out and "7. sum of the weighted values" in out and "W_v" in out
    assert main(["explain", "--checkpoint", ckpt, "--prompt", "what is statquest", "--token", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["token"] == 1 and len(data["weights"]) == 2 and sum(data["weights"]) == pytest.approx(1.0)
    code = main(["explain", "--checkpoint", ckpt, "--prompt", "what is statquest", "--layer", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("wordformer: error:") == 1 and "0..0" in err and "Traceback" not in err


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_step_zero_says_when_the_embedding_is_scaled(tok, positional):
    """With sinusoidal positions the model multiplies the table's row by sqrt(d_model): the label must say so,
    or the printed vector does not match token_embedding.weight."""
    model = random_model(tok, positional=positional, d_model=4, num_heads=2)
    ids = tok.encode("what is statquest")
    e = explain_token(model, ids, tokenizer=tok)
    factor = 2.0 if positional == "sinusoidal" else 1.0  # sqrt(4)
    assert torch.allclose(e.embedding, model.token_embedding.weight[ids].detach() * factor)
    text = format_explanation(e)
    assert ("sqrt(d_model) = 2" in text) == (positional == "sinusoidal")


def test_next_tokens_never_offer_pad_just_like_predict(tok, tmp_path, capsys):
    """predict and generate never emit <pad>; explain's probabilities and top list must agree with them, even
    when <pad> is the model's favourite and --top-k asks for the whole vocabulary."""
    model = random_model(tok)
    model.output_layer.register_forward_hook(lambda m, a, out: out + 50.0 * (torch.arange(out.size(-1)) == tok.pad_id))
    ids = tok.encode("what is statquest")
    raw = torch.softmax(model(torch.tensor([ids]))[0][0, -1].detach(), -1)
    assert int(raw.argmax()) == tok.pad_id  # without the fix <pad> would top the list
    e = explain_token(model, ids, tokenizer=tok, top_k=100_000)
    assert "<pad>" not in [t for t, _ in e.top] and len(e.top) == tok.vocab_size - 1
    assert float(e.probabilities[tok.pad_id]) == 0.0 and float(e.probabilities.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(e.probabilities, next_token_probabilities(model, ids, never_generated(tok)))
    predicted = predict_next(model, tok, "what is statquest", k=3)
    assert [p for _, p in e.top[:3]] == pytest.approx([p for _, p in predicted])
    without_tokenizer = explain_token(model, ids, top_k=1)  # the pad id is unknown: the raw distribution
    assert without_tokenizer.top[0][0] == str(tok.pad_id)

    ckpt = save_checkpoint(model, tok, tmp_path / "toy.ckpt")
    assert main(["explain", "--checkpoint", ckpt, "--prompt", "what is statquest", "--top-k", "100000"]) == 0
    out = capsys.readouterr().out
    assert "<pad>" not in out.split("next token after")[1] and "<eos>" in out.split("next token after")[1]


# ------------------------------------------------------------------------------------------ readable tokens (issue 13)


def test_bpe_tokens_read_as_their_text_and_an_emoji_as_its_character():
    """Byte-level entries showed raw: the emoji read "ð Ł ĺ Ģ" and a space "Ġ"."""
    from wordformer.tokenizers import BPETokenizer

    bpe = BPETokenizer.train(["the cat sat on the mat"] * 5, vocab_size=280)
    model = random_model(bpe, d_model=8, num_heads=2, block_size=16)
    ids = bpe.encode("the 😀 cat")
    e = explain_token(model, ids, tokenizer=bpe, token=-1)
    emoji = ["\\xf0⟨😀⟩", "\\x9f⟨😀⟩", "\\x98⟨😀⟩", "\\x80⟨😀⟩"]
    assert e.labels == ["the", "␣", *emoji, "␣cat"]
    assert e.tokens == [bpe.id_to_token(i) for i in ids]  # the JSON keeps the vocabulary entries too
    text = format_explanation(e)
    assert "token 6 '␣cat' in: the ␣ \\xf0⟨😀⟩ \\x9f⟨😀⟩ \\x98⟨😀⟩ \\x80⟨😀⟩ ␣cat" in text
    step4 = text.split("\n4. ")[1].split("\n5. ")[0].splitlines()[1:]
    assert [line.split()[1] for line in step4] == e.labels
    raw = {bpe.id_to_token(i) for i in ids} - {"the"}  # "Ġ", "ð", "Ł", "ĺ", "Ģ", "Ġcat"
    assert not any(r in text for r in raw) and "\ufffd" not in text
    data = e.to_dict()
    assert data["labels"] == e.labels and all(set(t) == {"token", "label", "probability"} for t in data["top"])
    assert [t["label"] for t in data["top"]] == e.top_labels and "\ufffd" not in "".join(e.top_labels)
