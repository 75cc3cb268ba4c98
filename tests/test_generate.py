"""Generation: sampling options, KV cache, batching, the context window, predict_next."""

import pytest
import torch

from wordformer import ModelConfig, WordPredictor, generate, predict_next
from wordformer.errors import WordformerError
from wordformer.generate import filter_logits, generate_ids
from wordformer.tokenizers import WordTokenizer


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
