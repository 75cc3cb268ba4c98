"""Word, char and byte-level BPE tokenizers: vocabulary rules, round trips, serialisation, bad input."""

from __future__ import annotations

import json

import pytest

from wordformer.errors import WordformerError
from wordformer.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    build_tokenizer,
    split_for_bpe,
    tokenizer_from_dict,
)

TOY = ["what is statquest <eos> awesome <eos>", "statquest is what <eos> awesome <eos>"]
UNICODE = "Grüße, naïve café — 日本語 🤖🎉 <eos> x\n\ttab  two spaces"


def roundtrip(tok: Tokenizer) -> Tokenizer:
    """Serialise through real JSON text, as a checkpoint would."""
    return tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))


# ---------------------------------------------------------------------------------------------- word


def test_word_tokenizer_lowercases_by_default_and_can_keep_case():
    assert WordTokenizer.train(["Hello World"]).tokens("Hello WORLD") == ["hello", "world"]
    cased = WordTokenizer.train(["Hello World"], lowercase=False)
    assert cased.tokens("Hello World") == ["Hello", "World"]
    assert cased.encode("hello") == [cased.unk_id]


def test_word_tokenizer_splits_punctuation_and_keeps_inner_apostrophes():
    tok = WordTokenizer.train(["x"])
    assert tok.split("Don't stop, ok?! (really)") == ["don't", "stop", ",", "ok", "?", "!", "(", "really", ")"]
    assert tok.split("naïve café's über_thing 42") == ["naïve", "café's", "über_thing", "42"]


def test_word_tokenizer_maps_unseen_words_to_unk():
    tok = WordTokenizer.train(["the cat sat"])
    ids = tok.encode("the dog sat")
    assert ids[1] == tok.unk_id == 2
    assert tok.decode(ids) == "the <unk> sat"


def test_word_vocabulary_has_specials_first_then_frequency_then_alphabet():
    tok = WordTokenizer.train(["b a c b c b d"])
    assert [tok.id_to_token(i) for i in range(tok.vocab_size)] == ["<pad>", "<eos>", "<unk>", "b", "c", "a", "d"]
    assert (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)


def test_word_min_freq_drops_rare_words():
    tok = WordTokenizer.train(["a a b b b c"], min_freq=2)
    assert tok.token_to_id("c") is None
    assert tok.vocab_size == 5


def test_word_max_vocab_keeps_the_most_frequent_with_alphabetical_ties():
    tok = WordTokenizer.train(["z z y y x x w"], max_vocab=2)
    assert [tok.id_to_token(i) for i in range(3, tok.vocab_size)] == ["x", "y"]


def test_word_min_freq_above_every_count_is_refused():
    with pytest.raises(WordformerError, match="min-freq"):
        WordTokenizer.train(["a b c"], min_freq=5)


def test_literal_eos_becomes_the_eos_id_in_the_chapter_toy_strings():
    tok = WordTokenizer.train(TOY)
    ids = tok.encode(TOY[0])
    assert len(ids) == 6 and ids[3] == ids[5] == tok.eos_id
    assert tok.token_to_id("eos") is None  # "<eos>" was never split into < eos >
    assert tok.decode(ids) == TOY[0]
    assert tok.decode(ids, skip_special=True) == "what is statquest awesome"


def test_word_decode_attaches_punctuation_and_normalises_spacing():
    text = "Hello ,  world!\nIs it ( really ) so ; yes : no ?"
    tok = WordTokenizer.train([text])
    assert tok.decode(tok.encode(text)) == "hello, world! is it (really) so; yes: no?"
    assert tok.decode(tok.encode(text)) == tok.normalize(text)


def test_decode_refuses_ids_outside_the_vocabulary():
    tok = WordTokenizer.train(["a"])
    with pytest.raises(WordformerError, match="outside the vocabulary"):
        tok.decode([99])


# ---------------------------------------------------------------------------------------------- char


def test_char_tokenizer_round_trips_known_text_exactly():
    tok = CharTokenizer.train([UNICODE])
    assert tok.decode(tok.encode(UNICODE)) == UNICODE
    assert tok.encode("<eos>") == [tok.eos_id]


def test_char_ids_are_specials_then_sorted_characters():
    tok = CharTokenizer.train(["cab", "ba"])
    assert [tok.id_to_token(i) for i in range(tok.vocab_size)] == ["<pad>", "<eos>", "<unk>", "a", "b", "c"]
    assert tok.tokens("ab") == ["a", "b"]


def test_char_tokenizer_maps_unknown_characters_to_unk():
    tok = CharTokenizer.train(["abc"])
    assert tok.encode("aZc🤖") == [3, tok.unk_id, 5, tok.unk_id]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 22])
def test_char_encoding_in_chunks_equals_one_lookup_per_character(monkeypatch, chunk):
    """Long lines are encoded in chunks; every chunk boundary must give the same ids as a per-character look-up."""
    tok = CharTokenizer.train([UNICODE])
    text = (UNICODE + "Z🤖") * 5 + "<eos>" + UNICODE[:5]  # unknown characters and an <eos> across boundaries
    expected = []
    for k, part in enumerate(text.split("<eos>")):
        expected += ([tok.eos_id] if k else []) + [tok._index.get(c, tok.unk_id) for c in part]
    monkeypatch.setattr(CharTokenizer, "_CHUNK", chunk)
    ids = tok.encode_array(text)
    assert ids.dtype.name == "int64" and ids.tolist() == expected
    assert CharTokenizer(["a"]).encode_array("").tolist() == []


# ---------------------------------------------------------------------------------------------- BPE


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(["the cat sat on the mat. " * 20, "Die Katze saß auf der Matte."], vocab_size=300)


def test_bpe_round_trips_any_text_exactly_even_unseen_emoji(bpe: BPETokenizer):
    assert bpe.decode(bpe.encode(UNICODE)) == UNICODE
    assert bpe.unk_id is None


def test_bpe_encodes_long_text_in_pieces_with_the_same_ids_as_whole():
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics)[:20]) + " <eos> a  b\t c"
    tok = BPETokenizer.train([text], vocab_size=400)
    assert len(split_for_bpe(text)) > 3
    assert tok.encode(text) == tok._tok.encode(text).ids  # the library's own whole-text encoding
    assert tok.decode(tok.encode(text)) == text


def test_bpe_recognises_literal_eos(bpe: BPETokenizer):
    ids = bpe.encode("the cat<eos>")
    assert ids[-1] == bpe.eos_id == 1 and bpe.pad_id == 0
    assert bpe.decode(ids, skip_special=True) == "the cat"


def test_bpe_training_is_deterministic():
    texts = ["low lower lowest newer wider " * 5, "tokenizers are fun"]
    assert BPETokenizer.train(texts, vocab_size=280).to_dict() == BPETokenizer.train(texts, vocab_size=280).to_dict()


def test_bpe_tokens_are_readable_text(bpe: BPETokenizer):
    assert "".join(bpe.tokens("the mat")) == "the mat"


def test_bpe_vocab_size_below_the_byte_alphabet_is_refused():
    with pytest.raises(WordformerError, match="bpe_vocab_size"):
        BPETokenizer.train(["abc"], vocab_size=100)


# ---------------------------------------------------------------------------------------------- all kinds


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_to_dict_and_from_dict_round_trip_through_json(kind: str):
    tok = build_tokenizer(kind, [UNICODE, "more text here"], bpe_vocab_size=300)
    again = roundtrip(tok)
    assert type(again) is type(tok) and again.to_dict() == tok.to_dict()
    assert again.encode(UNICODE) == tok.encode(UNICODE)
    assert again.to_dict()["kind"] == kind


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_empty_training_text_is_refused(kind: str):
    with pytest.raises(WordformerError):
        build_tokenizer(kind, [], bpe_vocab_size=300)


def test_build_tokenizer_refuses_an_unknown_kind():
    with pytest.raises(WordformerError, match="unknown"):
        build_tokenizer("sentencepiece", ["a"])


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {},
        {"kind": "nope"},
        {"kind": ["word"]},
        {"kind": "word"},
        {"kind": "word", "vocab": ["a", "b"]},
        {"kind": "word", "vocab": "abc"},
        {"kind": "char", "chars": 5},
        {"kind": "char", "chars": "ba"},
        {"kind": "bpe", "tokenizer_json": "{not json"},
        {"kind": "bpe"},
    ],
)
def test_from_dict_refuses_malformed_dicts(bad):
    with pytest.raises(WordformerError) as info:
        tokenizer_from_dict(bad)
    assert "\n" not in str(info.value)
