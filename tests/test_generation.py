"""Generation: sampling options, KV cache, batching, the context window, predict_next."""

import json

import pytest
import torch

from conftest import SMALL_TEXT, assert_one_line_error, run_cli
from wordformer import ModelConfig, WordPredictor, generate, predict_next
from wordformer.errors import WordformerError
from wordformer.generation import MAX_NEW_TOKENS, check_sampling, filter_logits, generate_ids
from wordformer.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer


def model_for(positional="sinusoidal", block_size=16, norm="pre", vocab=30, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, block_size=block_size, d_model=16, num_heads=4, num_layers=2,
                      positional=positional, norm=norm)
    return WordPredictor(cfg).eval()


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_cached_and_uncached_greedy_decoding_agree(positional, norm):
    model = model_for(positional, norm=norm)
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        prompt = torch.randint(0, 30, (int(torch.randint(1, 8, (1,), generator=gen)),), generator=gen).tolist()
        a = generate_ids(model, [prompt], max_new_tokens=12, temperature=0, use_cache=True)
        b = generate_ids(model, [prompt], max_new_tokens=12, temperature=0, use_cache=False)
        assert a == b


def test_cache_agrees_beyond_the_context_window():
    model = model_for("learned", block_size=8)
    prompt = [1, 2, 3, 4, 5, 6]
    a = generate_ids(model, [prompt], max_new_tokens=20, temperature=0, use_cache=True)
    b = generate_ids(model, [prompt], max_new_tokens=20, temperature=0, use_cache=False)
    assert a == b and len(a[0]) == 20


def test_prompt_longer_than_the_context_keeps_its_last_tokens():
    model = model_for(block_size=8)
    long_prompt = list(range(1, 20))
    assert generate_ids(model, [long_prompt], max_new_tokens=5, temperature=0) == generate_ids(
        model, [long_prompt[-8:]], max_new_tokens=5, temperature=0
    )


@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_prompts_of_different_lengths_match_one_by_one(use_cache):
    model = model_for("learned")
    prompts = [[3, 4, 5, 6, 7], [8], [9, 10, 11]]
    batched = generate_ids(model, prompts, max_new_tokens=6, temperature=0, use_cache=use_cache)
    single = [generate_ids(model, [p], max_new_tokens=6, temperature=0, use_cache=use_cache)[0] for p in prompts]
    assert batched == single


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_a_row_decodes_as_it_would_alone_when_the_window_slides(use_cache, positional):
    """Left-padded rows must not slide their window at the batch's padded length instead of their own."""
    model = model_for(positional)
    with torch.no_grad():  # weights far from the init, so greedy output depends on what the row sees
        for w in model.parameters():
            w.add_(torch.randn_like(w) * 0.3)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11], [5] * 20, [12, 13, 14]]
    for new in (5, 14, 40):  # before any slide, around the first, through several
        batched = generate_ids(model, prompts, max_new_tokens=new, temperature=0, use_cache=use_cache)
        single = [generate_ids(model, [p], max_new_tokens=new, temperature=0, use_cache=use_cache)[0] for p in prompts]
        assert batched == single, new


@pytest.mark.parametrize("prompts, words", [
    ([[1, -1]], ["token id -1", "0..29"]),  # would silently read the last embedding row
    ([[1, 30]], ["token id 30"]),
    ([[1, 2.0]], ["token id 2.0"]),
    ([1, 2, 3], ["list of prompts", "not a list of int"]),
    ("the cat", ["list of prompts"]),
    ([], ["list of prompts"]),
    ([[]], ["at least one token"]),
])
def test_prompts_that_are_not_token_ids_get_one_line(prompts, words):
    with pytest.raises(WordformerError) as err:
        generate_ids(model_for(), prompts, max_new_tokens=2)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("kwargs, word", [({"pad_id": 30}, "pad_id=30"), ({"eos_id": -1}, "eos_id=-1"),
                                          ({"seed": -1}, "seed=-1"), ({"seed": 1.5}, "seed=1.5")])
def test_bad_special_ids_and_seeds_get_one_line(kwargs, word):
    with pytest.raises(WordformerError, match=word.replace(".", r"\.")):
        generate_ids(model_for(), [[1, 2]], max_new_tokens=2, **kwargs)


def test_a_2d_tensor_of_prompts_is_accepted():
    model = model_for()
    assert generate_ids(model, torch.tensor([[1, 2], [3, 4]]), max_new_tokens=3, temperature=0) == \
        generate_ids(model, [[1, 2], [3, 4]], max_new_tokens=3, temperature=0)


def test_sampling_is_reproducible_with_a_seed():
    model = model_for()
    a = generate_ids(model, [[1, 2]], max_new_tokens=10, temperature=1.0, seed=7)
    b = generate_ids(model, [[1, 2]], max_new_tokens=10, temperature=1.0, seed=7)
    c = generate_ids(model, [[1, 2]], max_new_tokens=10, temperature=1.0, seed=8)
    assert a == b and a != c


def test_generation_stops_at_eos():
    model = model_for()
    with torch.no_grad():  # make token 1 overwhelmingly likely
        model.output_layer.bias = torch.nn.Parameter(torch.zeros(30))
        model.output_layer.bias[1] = 100.0
    out = generate_ids(model, [[4, 5]], max_new_tokens=10, temperature=0, eos_id=1)
    assert out == [[1]]


def test_top_k_keeps_only_k_candidates():
    logits = torch.tensor([[1.0, 5.0, 3.0, 2.0]])
    kept = filter_logits(logits, top_k=2)
    assert torch.isinf(kept).tolist() == [[True, False, False, True]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, top_p=0.7)
    assert torch.isfinite(kept).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, False, False]]


def test_top_k_one_samples_like_greedy():
    model = model_for()
    greedy = generate_ids(model, [[2, 3]], max_new_tokens=8, temperature=0)
    sampled = generate_ids(model, [[2, 3]], max_new_tokens=8, temperature=1.5, top_k=1, seed=3)
    assert greedy == sampled


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=0), "top_k"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
    ],
)
def test_bad_sampling_options_are_refused(kwargs, word):
    with pytest.raises(WordformerError, match=word):
        generate_ids(model_for(), [[1]], **kwargs)


def _word_setup():
    tok = WordTokenizer.train(["the cat sat on the mat", "the dog sat"])
    torch.manual_seed(0)
    model = WordPredictor(ModelConfig(vocab_size=tok.vocab_size, block_size=8, d_model=8, num_heads=2, num_layers=1)).eval()
    return model, tok


def test_predict_next_returns_k_tokens_with_descending_probabilities():
    model, tok = _word_setup()
    top = predict_next(model, tok, "the cat", 4)
    assert len(top) == 4
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and all(0 < p <= 1 for p in probs)
    assert all(isinstance(t, str) for t, _ in top)


def test_empty_and_all_unknown_prompts_are_refused():
    model, tok = _word_setup()
    with pytest.raises(WordformerError, match="empty"):
        generate(model, tok, "   ")
    with pytest.raises(WordformerError, match="unknown"):
        predict_next(model, tok, "zebra giraffe", 3)


def test_generate_returns_text_without_the_prompt():
    model, tok = _word_setup()
    text = generate(model, tok, "the cat", max_new_tokens=4, temperature=0)
    assert isinstance(text, str) and not text.startswith("the cat")


# ------------------------------------------------------------------------------------------ bounds and display


@pytest.mark.parametrize("max_new_tokens", [MAX_NEW_TOKENS + 1, 100_000_000_000, 10**22])
def test_huge_max_new_tokens_is_refused_before_allocating(max_new_tokens):
    check_sampling(1.0, None, None, MAX_NEW_TOKENS)  # the bound itself is allowed
    with pytest.raises(WordformerError, match="max_new_tokens.*limit"):
        check_sampling(1.0, None, None, max_new_tokens)


@pytest.mark.parametrize("temperature", ["inf", "-inf"])
def test_infinite_temperature_gets_one_line(temperature, trained_run, capsys):
    code, _, err = run_cli(capsys, "generate", "--checkpoint", trained_run / "best.ckpt", "--prompt", "the",
                           f"--temperature={temperature}")
    assert_one_line_error(code, err, "temperature", "finite")
    with pytest.raises(WordformerError, match="finite"):
        check_sampling(float(temperature), None, None, 5)


def test_a_tiny_temperature_samples_like_greedy():
    """Logits / 1e-300 overflowed to inf - inf = NaN, and multinomial raised."""
    model = model_for()
    greedy = generate_ids(model, [[2, 3]], max_new_tokens=8, temperature=0)
    assert generate_ids(model, [[2, 3]], max_new_tokens=8, temperature=1e-300, seed=0) == greedy


def _model_for(tok: Tokenizer, seed: int = 0) -> WordPredictor:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=8, d_model=8, num_heads=2, num_layers=1)
    return WordPredictor(cfg).eval()


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train([SMALL_TEXT], vocab_size=300)


def test_predict_next_shows_bpe_tokens_as_text_not_byte_level_entries(bpe):
    every = predict_next(_model_for(bpe), bpe, "the cat", bpe.vocab_size)
    shown = {t for t, _ in every}
    assert not any(ch in t for t in shown for ch in "\u0120\u010a")  # no "Ġ" (space) or "Ċ" (newline)
    assert {" cat", "\n", "<eos>"} <= shown
    whole = {bpe.decode([i]) for i in range(1, bpe.vocab_size)} - {"\ufffd"}
    assert whole <= shown


def test_predict_next_shows_bpe_byte_pieces_as_their_bytes_never_the_replacement_character(bpe):
    """Bytes 0x80-0xFF alone are no text: each read "\ufffd" (all alike); now each reads as its own bytes."""
    shown = [t for t, _ in predict_next(_model_for(bpe), bpe, "the cat", bpe.vocab_size)]
    assert not any("\ufffd" in t for t in shown)
    assert len(set(shown)) == len(shown) == bpe.vocab_size - 1  # every token its own text (no <pad>)
    assert {"\\xf0", "\\x80", "\\xc3"} <= set(shown)


def test_predict_next_shows_word_and_char_tokens_as_before():
    model, tok = _word_setup()
    assert {t for t, _ in predict_next(model, tok, "the cat", tok.vocab_size)} == set(tok._vocab[1:])
    chars = CharTokenizer.train(["ab c\nd"])
    shown = [t for t, _ in predict_next(_model_for(chars), chars, "ab", chars.vocab_size)]
    assert sorted(shown) == sorted(["<eos>", "<unk>", "a", "b", " ", "c", "\n", "d"])


def test_predict_json_of_a_bpe_model_reads_as_text(bpe, tmp_path, capsys):
    from wordformer.checkpoint import wordformer_entry
    from wordformer.config import DataConfig, TrainConfig

    model = _model_for(bpe)
    entry = wordformer_entry(model.config, DataConfig(tokenizer="bpe"), TrainConfig(), bpe, step=0)
    ckpt = tmp_path / "bpe.ckpt"  # an untrained model is enough: only the display is checked
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "wordformer": entry}, ckpt)
    code, out, err = run_cli(capsys, "predict", "--checkpoint", ckpt, "--prompt", "the", "--k",
                             str(bpe.vocab_size), "--json")
    assert code == 0, err
    tokens = [p["token"] for p in json.loads(out)]
    assert {" cat", "\n", "<eos>"} <= set(tokens) and not any("\u0120" in t or "\u010a" in t for t in tokens)
    code, out, err = run_cli(capsys, "predict", "--checkpoint", ckpt, "--prompt", "the", "--k", str(bpe.vocab_size))
    assert code == 0 and "\u0120" not in out and "\ufffd" not in out
    shown = {line.split()[1] for line in out.splitlines()[1:]}  # "  1. ␣cat   0.0038": as the page shows tokens
    assert {"␣cat", "↵", "<eos>", "\\xf0"} <= shown
    labels = {p["token"]: p["label"] for p in json.loads(run_cli(capsys, "predict", "--checkpoint", ckpt, "--prompt",
                                                              "the", "--k", str(bpe.vocab_size), "--json")[1])}
    assert labels[" cat"] == "␣cat" and labels["\n"] == "↵"


# ------------------------------------------------------------------------------------------ <pad>


def _pad_favoured(tok: Tokenizer) -> WordPredictor:
    """A model whose every prediction would be <pad> (id 0) if it were allowed."""
    model = _model_for(tok)
    with torch.no_grad():
        model.output_layer.bias = torch.nn.Parameter(torch.zeros(tok.vocab_size))
        model.output_layer.bias[tok.pad_id] = 50.0
    return model


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("temperature, top_k, top_p", [(0, None, None), (1.0, None, None), (1.0, 1, None),
                                                       (1.0, None, 0.5)])
def test_pad_is_never_generated(use_cache, temperature, top_k, top_p):
    _, tok = _word_setup()
    model = _pad_favoured(tok)
    ids = tok.encode("the cat")
    new = generate_ids(model, [ids], max_new_tokens=10, temperature=temperature, top_k=top_k, top_p=top_p, seed=0,
                       use_cache=use_cache, suppress_ids=[tok.pad_id])[0]
    assert len(new) == 10 and tok.pad_id not in new
    text = generate(model, tok, "the cat", max_new_tokens=10, temperature=temperature, top_k=top_k, top_p=top_p,
                    seed=0, use_cache=use_cache, stop_at_eos=False)
    assert "<pad>" not in text and text == tok.decode(new)


def test_pad_is_masked_alike_with_and_without_the_cache():
    _, tok = _word_setup()
    model = _pad_favoured(tok)
    kwargs = dict(max_new_tokens=20, temperature=0, suppress_ids=[tok.pad_id])  # 2 + 20 > block 8: the window slides
    assert generate_ids(model, [[4, 5]], use_cache=True, **kwargs) == generate_ids(model, [[4, 5]], use_cache=False,
                                                                                   **kwargs)


def test_predict_next_never_offers_pad_and_renormalises():
    _, tok = _word_setup()
    top = predict_next(_pad_favoured(tok), tok, "the cat", tok.vocab_size + 5)
    assert "<pad>" not in [t for t, _ in top] and len(top) == tok.vocab_size - 1
    assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)


def test_pad_that_doubles_as_eos_still_ends_generation(bpe):
    """GPT-2: <|endoftext|> is both; suppressing it would make text endless."""
    shared = BPETokenizer(bpe._tok, eos_token="<eos>", pad_token="<eos>")
    model = _pad_favoured(shared)  # favours id 1, <eos>
    assert generate(model, shared, "the", max_new_tokens=5, temperature=0) == ""
    assert predict_next(model, shared, "the", 1)[0][0] == "<eos>"


# ------------------------------------------------------------------------------------------ whitespace prompts


def test_whitespace_prompts_are_text_for_char_and_bpe_models(bpe):
    chars = CharTokenizer.train(["ab c\nd"])
    for tok, prompt in ((chars, "\n"), (chars, " "), (bpe, "\n"), (bpe, "  ")):
        model = _model_for(tok)
        assert isinstance(generate(model, tok, prompt, max_new_tokens=3, temperature=0), str)
        assert len(predict_next(model, tok, prompt, 2)) == 2
    for tok in (chars, bpe):
        with pytest.raises(WordformerError, match="empty"):
            generate(_model_for(tok), tok, "")
    model, words = _word_setup()
    with pytest.raises(WordformerError, match="empty"):
        predict_next(model, words, "\n\t ", 2)


# ------------------------------------------------------------------------------------------ pairs models (issue 13)


def _checkpoint(model, tok, path, **data):
    from wordformer.checkpoint import wordformer_entry
    from wordformer.config import DataConfig, TrainConfig

    entry = wordformer_entry(model.config, DataConfig(**data), TrainConfig(), tok, step=0)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "wordformer": entry}, path)
    return path


def test_a_pairs_checkpoint_answers_through_the_plain_functions_as_the_cli_does(tmp_path, capsys):
    """The README's generate(model, tokenizer, question) returned '' for a pairs model: <eos> was not appended."""
    from wordformer import load_checkpoint
    from wordformer.generation import encode_prompt

    model, tok = _word_setup()
    loaded = load_checkpoint(_checkpoint(model, tok, tmp_path / "qa.ckpt", pairs=True))
    m, t = loaded.model, loaded.tokenizer
    everything = predict_next(m, t, "the cat", t.vocab_size)
    assert everything == predict_next(m, t, "the cat", t.vocab_size, append_eos=True)
    assert everything != predict_next(m, t, "the cat", t.vocab_size, append_eos=False)  # so the test can tell
    asked = dict(max_new_tokens=5, temperature=0)
    answer = generate(m, t, "the cat", **asked)
    assert answer == generate(m, t, "the cat", append_eos=True, **asked) == loaded.generate("the cat", **asked)
    assert t.pairs and encode_prompt(t, "the cat")[-1] == t.eos_id
    code, out, err = run_cli(capsys, "generate", "--checkpoint", tmp_path / "qa.ckpt", "--prompt", "the cat",
                             "--temperature", "0", "--max-new-tokens", "5")
    assert code == 0, err
    assert out == f"the cat <eos> {answer}\n" == loaded.generate("the cat", echo=True, **asked) + "\n"
    plain = load_checkpoint(_checkpoint(model, tok, tmp_path / "plain.ckpt"))
    assert not plain.tokenizer.pairs and encode_prompt(plain.tokenizer, "the cat")[-1] != tok.eos_id


# ------------------------------------------------------------------------------------------ the printed line (issue 13)


def test_echo_is_the_prompt_as_read_and_the_continuation_joined_as_the_tokenizer_joins():
    """The CLI printed prompt + " " + continuation: "the set ." where the model's own text reads "the set."."""
    from wordformer.generation import echo_text

    tok = WordTokenizer.train(["the cat sat on the set . ( a b )"])
    ids = tok.encode("The SET")
    assert echo_text(tok, ids, [tok.token_to_id("."), tok.token_to_id("the")]) == "the set. the"
    assert echo_text(tok, ids, [tok.token_to_id("cat")]) == "the set cat"
    assert echo_text(tok, tok.encode("a ("), [tok.token_to_id("b")]) == "a (b"
    assert echo_text(tok, tok.encode("the zebra"), [tok.token_to_id("cat")]) == "the <unk> cat"  # what it read
    assert echo_text(tok, ids + [tok.eos_id], [tok.token_to_id("cat")]) == "the set <eos> cat"
    assert echo_text(tok, ids, []) == "the set"
    chars = CharTokenizer.train(["ab c"])
    assert echo_text(chars, chars.encode("ab"), chars.encode(" c")) == "ab c"


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_the_cli_prints_what_generate_with_echo_returns(kind, bpe, tmp_path, capsys):
    from wordformer import load_checkpoint

    tok = {"word": WordTokenizer.train([SMALL_TEXT]), "char": CharTokenizer.train([SMALL_TEXT]), "bpe": bpe}[kind]
    path = _checkpoint(_model_for(tok, seed=3), tok, tmp_path / "m.ckpt", tokenizer=kind)
    loaded = load_checkpoint(path)
    for prompt in ("The cat sat on the", "the dog sat on the log", "a cat"):
        code, out, err = run_cli(capsys, "generate", "--checkpoint", path, "--prompt", prompt, "--max-new-tokens", "6",
                                 "--seed", "4", "--num-samples", "2")
        assert code == 0, err
        samples = [loaded.generate(prompt, max_new_tokens=6, seed=seed, echo=True) for seed in (4, 5)]
        assert out == "\n---\n".join(samples) + "\n"
        for seed, line in zip((4, 5), samples):
            assert line.endswith(loaded.generate(prompt, max_new_tokens=6, seed=seed))


# ------------------------------------------------------------------------------------------ unknown words (issue 13)


def test_unknown_prompt_words_are_named_in_a_warning(caplog):
    model, tok = _word_setup()
    with caplog.at_level("WARNING", logger="wordformer"):
        generate(model, tok, "the zebra sat on the Giraffe zebra", max_new_tokens=2)
    assert [r.getMessage() for r in caplog.records] == [
        "prompt words the model does not know, read as <unk>: 'zebra', 'giraffe'"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="wordformer"):
        predict_next(model, tok, "the cat sat", 2)  # every word known: no warning
        predict_next(model, tok, "the okapi", 2)
    assert [r.getMessage() for r in caplog.records] == ["prompt words the model does not know, read as <unk>: 'okapi'"]
    caplog.clear()
    chars = CharTokenizer.train(["ab c"])
    with caplog.at_level("WARNING", logger="wordformer"):
        generate(_model_for(chars), chars, "ab!c?!", max_new_tokens=1)
    assert [r.getMessage() for r in caplog.records] == [
        "prompt characters the model does not know, read as <unk>: '!', '?'"]


def test_the_cli_warns_once_about_unknown_words_in_generate_and_predict(trained_run, capsys, caplog):
    ckpt = trained_run / "best.ckpt"
    warning = "prompt words the model does not know, read as <unk>: 'wombat'"
    with caplog.at_level("WARNING", logger="wordformer"):
        code, out, err = run_cli(capsys, "generate", "--checkpoint", ckpt, "--prompt", "the wombat sat",
                                 "--num-samples", "3", "--max-new-tokens", "2")
    assert code == 0 and out.startswith("the <unk> sat"), err  # the line shows what the model read
    assert [r.getMessage() for r in caplog.records] == [warning]  # once, not once per sample
    caplog.clear()
    with caplog.at_level("WARNING", logger="wordformer"):
        assert run_cli(capsys, "predict", "--checkpoint", ckpt, "--prompt", "a wombat")[0] == 0
        assert run_cli(capsys, "predict", "--checkpoint", ckpt, "--prompt", "the cat")[0] == 0
    assert [r.getMessage() for r in caplog.records] == [warning]
