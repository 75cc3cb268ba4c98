"""The OpenAI-compatible API, through the official ``openai`` client and raw HTTP, on a loopback server."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from conftest import SMALL_TEXT, run_cli
from serve_fixtures import live_server, serve_models, start_server  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = {"word": "the cat", "char": "the ca", "bpe": "the dog sat"}


def client(server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_base, api_key=kwargs.pop("api_key", "unused"), max_retries=0,
                         timeout=60, **kwargs)


def cli_generate(capsys, checkpoint: Path, prompt: str, *extra: str) -> str:
    code, out, err = run_cli(capsys, "generate", "--checkpoint", checkpoint, "--prompt", prompt, *extra)
    assert code == 0, err
    return out


def sse_events(raw: bytes) -> list[str]:
    """The data fields of a server-sent event stream, checking its framing on the way."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), text[-50:]
    events = text.split("\n\n")[:-1]
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, event
    return [e[len("data: "):] for e in events]


# ------------------------------------------------------------------------------------------- the basics


def test_health_and_models_list_every_checkpoint(live_server):
    health = httpx.get(live_server.base_url + "/health").json()
    assert health["status"] == "ok" and health["models"] == 4
    models = client(live_server).models.list()
    assert [m.id for m in models.data] == ["word/best", "char/best", "bpe/best", "pairs/best"]
    card = httpx.get(live_server.api_base + "/models/pairs/best").json()["card"]
    assert card["pairs"] is True and card["tokenizer"] == "word" and card["d_model"] == 16
    assert "/" not in card["file"]  # the file's name, never the server's folders


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_greedy_completion_equals_wordformer_generate(live_server, serve_models, capsys, kind):
    prompt = PROMPTS[kind]
    cli = cli_generate(capsys, serve_models[kind], prompt, "--temperature", "0", "--max-new-tokens", "20")
    api = client(live_server)
    model = live_server.ids[kind]
    text = api.completions.create(model=model, prompt=prompt, max_tokens=20, temperature=0).choices[0].text
    loaded = live_server.registry.get(model).loaded
    assert text == loaded.generate(prompt, max_new_tokens=20, temperature=0)
    assert cli.endswith(text + "\n") and cli == loaded.generate(prompt, max_new_tokens=20, temperature=0,
                                                                echo=True) + "\n"
    echoed = api.completions.create(model=model, prompt=prompt, max_tokens=20, temperature=0, echo=True)
    assert echoed.choices[0].text + "\n" == cli  # echo prints what the CLI prints
    streamed = "".join(c.choices[0].text for c in api.completions.create(
        model=model, prompt=prompt, max_tokens=20, temperature=0, stream=True))
    assert streamed == text
    streamed = "".join(c.choices[0].text for c in api.completions.create(
        model=model, prompt=prompt, max_tokens=20, temperature=0, stream=True, echo=True))
    assert streamed + "\n" == cli


def test_echo_joins_prompt_and_continuation_as_the_cli_prints_them(live_server, serve_models, tmp_path, capsys):
    """A word model's line has no space before punctuation ("the mat." not "the mat ."), and shows the prompt as
    the model read it (lowercased, unknown words as <unk>), streamed or not, as ``wordformer generate`` does."""
    import torch

    from wordformer import DataConfig, ModelConfig, TrainConfig, WordPredictor, WordTokenizer
    from wordformer.checkpoint import wordformer_entry

    tok = WordTokenizer.train([SMALL_TEXT])
    torch.manual_seed(0)
    model = WordPredictor(ModelConfig(vocab_size=tok.vocab_size, d_model=8, num_heads=2, num_layers=1, block_size=16,
                                      tie_weights=False))
    with torch.no_grad():  # the final norm outputs all ones whatever it reads; only "." has weights: it always wins
        model.final_norm.weight.zero_()
        model.final_norm.bias.fill_(1.0)
        model.output_layer.weight.zero_()
        model.output_layer.weight[tok.token_to_id(".")] = 1.0
    dots = tmp_path / "dots" / "best.ckpt"
    dots.parent.mkdir()
    entry = wordformer_entry(model.config, DataConfig(), TrainConfig(), tok, step=0)
    torch.save({"wordformer": entry, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, dots)
    cases = [(dots, "dots/best", "the cat sat on the mat", "the cat sat on the mat..."),
             (dots, "dots/best", "The Wombat", "the <unk>..."),
             (serve_models["word"], "word/best", "The Wombat", None)]
    with start_server([dots, serve_models["word"]]) as server:
        api = client(server)
        for path, model_id, prompt, line in cases:
            cli = cli_generate(capsys, path, prompt, "--temperature", "0", "--max-new-tokens", "3")
            assert line is None or cli == line + "\n"
            asked = dict(model=model_id, prompt=prompt, max_tokens=3, temperature=0, echo=True)
            assert api.completions.create(**asked).choices[0].text + "\n" == cli
            assert "".join(c.choices[0].text for c in api.completions.create(stream=True, **asked)) + "\n" == cli
            assert cli.startswith("the <unk>") == (prompt == "The Wombat")  # as the model read it


def test_chat_answers_what_follows_eos_like_wordformer_generate(live_server, serve_models, capsys):
    question = "what is statquest"
    cli = cli_generate(capsys, serve_models["pairs"], question, "--temperature", "0", "--max-new-tokens", "20")
    assert cli.startswith(f"{question} <eos> ")
    answer = cli[len(f"{question} <eos> "):].rstrip("\n")
    api = client(live_server)
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": "old question"},
                {"role": "assistant", "content": "old answer"}, {"role": "user", "content": question}]
    reply = api.chat.completions.create(model="pairs/best", messages=messages, max_tokens=20, temperature=0)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == answer
    assert reply.choices[0].finish_reason in ("stop", "length")
    chunks = list(api.chat.completions.create(model="pairs/best", messages=messages, max_tokens=20, temperature=0,
                                              stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == answer
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason


def test_chat_on_a_model_without_pairs_says_to_use_completions(live_server):
    with pytest.raises(openai.BadRequestError) as err:
        client(live_server).chat.completions.create(model="word/best", messages=[{"role": "user", "content": "the"}])
    assert err.value.status_code == 400 and "/v1/completions" in err.value.message
    assert err.value.body["code"] == "model_not_chat"


def test_raw_sse_bytes_end_with_done_and_carry_usage_when_asked(live_server):
    body = {"model": "char/best", "prompt": "the", "max_tokens": 7, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", live_server.api_base + "/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_raw())
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 7,
                                                                   "total_tokens": 10}
    assert all(c["usage"] is None for c in chunks[:-1])
    finals = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert finals == ["length"]
    text = "".join(c["choices"][0]["text"] for c in chunks[:-1])
    whole = httpx.post(live_server.api_base + "/completions", json={**body, "stream": False}, timeout=30).json()
    assert whole["choices"][0]["text"] == text and whole["usage"]["completion_tokens"] == 7


def test_raw_chat_sse_starts_with_the_role_and_ends_with_a_finish_chunk(live_server):
    body = {"model": "pairs/best", "messages": [{"role": "user", "content": "statquest is what"}], "max_tokens": 5,
            "temperature": 0, "stream": True}
    response = httpx.post(live_server.api_base + "/chat/completions", json=body, timeout=30)
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_n_choices_with_a_seed_are_reproducible_and_match_num_samples(live_server, serve_models, capsys):
    cli = cli_generate(capsys, serve_models["word"], "the dog", "--temperature", "1", "--seed", "5",
                       "--num-samples", "3", "--max-new-tokens", "8")
    api = client(live_server)
    first = api.completions.create(model="word/best", prompt="the dog", n=3, seed=5, max_tokens=8, temperature=1)
    again = api.completions.create(model="word/best", prompt="the dog", n=3, seed=5, max_tokens=8, temperature=1)
    texts = [c.text for c in first.choices]
    assert texts == [c.text for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert cli.split("\n---\n") == [f"the dog {t}" for t in texts[:2]] + [f"the dog {texts[2]}\n"]


def test_several_prompts_give_choices_in_prompt_then_n_order(live_server):
    reply = client(live_server).completions.create(model="word/best", prompt=["the cat", "a dog"], n=2,
                                                   max_tokens=3, temperature=0, echo=True)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert [c.text.split(" ")[0] for c in reply.choices] == ["the", "the", "a", "a"]
    assert reply.usage.prompt_tokens == 4


def test_token_id_prompts_are_accepted(live_server):
    tok = live_server.registry.get("word/best").loaded.tokenizer
    ids = tok.encode("the cat")
    by_ids = client(live_server).completions.create(model="word/best", prompt=ids, max_tokens=5, temperature=0)
    by_text = client(live_server).completions.create(model="word/best", prompt="the cat", max_tokens=5,
                                                     temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text


def test_stop_strings_end_the_text_before_them_streamed_or_not(live_server):
    api = client(live_server)
    full = api.completions.create(model="char/best", prompt="the", max_tokens=30, temperature=0).choices[0].text
    assert len(full) >= 6
    stop = full[3:5]
    cut = full[: full.index(stop)]
    reply = api.completions.create(model="char/best", prompt="the", max_tokens=30, temperature=0, stop=[stop, "@@"])
    assert reply.choices[0].text == cut and reply.choices[0].finish_reason == "stop"
    streamed = list(api.completions.create(model="char/best", prompt="the", max_tokens=30, temperature=0, stop=stop,
                                           stream=True))
    assert "".join(c.choices[0].text for c in streamed) == cut
    assert streamed[-1].choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens < 30


def test_logprobs_list_every_generated_token_with_its_top_alternatives(live_server):
    reply = client(live_server).completions.create(model="word/best", prompt="the cat", max_tokens=6,
                                                   temperature=0, logprobs=3, echo=True)
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == 2 + reply.usage.completion_tokens - (reply.choices[0].finish_reason == "stop")
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # the first prompt token has no context
    for value, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert value <= 0 and len(top) == 3 and all(v <= 0 for v in top.values())
    for token, value, top in zip(lp.tokens[2:], lp.token_logprobs[2:], lp.top_logprobs[2:]):
        assert value == pytest.approx(max(top.values()), abs=1e-6)  # greedy: the chosen token is the most likely
        assert top[token] == pytest.approx(value, abs=1e-6)
    chat = client(live_server).chat.completions.create(
        model="pairs/best", messages=[{"role": "user", "content": "what is statquest"}], max_tokens=3,
        temperature=0, logprobs=True, top_logprobs=2)
    entries = chat.choices[0].logprobs.content
    assert entries and all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries)


def test_max_tokens_zero_with_echo_returns_the_prompt(live_server):
    reply = client(live_server).completions.create(model="word/best", prompt="the cat", max_tokens=0, echo=True)
    assert reply.choices[0].text == "the cat" and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 0


def test_safetensors_exports_and_clashing_ids_are_served(serve_models, tmp_path, capsys):
    exported = tmp_path / "word" / "best.safetensors"
    code, _, err = run_cli(capsys, "export", "--checkpoint", serve_models["word"], "--to", exported)
    assert code == 0, err
    with start_server([serve_models["word"], exported]) as running:
        ids = running.registry.ids
        assert ids == ["word/best", "word/best-2"]  # same folder and stem: the second gets a suffix
        texts = [client(running).completions.create(model=i, prompt="the cat", max_tokens=8, temperature=0)
                 .choices[0].text for i in ids]
        assert texts[0] == texts[1]


def test_openapi_schema_documents_the_api(live_server):
    schema = httpx.get(live_server.base_url + "/openapi.json").json()
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health"):
        assert path in schema["paths"], path
    fields = schema["components"]["schemas"]["CompletionRequest"]["properties"]
    assert {"prompt", "max_tokens", "top_k", "stream_options", "logprobs", "echo", "seed"} <= set(fields)


def test_readme_openai_example_runs_against_the_server(live_server, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Serve"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "from openai import OpenAI" in code and len(code.strip().splitlines()) == 4
    code = code.replace("http://127.0.0.1:8000/v1", live_server.api_base).replace("demo/best", "word/best")
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    # what the README's comment says: the continuation the Python API returns for the same greedy request
    expected = live_server.registry.get("word/best").loaded.generate("the list", max_new_tokens=20, temperature=0)
    assert expected.strip() and printed == expected + "\n"


# ------------------------------------------------------------------------------------------- batching and streams


def test_concurrent_requests_are_decoded_together_and_match_their_lone_results(live_server):
    api = client(live_server)
    prompts = ["the cat", "a dog", "the bird sang", "what is", "the", "the cat sat on", "a", "the park"]
    alone = [api.completions.create(model="word/best", prompt=p, max_tokens=12, temperature=0).choices[0].text
             for p in prompts]
    before = live_server.engine.stats.as_dict()
    barrier = threading.Barrier(len(prompts))

    def ask(p: str) -> str:
        barrier.wait()
        chunks = api.completions.create(model="word/best", prompt=p, max_tokens=12, temperature=0, stream=True)
        return "".join(c.choices[0].text for c in chunks)

    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(ask, prompts))
    after = live_server.engine.stats.as_dict()
    assert together == alone
    assert after["batched_steps"] > before["batched_steps"]
    assert after["largest_batch"] >= 4
    # fewer forward passes than tokens: rows shared them
    assert after["forwards"] - before["forwards"] < after["tokens"] - before["tokens"]


def _wait_idle(engine, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while engine.active_rows and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_client_that_leaves_mid_stream_stops_its_generation(live_server):
    engine = live_server.engine
    _wait_idle(engine)
    tokens_before = engine.stats.tokens
    body = {"model": "char/best", "prompt": "the", "max_tokens": 4000, "temperature": 0, "stream": True}
    with httpx.stream("POST", live_server.api_base + "/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert engine.active_rows == 1
    _wait_idle(engine)
    assert engine.active_rows == 0
    assert engine.stats.tokens - tokens_before < 4000
    assert client(live_server).completions.create(model="char/best", prompt="the", max_tokens=2).choices[0].text


def test_a_non_streaming_client_that_hangs_up_frees_its_rows(live_server):
    engine = live_server.engine
    _wait_idle(engine)
    tokens_before = engine.stats.tokens
    body = {"model": "char/best", "prompt": "the", "max_tokens": 4000, "n": 8, "temperature": 0}  # greedy: no <eos>
    with pytest.raises(httpx.TimeoutException):
        httpx.post(live_server.api_base + "/completions", json=body, timeout=0.3)
    _wait_idle(engine)
    assert engine.active_rows == 0
    assert engine.stats.tokens - tokens_before < 8 * 4000


# ------------------------------------------------------------------------------------------- bad requests

GOOD = {"model": "word/best", "prompt": "the cat", "max_tokens": 2}


def completion(**changes):
    body = dict(GOOD)
    body.update(changes)
    return body


def without(key):
    return {k: v for k, v in GOOD.items() if k != key}


CHAT = {"model": "pairs/best", "messages": [{"role": "user", "content": "what is statquest"}], "max_tokens": 2}

# (name, path, body (dict or raw bytes), expected status, expected param or None)
BAD = [
    ("malformed JSON", "/completions", b'{"model": "word/best", "prompt": ', 400, None),
    ("empty body", "/completions", b"", 400, None),
    ("JSON array body", "/completions", b"[]", 422, None),
    ("JSON string body", "/completions", b'"the cat"', 422, None),
    ("missing model", "/completions", without("model"), 422, "model"),
    ("missing prompt", "/completions", without("prompt"), 422, "prompt"),
    ("prompt of the wrong type", "/completions", completion(prompt=5), 422, "prompt"),
    ("prompt list of mixed types", "/completions", completion(prompt=["the", 3]), 422, "prompt"),
    ("empty prompt", "/completions", completion(prompt=""), 400, "prompt"),
    ("blank prompt", "/completions", completion(prompt="   "), 400, "prompt"),
    ("prompt of unknown words only", "/completions", completion(prompt="zebra quokka"), 400, "prompt"),
    ("token id outside the vocabulary", "/completions", completion(prompt=[1, 99999]), 400, "prompt"),
    ("prompt above the length limit", "/completions", completion(prompt="the " * 30_000), 400, "prompt"),
    ("negative max_tokens", "/completions", completion(max_tokens=-1), 422, "max_tokens"),
    ("huge max_tokens", "/completions", completion(max_tokens=10**9), 400, "max_tokens"),
    ("max_tokens as a string", "/completions", completion(max_tokens="5"), 422, "max_tokens"),
    ("max_tokens as a float", "/completions", completion(max_tokens=2.5), 422, "max_tokens"),
    ("negative temperature", "/completions", completion(temperature=-0.5), 422, "temperature"),
    ("temperature above 2", "/completions", completion(temperature=7), 422, "temperature"),
    ("temperature as a bool", "/completions", completion(temperature=True), 422, "temperature"),
    ("top_p above 1", "/completions", completion(top_p=1.5), 422, "top_p"),
    ("top_k below -1", "/completions", completion(top_k=-5), 422, "top_k"),
    ("n zero", "/completions", completion(n=0), 422, "n"),
    ("n too big", "/completions", completion(n=1000), 400, "n"),
    ("too many sequences", "/completions", completion(prompt=["the"] * 5, n=16), 400, "prompt"),
    ("stop of the wrong type", "/completions", completion(stop=5), 422, "stop"),
    ("five stop strings", "/completions", completion(stop=["a", "b", "c", "d", "e"]), 422, "stop"),
    ("negative seed", "/completions", completion(seed=-1), 422, "seed"),
    ("logprobs above 5", "/completions", completion(logprobs=10), 422, "logprobs"),
    ("echo as a string", "/completions", completion(echo="yes"), 422, "echo"),
    ("stream as a string", "/completions", completion(stream="true"), 422, "stream"),
    ("presence_penalty", "/completions", completion(presence_penalty=1.0), 400, "presence_penalty"),
    ("best_of other than n", "/completions", completion(best_of=3), 400, "best_of"),
    ("unknown model", "/completions", completion(model="gpt-4"), 404, "model"),
    ("model that looks like a path", "/completions", completion(model="../../etc/passwd"), 404, "model"),
    ("unknown route", "/nothing", GOOD, 404, None),
    ("chat on a model without pairs", "/chat/completions", {**CHAT, "model": "word/best"}, 400, "model"),
    ("chat without a user message", "/chat/completions",
     {**CHAT, "messages": [{"role": "system", "content": "hello"}]}, 400, "messages"),
    ("chat with no messages", "/chat/completions", {**CHAT, "messages": []}, 422, "messages"),
    ("chat with an unknown role", "/chat/completions",
     {**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, 422, "messages[0].role"),
    ("chat with top_logprobs but no logprobs", "/chat/completions", {**CHAT, "top_logprobs": 2}, 400, "top_logprobs"),
    ("a 10 MB body", "/completions", json.dumps(completion(prompt="x" * 10_000_000)).encode(), 413, None),
]


def check_error(response: httpx.Response, status: int, param=None) -> dict:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"] and "\n" not in error["message"]
    assert isinstance(error["type"], str) and error["type"]
    if param is not None:
        assert error["param"] == param, error
    return error


def good_request_succeeds(server, headers=None) -> None:
    response = httpx.post(server.api_base + "/completions", json=GOOD, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("name, path, body, status, param", BAD, ids=[case[0] for case in BAD])
def test_each_bad_request_gets_its_openai_shaped_error_and_the_server_keeps_serving(live_server, name, path, body,
                                                                                  status, param):
    if isinstance(body, bytes):
        response = httpx.post(live_server.api_base + path, content=body,
                              headers={"content-type": "application/json"}, timeout=30)
    else:
        response = httpx.post(live_server.api_base + path, json=body, timeout=30)
    check_error(response, status, param)
    good_request_succeeds(live_server)


def test_a_json_body_labelled_as_a_form_is_read_as_json(live_server):
    """``curl -d '{...}'`` sends JSON as application/x-www-form-urlencoded: it works anyway."""
    response = httpx.post(live_server.api_base + "/completions", content=json.dumps(GOOD).encode(),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    check_error(httpx.post(live_server.api_base + "/completions", content=b"model=word/best&prompt=the",
                           headers={"content-type": "application/x-www-form-urlencoded"}), 400)


def test_wrong_method_is_405_in_openai_shape(live_server):
    check_error(httpx.get(live_server.api_base + "/completions"), 405)
    good_request_succeeds(live_server)


def test_openai_client_raises_its_usual_exceptions(live_server):
    api = client(live_server)
    with pytest.raises(openai.NotFoundError):
        api.completions.create(model="nope", prompt="the")
    with pytest.raises(openai.UnprocessableEntityError):
        api.completions.create(model="word/best", prompt="the", temperature=-1)
    with pytest.raises(openai.BadRequestError):
        api.completions.create(model="word/best", prompt="")


@pytest.fixture(scope="module")
def guarded_server(serve_models):
    """A server with an API key and room for one sequence at a time."""
    with start_server({"word": serve_models["word"], "char": serve_models["char"]}, api_key="sekret",
                      max_rows=1) as running:
        yield running


KEY = {"Authorization": "Bearer sekret"}


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_api_key"), ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
    ({"Authorization": "sekret"}, "missing_api_key"), ({"Authorization": "Basic sekret"}, "missing_api_key"),
])
def test_a_missing_or_wrong_key_is_401_and_the_right_one_works(guarded_server, headers, code):
    for method, path in (("POST", "/completions"), ("GET", "/models"), ("POST", "/nothing")):
        response = httpx.request(method, guarded_server.api_base + path, json=GOOD, headers=headers)
        assert check_error(response, 401)["code"] == code
    assert httpx.get(guarded_server.base_url + "/health").status_code == 200  # health needs no key
    good_request_succeeds(guarded_server, KEY)
    with pytest.raises(openai.AuthenticationError):
        client(guarded_server, api_key="wrong").models.list()
    assert client(guarded_server, api_key="sekret").models.list().data


def test_a_full_queue_is_429_and_frees_up_when_the_stream_ends(guarded_server):
    import asyncio

    # keep the model thread busy for a moment, so the first request is certainly still queued when the second comes
    pause = threading.Thread(target=lambda: asyncio.run(guarded_server.engine.run(time.sleep, 1.0)))
    pause.start()
    time.sleep(0.05)
    body = {"model": "char/best", "prompt": "the", "max_tokens": 1000, "temperature": 0, "stream": True}
    with httpx.stream("POST", guarded_server.api_base + "/completions", json=body, headers=KEY, timeout=30) as held:
        assert held.status_code == 200 and guarded_server.engine.active_rows == 1
        busy = httpx.post(guarded_server.api_base + "/completions", json=GOOD, headers=KEY, timeout=30)
        assert check_error(busy, 429)["code"] == "queue_full"
        with pytest.raises(openai.RateLimitError):
            client(guarded_server, api_key="sekret").completions.create(model="word/best", prompt="the")
    pause.join()
    _wait_idle(guarded_server.engine)
    good_request_succeeds(guarded_server, KEY)


def test_cors_is_off_unless_an_origin_is_given(live_server, serve_models):
    origin = {"Origin": "http://example.test"}
    assert "access-control-allow-origin" not in httpx.get(live_server.api_base + "/models", headers=origin).headers
    with start_server({"word": serve_models["word"]}, cors_origins=("http://example.test",)) as running:
        response = httpx.options(running.api_base + "/completions",
                                 headers={**origin, "Access-Control-Request-Method": "POST",
                                          "Access-Control-Request-Headers": "authorization, content-type"})
        assert response.headers["access-control-allow-origin"] == "http://example.test"
        other = httpx.get(running.api_base + "/models", headers={"Origin": "http://elsewhere.test"})
        assert "access-control-allow-origin" not in other.headers


# ------------------------------------------------------------------------------------------- text streaming


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_streamed_text_pieces_join_to_the_decoded_text(live_server, kind):
    from wordformer.serve.text import TextStream

    tok = live_server.registry.get(f"{kind}/best").loaded.tokenizer
    import random

    rng = random.Random(3)
    for _ in range(20):
        ids = [rng.randrange(2, tok.vocab_size) for _ in range(rng.randrange(1, 30))]
        stream = TextStream(tok)
        pieces = [stream.push(i) for i in ids] + [stream.finish()]
        assert "".join(pieces) == tok.decode(ids) == stream.text


def test_text_that_may_start_a_stop_string_is_held_back_until_it_is_clear():
    from wordformer.serve.text import TextStream
    from wordformer.tokenizers import CharTokenizer

    tok = CharTokenizer(sorted(set("abcdefgh ")))
    ids = tok.encode("abcabd")
    stream = TextStream(tok, ["abd"])
    out = [stream.push(i) for i in ids]
    assert out == ["", "", "abc", "", "", ""]  # "ab" might start "abd": held; "abd" completes it: cut
    assert stream.stopped and stream.text == "abc" and stream.finish() == ""
    stream = TextStream(tok, ["abd"])
    out = [stream.push(i) for i in tok.encode("abe")] + [stream.finish()]
    assert "".join(out) == "abe" and out[2] == "abe"


@pytest.mark.parametrize("field, key", [('"text":', "text"), ('"delta":{"content":', "delta")])
@pytest.mark.parametrize("usage", [False, True])
def test_template_token_events_are_the_general_events_byte_for_byte(field, key, usage):
    from wordformer.serve.openai_api import TokenChunks, sse

    head = {"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "word/best"}
    tail = {"system_fingerprint": "wordformer-x", **({"usage": None} if usage else {})}
    for text in ["", "the", ' "quoted"\n\t\\', "caf\u00e9 \u2603 \ud83d\ude00"]:
        content = text if key == "text" else {"content": text}
        general = sse({**head, "choices": [{"index": 2, key: content, "logprobs": None, "finish_reason": None}],
                       **tail})
        assert TokenChunks(head, tail, field)(2, text) == general
