"""The continuous batched decoder gives every row what generate_ids gives it alone, while rows come and go."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wordformer.config import ModelConfig
from wordformer.decoding import ContinuousDecoder
from wordformer.errors import WordformerError
from wordformer.generation import generate_ids
from wordformer.model import WordPredictor

VOCAB, BLOCK, EOS, PAD = 23, 8, 1, 0


def tiny_model(seed: int = 0, **overrides) -> WordPredictor:
    torch.manual_seed(seed)
    options = dict(vocab_size=VOCAB, block_size=BLOCK, d_model=16, num_heads=2, num_layers=2)
    options.update(overrides)
    model = WordPredictor(ModelConfig(**options)).eval()
    # larger weights than the 0.02-std initialisation: sharper logits (no near-ties) that depend on the whole context
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8)
    return model


def prompt(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (n,), generator=g).tolist()


def decode_all(decoder: ContinuousDecoder, rows) -> None:
    while any(not r.finished for r in rows):
        decoder.step()


def alone(model, ids, n, **options) -> list[int]:
    return generate_ids(model, [ids], max_new_tokens=n, pad_id=PAD, suppress_ids=[PAD], **options)[0]


@pytest.mark.parametrize("length", [1, 3, BLOCK - 1, BLOCK, BLOCK + 5])
@pytest.mark.parametrize("arch", [dict(), dict(positional="learned", norm="post", activation="gelu_tanh"),
                                  dict(positional="rope", norm_type="rmsnorm", qk_norm=True, activation="swiglu")])
def test_single_row_greedy_matches_generate_ids_through_window_slides(length, arch):
    model = tiny_model(**arch)
    ids = prompt(length, seed=length)
    decoder = ContinuousDecoder(model, eos_id=None, pad_id=PAD, suppress_ids=[PAD])
    row = decoder.add(ids, max_new_tokens=3 * BLOCK, temperature=0)
    decode_all(decoder, [row])
    assert row.new_ids == alone(model, ids, 3 * BLOCK, temperature=0)
    assert row.finish_reason == "length"


def test_single_row_seeded_sampling_matches_generate_ids():
    model = tiny_model(1)
    ids = prompt(5, seed=9)
    decoder = ContinuousDecoder(model, eos_id=None, pad_id=PAD, suppress_ids=[PAD])
    row = decoder.add(ids, max_new_tokens=20, temperature=0.9, top_k=7, top_p=0.9, seed=42)
    decode_all(decoder, [row])
    assert row.new_ids == alone(model, ids, 20, temperature=0.9, top_k=7, top_p=0.9, seed=42)


def test_rows_of_different_lengths_and_options_each_match_their_lone_run():
    model = tiny_model(2)
    specs = [(prompt(2, 1), dict(temperature=0)), (prompt(6, 2), dict(temperature=0.8, seed=3)),
             (prompt(11, 3), dict(temperature=0)), (prompt(4, 4), dict(temperature=1.2, top_k=5, seed=4)),
             (prompt(8, 5), dict(temperature=0.7, top_p=0.8, seed=5))]
    decoder = ContinuousDecoder(model, eos_id=None, pad_id=PAD, suppress_ids=[PAD])
    rows = [decoder.add(ids, max_new_tokens=2 * BLOCK + 3, **opts) for ids, opts in specs]
    decode_all(decoder, rows)
    for row, (ids, opts) in zip(rows, specs):
        assert row.new_ids == alone(model, ids, 2 * BLOCK + 3, **opts)
    assert decoder.batched_steps > 0 and decoder.largest_batch == len(specs)


def test_rows_joining_a_running_batch_match_their_lone_run():
    model = tiny_model(3)
    decoder = ContinuousDecoder(model, eos_id=None, pad_id=PAD, suppress_ids=[PAD])
    first = decoder.add(prompt(3, 10), max_new_tokens=25, temperature=0)
    rows, specs = [first], [(prompt(3, 10), 25)]
    for k in range(1, 4):
        for _ in range(3 + k):
            decoder.step()
        ids = prompt(2 + 2 * k, 10 + k)
        rows.append(decoder.add(ids, max_new_tokens=12, temperature=0))
        specs.append((ids, 12))
    decode_all(decoder, rows)
    for row, (ids, n) in zip(rows, specs):
        assert row.new_ids == alone(model, ids, n, temperature=0)


def test_each_row_stops_at_eos_or_its_own_limit_and_leaves_the_batch():
    model = tiny_model(4)
    ids = prompt(4, 20)
    reference = alone(model, ids, 30, temperature=0)
    eos = reference[5]  # call the sixth greedy token "<eos>": the row must stop right there
    decoder = ContinuousDecoder(model, eos_id=eos, pad_id=PAD, suppress_ids=[PAD])
    stopping = decoder.add(ids, max_new_tokens=30, temperature=0)
    short = decoder.add(prompt(5, 21), max_new_tokens=2, temperature=0)
    zero = decoder.add(prompt(5, 22), max_new_tokens=0, temperature=0)
    assert zero.finish_reason == "length" and zero.new_ids == []
    decode_all(decoder, [stopping, short])
    assert stopping.new_ids == reference[: reference.index(eos) + 1] and stopping.finish_reason == "stop"
    assert len(short.new_ids) == 2 and short.finish_reason == "length"
    decoder.step()
    assert len(decoder) == 0 and decoder.cache_length == 0


def test_a_cancelled_row_frees_its_place_and_the_others_are_unaffected():
    model = tiny_model(5)
    decoder = ContinuousDecoder(model, eos_id=None, pad_id=PAD, suppress_ids=[PAD])
    keep = decoder.add(prompt(3, 30), max_new_tokens=15, temperature=0)
    gone = decoder.add(prompt(6, 31), max_new_tokens=15, temperature=0)
    for _ in range(4):
        decoder.step()
    decoder.cancel(gone)
    decoder.step()
    assert gone.finish_reason == "cancelled" and len(gone.new_ids) == 4
    assert decoder.active == [keep]
    decode_all(decoder, [keep])
    assert keep.new_ids == alone(model, prompt(3, 30), 15, temperature=0)


def test_logprobs_are_the_models_log_softmax_without_pad():
    model = tiny_model(6)
    ids = prompt(5, 40)
    decoder = ContinuousDecoder(model, eos_id=None, pad_id=PAD, suppress_ids=[PAD])
    row = decoder.add(ids, max_new_tokens=1, temperature=0, logprobs=3)
    [token] = decoder.step()
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1]
    logits[PAD] = float("-inf")
    expected = F.log_softmax(logits, dim=-1)
    assert token.token == int(expected.argmax())
    assert token.logprob == pytest.approx(float(expected.max()), abs=1e-5)
    assert [t for t, _ in token.top] == expected.topk(3).indices.tolist()
    assert PAD not in [t for t, _ in token.top]
    assert row.finished


def test_pad_is_never_generated():
    model = tiny_model(7)
    bump = torch.zeros(VOCAB)
    bump[PAD] = 100.0  # <pad> becomes by far the likeliest next token everywhere
    model.register_forward_hook(lambda module, args, logits: logits + bump)
    decoder = ContinuousDecoder(model, eos_id=None, pad_id=PAD, suppress_ids=[PAD])
    rows = [decoder.add(prompt(3, 50 + i), max_new_tokens=10, temperature=t, seed=i) for i, t in enumerate((0, 1.5))]
    decode_all(decoder, rows)
    assert all(PAD not in r.new_ids for r in rows)


@pytest.mark.parametrize("bad, words", [
    (dict(prompt=[]), "non-empty"), (dict(prompt=[VOCAB]), "vocabulary"), (dict(prompt=[-1]), "vocabulary"),
    (dict(max_new_tokens=-1), "max_new_tokens"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p"), (dict(seed=-3), "seed"), (dict(logprobs=-1), "logprobs"),
])
def test_bad_rows_are_refused_in_one_line(bad, words):
    decoder = ContinuousDecoder(tiny_model(), eos_id=EOS, pad_id=PAD)
    options = dict(prompt=[2, 3], max_new_tokens=3)
    options.update(bad)
    with pytest.raises(WordformerError, match=words):
        decoder.add(options.pop("prompt"), **options)
    assert len(decoder) == 0


def test_every_rows_logprobs_in_a_changing_batch_equal_a_plain_forward_of_its_window():
    """Joins, slides, padding and cache cuts: each step's distribution is the plain model's on the row's window."""
    model = tiny_model(8)
    decoder = ContinuousDecoder(model, eos_id=None, pad_id=PAD, suppress_ids=[PAD])
    rows = [decoder.add(prompt(2, 60), max_new_tokens=30, temperature=0, logprobs=VOCAB)]
    checked = 0
    for step in range(30):
        if step in (2, 5, 11):
            rows.append(decoder.add(prompt(3 + step % 7, 61 + step), max_new_tokens=14, temperature=0.9, seed=step,
                                    logprobs=VOCAB))
        for item in decoder.step():
            window = item.row.ids[item.row.start:-1]
            assert len(window) <= BLOCK
            with torch.no_grad():
                logits = model(torch.tensor([window]))[0, -1]
            logits[PAD] = float("-inf")
            expected = F.log_softmax(logits, dim=-1)
            got = torch.full((VOCAB,), float("-inf"))
            for token, value in item.top:
                got[token] = value
            assert torch.allclose(got, expected, atol=1e-4), (step, item.row.start)
            checked += 1
    assert checked > 60 and decoder.batched_steps > 10


def test_inverse_cdf_sampling_follows_the_probabilities_and_never_picks_a_zero():
    from wordformer.decoding import inverse_cdf_sample

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0, 0.0]] * 20000, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    picked = inverse_cdf_sample(probs, g)
    counts = torch.bincount(picked, minlength=7).double() / len(picked)
    assert counts[[0, 2, 5, 6]].sum() == 0
    assert torch.allclose(counts[[1, 3, 4]], torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=0.015)
    # a total that rounds below the draw must still land on the last possible token, not on a trailing zero
    edge = torch.tensor([[0.25, 0.25, 0.25, 0.2499999, 0.0]], dtype=torch.float64)
    assert int(inverse_cdf_sample(edge, g)[0]) in (0, 1, 2, 3)
    ones = torch.zeros(3, 5, dtype=torch.float64)
    ones[torch.arange(3), torch.tensor([4, 0, 2])] = 1.0
    assert inverse_cdf_sample(ones, g).tolist() == [4, 0, 2]


def test_rows_beyond_max_batch_wait_for_a_free_slot_and_still_match_their_lone_run():
    model = tiny_model(9)
    decoder = ContinuousDecoder(model, eos_id=None, pad_id=PAD, suppress_ids=[PAD], max_batch=2)
    specs = [(prompt(2 + k, 70 + k), 3 + 2 * k) for k in range(5)]
    rows = [decoder.add(ids, max_new_tokens=n, temperature=0) for ids, n in specs]
    most = 0
    while any(not r.finished for r in rows):
        decoder.step()
        most = max(most, sum(1 for r in rows if r.cached and not r.finished))
    assert most <= 2
    for row, (ids, n) in zip(rows, specs):
        assert row.new_ids == alone(model, ids, n, temperature=0)


def test_default_max_batch_keeps_the_kv_cache_within_its_budget():
    from wordformer.decoding import KV_BUDGET_BYTES, kv_bytes_per_row

    small = ContinuousDecoder(tiny_model(), eos_id=EOS)
    assert small.max_batch == 64
    big = WordPredictor(ModelConfig(vocab_size=50, block_size=8192, d_model=256, num_heads=8, num_layers=8))
    decoder = ContinuousDecoder(big, eos_id=EOS)
    assert decoder.max_batch * kv_bytes_per_row(big) <= KV_BUDGET_BYTES and decoder.max_batch >= 1
