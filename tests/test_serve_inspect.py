"""The page's own endpoints (/v1/inspect): the same numbers as the library and the CLI, OpenAI-shaped errors."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from serve_fixtures import live_server, serve_models  # noqa: F401  (fixtures)
from wordformer.checkpoint import load_checkpoint
from wordformer.cli import main
from wordformer.generation import encode_prompt, generate_ids, never_generated
from wordformer.lens import logit_lens, sampling_distribution
from wordformer.plots import attention_maps

pytestmark = pytest.mark.slow  # trains the four tiny serve models once per session (shared with the API tests)


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server.base_url + "/v1/inspect", timeout=30) as c:
        yield c


def post(client, path, **body):
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def flat(x):
    return [v for item in x for v in flat(item)] if isinstance(x, list) else [x]


def assert_error(r, status, *words):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    for w in words:
        assert w in err["message"] or w == err["param"] or w == err["code"], err


def test_model_cards_and_example_prompts(client, live_server):
    data = client.get("/models").json()
    assert [c["id"] for c in data["data"]] == live_server.registry.ids and data["default"] == live_server.registry.ids[0]
    pairs = next(c for c in data["data"] if c["id"] == live_server.ids["pairs"])
    assert pairs["pairs"] is True and pairs["example_prompt"] == "what is statquest"
    for card in data["data"]:
        assert card["example_prompt"] and card["parameters"] > 0 and "/" not in (card["file"] or "")


def test_tokens_mark_specials_and_the_answer(client, live_server):
    pairs = post(client, "/tokens", model=live_server.ids["pairs"], prompt="what is zebra")
    assert [t["label"] for t in pairs["tokens"]] == ["what", "is", "<unk>", "<eos>"]
    assert [t["special"] for t in pairs["tokens"]] == [None, None, "unk", "eos"] and pairs["answer_starts"] == 4
    plain = post(client, "/tokens", model=live_server.ids["pairs"], prompt="what is", append_eos=False)
    assert plain["answer_starts"] is None and plain["tokens"][-1]["label"] == "is"
    bpe = post(client, "/tokens", model=live_server.ids["bpe"], prompt="the café € and more")
    assert bpe["too_long"] and len(bpe["ids"]) > 8  # the tokens view shows any length and says it is too long
    assert all("\ufffd" not in t["label"] for t in bpe["tokens"])
    assert any(t["partial"] for t in bpe["tokens"])  # € is three bytes: split over pieces, shown as \xNN
    text = bytes.fromhex(" ".join(t["bytes"] for t in bpe["tokens"])).decode()
    assert text == "the café € and more"
    char = post(client, "/tokens", model=live_server.ids["char"], prompt="a b")
    assert [t["label"] for t in char["tokens"]] == ["a", "␣", "b"]


def test_attention_is_every_layer_and_head_of_the_model(client, live_server, serve_models):
    data = post(client, "/attention", model=live_server.ids["char"], prompt="the cat")
    loaded = load_checkpoint(serve_models["char"])
    maps = attention_maps(loaded.model, data["ids"])
    assert data["num_layers"] == len(maps) and data["num_heads"] == maps[0].size(0)
    for layer, heads in zip(maps, data["attention"]):
        for head, rows in zip(layer, heads):
            assert [len(r) for r in rows] == list(range(1, len(data["ids"]) + 1))  # the causal lower triangle
            for i, row in enumerate(rows):
                assert row == pytest.approx(head[i, : i + 1].tolist(), abs=1e-5)
                assert sum(row) == pytest.approx(1.0, abs=1e-4)


def test_explain_equals_the_cli_json(client, live_server, serve_models, capsys):
    data = post(client, "/explain", model=live_server.ids["pairs"], prompt="statquest is what", layer=0, head=1,
                token=2, top_k=3)["explanation"]
    assert main(["explain", "--checkpoint", str(serve_models["pairs"]), "--prompt", "statquest is what", "--layer", "0",
                 "--head", "1", "--token", "2", "--top-k", "3", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    for key in ("query", "keys", "dot_products", "scores", "weights", "values", "weighted", "summed", "residual",
                "attention_output", "block_input", "ids", "token", "layer", "head"):
        assert flat(data[key]) == pytest.approx(flat(cli[key]), abs=1e-6), key
    assert [t["token"] for t in data["top"]] == [t["token"] for t in cli["top"]]


def test_distribution_is_generation_s_distribution(client, live_server, serve_models):
    loaded = load_checkpoint(serve_models["word"])
    ids = encode_prompt(loaded.tokenizer, "the cat sat")
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids]))[0, -1]
    expected = sampling_distribution(logits, temperature=0.7, top_k=5, top_p=0.9, banned=never_generated(loaded.tokenizer))
    data = post(client, "/distribution", model=live_server.ids["word"], prompt="the cat sat", temperature=0.7, top_k=5,
                top_p=0.9, limit=100_000)
    assert data["vocab_size"] == loaded.tokenizer.vocab_size == len(data["tokens"])
    assert data["kept_count"] == int(expected.kept.sum()) <= 5
    assert data["entropy"] == pytest.approx(expected.entropy, abs=1e-5)
    for t in data["tokens"]:
        assert t["kept"] == bool(expected.kept[t["id"]])
        assert t["renormalised"] == pytest.approx(float(expected.renormalised[t["id"]]), abs=1e-6)
    probs = [t["probability"] for t in data["tokens"]]
    assert probs == sorted(probs, reverse=True)
    hot = post(client, "/distribution", model=live_server.ids["word"], prompt="the cat sat", temperature=1.8)
    assert hot["entropy"] > data["entropy"] and hot["kept_count"] == loaded.tokenizer.vocab_size - 1  # all but <pad>


def test_lens_and_head_switches(client, live_server, serve_models):
    loaded = load_checkpoint(serve_models["char"])
    data = post(client, "/lens", model=live_server.ids["char"], prompt="the cat", top_k=2)
    assert [s["name"] for s in data["stages"]] == ["embedding", "layer 0"] and data["ablate"] == []
    lens = logit_lens(loaded.model, data["ids"], banned=never_generated(loaded.tokenizer))
    for t, tops in enumerate(data["stages"][-1]["top"]):
        assert tops[0]["id"] == int(lens.probabilities[-1, t].argmax())
    assert data["kl_divergence"] == 0.0 and data["before"] == data["after"]
    off = post(client, "/lens", model=live_server.ids["char"], prompt="the cat", top_k=2, ablate=[[0, 0], [0, 1]])
    assert off["ablate"] == [[0, 0], [0, 1]] and off["kl_divergence"] > 0
    assert off["stages"][0] == data["stages"][0]  # the embedding stage comes before any head
    assert_error(client.post("/lens", json={"model": live_server.ids["char"], "prompt": "the", "ablate": [[0, 9]]}),
                 400, "ablate")


def test_model_wide_views(client, live_server):
    pos = post(client, "/positional", model=live_server.ids["char"])
    assert pos["kind"] == "sinusoidal" and len(pos["table"]) == 8 and len(pos["table"][0]) == 16
    assert pos["table"][0][1] == pytest.approx(1.0)  # cos(0)
    emb = post(client, "/embeddings", model=live_server.ids["word"], limit=5, prompt="the cat")
    assert emb["method"] == "pca" and {p["id"] for p in emb["points"]} >= set(range(5))
    assert sum(p["in_prompt"] for p in emb["points"]) == 2
    curves = post(client, "/curves", model=live_server.ids["word"])
    assert curves["available"] and curves["series"]["val_loss"]["step"] and curves["series"]["train_loss"]["value"]


def events_of(client, **body):
    with client.stream("POST", "/generate", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln[6:]) for ln in lines[:-1]]


@pytest.mark.parametrize("temperature, seed", [(0.0, None), (1.0, 7)])
def test_generate_streams_what_generate_ids_gives(client, live_server, serve_models, temperature, seed):
    loaded = load_checkpoint(serve_models["char"])
    ids = encode_prompt(loaded.tokenizer, "the")
    events = events_of(client, model=live_server.ids["char"], ids=ids, max_tokens=4, temperature=temperature, seed=seed)
    tokens, done = events[:-1], events[-1]
    expected = generate_ids(loaded.model, [ids], max_new_tokens=4, temperature=temperature, seed=seed,
                            eos_id=loaded.tokenizer.eos_id, suppress_ids=never_generated(loaded.tokenizer))[0]
    assert [e["id"] for e in tokens] == expected
    assert [e["cache_length"] for e in tokens] == list(range(len(ids), len(ids) + len(tokens)))
    for e in tokens:  # the last fed token's attention over every cached position, per layer and head
        assert len(e["attention"]) == 1 and len(e["attention"][0]) == 2
        assert all(len(row) == e["cache_length"] and sum(row) == pytest.approx(1, abs=1e-3) for row in e["attention"][0])
    assert done["done"] and done["ids"] == ids + expected


def test_generate_stops_at_eos_and_at_the_context(client, live_server):
    events = events_of(client, model=live_server.ids["pairs"], prompt="what is statquest", max_tokens=8, temperature=0)
    assert events[-1]["finish_reason"] in ("stop", "context")
    if events[-1]["finish_reason"] == "stop":
        assert events[-2]["token"]["special"] == "eos"
    full = events_of(client, model=live_server.ids["char"], prompt="abcdefg", max_tokens=5, temperature=0)
    assert full[-1]["finish_reason"] == "context" and len(full) == 2  # block_size 8: one token fits


def test_bad_requests_get_openai_errors_and_the_server_goes_on(client, live_server):
    m = live_server.ids["word"]
    assert_error(client.post("/explain", json={"model": m, "prompt": "the", "ids": [3]}), 422, "prompt")
    assert_error(client.post("/explain", json={"model": m}), 422)
    assert_error(client.post("/explain", json={"model": "nope/best", "prompt": "the"}), 404, "model_not_found")
    assert_error(client.post("/explain", json={"model": m, "prompt": "the", "layer": 7}), 400, "layer 7")
    assert_error(client.post("/explain", json={"model": m, "prompt": "the " * 20}), 400, "context_length_exceeded")
    assert_error(client.post("/attention", json={"model": m, "ids": [10**6]}), 400, "ids")
    assert_error(client.post("/attention", json={"model": m, "ids": []}), 400, "ids")
    assert_error(client.post("/distribution", json={"model": m, "prompt": "the", "temperature": -1}), 422, "temperature")
    assert_error(client.post("/distribution", json={"model": m, "prompt": "the", "top_p": 1.5}), 422, "top_p")
    assert_error(client.post("/distribution", json={"model": m, "prompt": "the", "position": 5}), 400, "position")
    assert_error(client.post("/tokens", json={"model": m, "prompt": ""}), 400, "empty")
    # no request can name a file: unknown fields are refused, and the curves come from the served run only
    assert_error(client.post("/curves", json={"model": m, "run": "/etc"}), 422, "run")
    assert_error(client.post("/tokens", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert post(client, "/tokens", model=m, prompt="the cat")["ids"]
