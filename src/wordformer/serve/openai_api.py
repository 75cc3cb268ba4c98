"""``/v1/completions`` and ``/v1/chat/completions`` in OpenAI's shapes, so the official clients work unchanged.

The routes validate (pydantic, then the server's limits), encode prompts with the same function as
``wordformer generate`` (:func:`~wordformer.generation.encode_prompt`), hand rows to the model thread
(:mod:`.batching`) and shape what comes back. Greedy output (``temperature: 0``) is the text that
``wordformer generate --temperature 0`` prints after the prompt; with ``echo`` the text is the whole line that
command prints (:func:`~wordformer.generation.echo_text`: the prompt as the model read it, then the
continuation, joined as the tokenizer joins tokens). Choice ``j`` of a request with ``seed: s`` uses seed ``s + j``, as ``--num-samples`` does.

Extensions beyond OpenAI's fields: ``top_k`` (0 or -1 mean off, as in other servers) and ``append_eos``
(completions: end the prompt with ``<eos>``; default on for models trained with ``--pairs``, as in the CLI).
Log-probabilities are the model's own (log-softmax of its logits, ``<pad>`` excluded), before temperature,
top-k and top-p.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..decoding import DecodeRow, StepToken
from ..errors import WordformerError
from ..generation import echo_head, echo_separator, encode_prompt, never_generated
from ..tokenizers import Tokenizer
from .batching import Engine, Mailbox, RowRequest, RowSink
from .errors import ApiError, error_body
from .registry import ServedModel

router = APIRouter(tags=["openai"])

MAX_STOP = 4  # OpenAI's limit on stop strings
MAX_STOP_CHARS = 100
FINGERPRINT = f"wordformer-{__version__}"


# ------------------------------------------------------------------------------------------- requests


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = Field(False, description="send a last chunk with the usage, before [DONE]")


class Sampling(BaseModel):
    """Fields shared by both endpoints."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(..., description="a model id from GET /v1/models")
    temperature: Optional[StrictFloat] = Field(None, ge=0, le=2, allow_inf_nan=False,
                                               description="0 is greedy (default 1)")
    top_p: Optional[StrictFloat] = Field(None, ge=0, le=1, allow_inf_nan=False,
                                         description="nucleus sampling mass in [0, 1]; 0 is greedy (default 1: off)")
    top_k: Optional[StrictInt] = Field(None, ge=-1, description="extension: sample from the k most likely "
                                                                "tokens; 0 or -1: off (default off)")
    n: Optional[StrictInt] = Field(None, ge=1, description="choices per prompt (default 1)")
    stop: Optional[Union[StrictStr, list[StrictStr]]] = Field(
        None, description=f"up to {MAX_STOP} strings; the text ends before the first one (not included)")
    seed: Optional[StrictInt] = Field(None, ge=0, le=2**63 - 1, description="choice j uses seed + j")
    stream: Optional[StrictBool] = Field(False, description="server-sent events, ending with data: [DONE]")
    stream_options: Optional[StreamOptions] = None
    presence_penalty: Optional[StrictFloat] = Field(None, allow_inf_nan=False, description="only 0 is supported")
    frequency_penalty: Optional[StrictFloat] = Field(None, allow_inf_nan=False, description="only 0 is supported")
    logit_bias: Optional[dict[str, Any]] = Field(None, description="not supported (must be empty)")
    user: Optional[StrictStr] = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ValueError("stop must be a string or a list of strings")
        if len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        return value


class CompletionRequest(Sampling):
    """POST /v1/completions."""

    prompt: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]] = Field(
        ..., description="a string, a list of strings, a list of token ids or a list of such lists")
    max_tokens: Optional[StrictInt] = Field(None, ge=0, description="new tokens per choice (default 16)")
    logprobs: Optional[StrictInt] = Field(None, ge=0, le=5, description="log-probabilities of the chosen token "
                                                                        "and of this many most likely ones")
    echo: Optional[StrictBool] = Field(False, description="prepend the prompt to the text")
    best_of: Optional[StrictInt] = Field(None, ge=1, description="only best_of == n is supported")
    suffix: Optional[StrictStr] = Field(None, description="not supported")
    append_eos: Optional[StrictBool] = Field(None, description="extension: end the prompt with <eos> (default: "
                                                               "on for models trained with --pairs)")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise ValueError("prompt must be a string, a non-empty list of strings, or token ids")
        if all(isinstance(p, str) for p in value):
            return value
        if all(isinstance(p, int) and not isinstance(p, bool) for p in value):
            return value
        if all(isinstance(p, list) and p and all(isinstance(i, int) and not isinstance(i, bool) for i in p)
               for p in value):
            return value
        raise ValueError("prompt must be a string, a list of strings, a list of token ids or a list of non-empty "
                         "lists of token ids")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: StrictStr
    text: Optional[StrictStr] = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Optional[Union[StrictStr, list[ContentPart]]] = None
    name: Optional[StrictStr] = None


class ChatRequest(Sampling):
    """POST /v1/chat/completions (models trained with --pairs)."""

    messages: list[ChatMessage] = Field(..., min_length=1, description="the last user message is the prompt")
    max_tokens: Optional[StrictInt] = Field(None, ge=0, description="new tokens per choice (default: the "
                                                                    "server's limit; generation stops at <eos>)")
    max_completion_tokens: Optional[StrictInt] = Field(None, ge=0, description="the newer name of max_tokens")
    logprobs: Optional[StrictBool] = Field(False, description="return the chosen tokens' log-probabilities")
    top_logprobs: Optional[StrictInt] = Field(None, ge=0, le=20, description="and this many most likely ones")
    tools: Optional[list[Any]] = Field(None, description="not supported")
    response_format: Optional[dict[str, Any]] = Field(None, description="only {\"type\": \"text\"}")


# ------------------------------------------------------------------------------------------- checks


def _unsupported(req: Sampling) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise ApiError(400, f"{name} is not supported by wordformer models; leave it out or send 0",
                           param=name, code="unsupported_parameter")
    if req.logit_bias:
        raise ApiError(400, "logit_bias is not supported; leave it out", param="logit_bias",
                       code="unsupported_parameter")
    for s in (req.stop if isinstance(req.stop, list) else [req.stop] if req.stop else []):
        if len(s) > MAX_STOP_CHARS:
            raise ApiError(400, f"a stop string has {len(s)} characters; at most {MAX_STOP_CHARS} are allowed",
                           param="stop")


def _choices_per_prompt(req: Sampling, settings: Any) -> int:
    n = 1 if req.n is None else req.n
    if n > settings.max_n:
        raise ApiError(400, f"n={n} is above this server's limit of {settings.max_n} choices per prompt",
                       param="n", code="too_many_choices")
    return n


def _max_tokens(value: Optional[int], default: int, settings: Any, param: str = "max_tokens") -> int:
    value = default if value is None else value
    if value > settings.max_tokens:
        raise ApiError(400, f"{param}={value} is above this server's limit of {settings.max_tokens} new tokens "
                            "(wordformer serve --max-tokens)", param=param, code="max_tokens_too_large")
    return value


def _sampling(req: Sampling) -> dict[str, Any]:
    """OpenAI's options as generate's: temperature 0 or top_p 0 is greedy; top_k 0/-1 and top_p 1 are off."""
    temperature = 1.0 if req.temperature is None else float(req.temperature)
    top_p = None if req.top_p is None or req.top_p >= 1 else float(req.top_p)
    if top_p is not None and top_p <= 0:
        temperature, top_p = 0.0, None
    top_k = None if req.top_k is None or req.top_k < 1 else int(req.top_k)
    return dict(temperature=temperature, top_k=top_k, top_p=top_p)


def _stops(req: Sampling) -> list[str]:
    if req.stop is None:
        return []
    return [req.stop] if isinstance(req.stop, str) else list(req.stop)


# ------------------------------------------------------------------------------------------- prompts


def _check_prompt_chars(text: str, settings: Any, param: str = "prompt") -> None:
    if len(text) > settings.max_prompt_chars:
        raise ApiError(400, f"the prompt has {len(text):,} characters; this server reads at most "
                            f"{settings.max_prompt_chars:,} (the model sees only its last tokens anyway)",
                       param=param, code="prompt_too_long")


def _encode(tokenizer: Tokenizer, prompt: Union[str, list[int]], append_eos: bool, settings: Any,
            param: str = "prompt") -> list[int]:
    """Token ids of one prompt (string or ids), refusing what ``wordformer generate`` refuses."""
    if isinstance(prompt, str):
        _check_prompt_chars(prompt, settings, param)
        try:
            return encode_prompt(tokenizer, prompt, append_eos=append_eos, warn_unknown=False)
        except WordformerError as exc:
            raise ApiError(400, str(exc).replace("--prompt", "prompt"), param=param, code="invalid_prompt") from None
    if len(prompt) > settings.max_prompt_chars:
        raise ApiError(400, f"the prompt has {len(prompt):,} token ids; at most {settings.max_prompt_chars:,} are "
                            "read", param=param, code="prompt_too_long")
    vocab = tokenizer.vocab_size
    bad = next((i for i in prompt if not 0 <= i < vocab), None)
    if bad is not None:
        raise ApiError(400, f"token id {bad} is not in the model's vocabulary 0..{vocab - 1}", param=param,
                       code="invalid_prompt")
    return list(prompt) + ([tokenizer.eos_id] if append_eos else [])


INLINE_CHARS = 4096  # prompts up to this size are encoded in the event loop (a thread hop costs more)


async def _encode_all(tokenizer: Tokenizer, prompts: Sequence[Union[str, list[int]]], append_eos: bool,
                      settings: Any, param: str = "prompt") -> list[list[int]]:
    """Every prompt's ids; long prompts are encoded in a worker thread so the event loop keeps streaming."""
    if sum(len(p) for p in prompts) <= INLINE_CHARS:
        return [_encode(tokenizer, p, append_eos, settings, param) for p in prompts]
    return await run_in_threadpool(lambda: [_encode(tokenizer, p, append_eos, settings, param) for p in prompts])


def token_text(tokenizer: Tokenizer, token: int) -> str:
    return tokenizer.decode([token])


def prompt_logprobs(served: ServedModel, ids: list[int], k: int) -> list[tuple[Optional[float], list[tuple[int, float]]]]:
    """Each prompt token's log-probability given the tokens before it (the first has none), and the top ``k``.

    The model reads at most ``block_size`` tokens: long prompts are scored in windows that advance by half a
    block, so every token after the first has at least half a block of context. Runs on the model thread.
    """
    model, tok = served.loaded.model, served.loaded.tokenizer
    block = model.config.block_size
    banned = never_generated(tok)
    device = model.token_embedding.weight.device
    out: list[tuple[Optional[float], list[tuple[int, float]]]] = [(None, [])] + [(None, [])] * (len(ids) - 1)
    step = max(1, block // 2)
    start = 0
    with torch.no_grad():
        while True:
            window = ids[start : start + block]
            logits = model(torch.tensor([window], dtype=torch.long, device=device))[0].float()  # (W, V)
            if banned:
                logits[:, banned] = float("-inf")
            logp = F.log_softmax(logits, dim=-1)  # (W, V)
            first = 1 if start == 0 else block - step  # positions scored by an earlier window are kept
            for j in range(max(first, 1), len(window)):
                pos = start + j
                row = logp[j - 1]
                top = torch.topk(row, min(k, row.numel() - len(banned))) if k else None
                out[pos] = (float(row[window[j]]),
                            [(int(t), float(v)) for v, t in zip(top.values, top.indices)] if top is not None else [])
            if start + block >= len(ids):
                break
            start += step
    return out


# ------------------------------------------------------------------------------------------- rows and sinks


class ChoiceSink(RowSink):
    """One choice: turns tokens into text on the model thread and posts events to the request's queue."""

    def __init__(self, index: int, tokenizer: Tokenizer, stops: Sequence[str], mailbox: Mailbox,
                 events: "asyncio.Queue[tuple]", eos_id: int, echo_prompt: Optional[list[int]] = None) -> None:
        super().__init__()
        from .text import TextStream

        self.index = index
        self.tokenizer = tokenizer
        self.text = TextStream(tokenizer, stops, eos_id=eos_id)
        self.mailbox = mailbox
        self.events = events
        self.finish_reason: Optional[str] = None
        self.done = False
        # with echo: the joint between the prompt and the first new token ("the set" + "." has none), which
        # leads the continuation's first text, as in ``wordformer generate``'s line
        self.echo_prompt = echo_prompt
        self.lead = ""
        self._lead_sent = False

    @property
    def shown(self) -> str:
        """The continuation's text with the joint that leads it (echo only), as it was sent."""
        return self.lead + self.text.text if self.text.text else ""

    def _post(self, event: tuple) -> None:
        self.mailbox.post(self.events, event)

    def _led(self, delta: str) -> str:
        if delta and not self._lead_sent:
            self._lead_sent = True
            return self.lead + delta
        return delta

    def on_token(self, token: StepToken) -> bool:
        if self.echo_prompt is not None and not self.text.tokens and token.token != self.text.eos_id:
            self.lead = echo_separator(self.tokenizer, self.echo_prompt, token.token)
        before = len(self.lead) + len(self.text.text)
        delta = self._led(self.text.push(token.token))
        lp = None
        if token.logprob is not None and token.token != self.text.eos_id:
            lp = (token.token, token.logprob, token.top, before)
        if delta or lp is not None:
            self._post(("token", self.index, delta, lp))
        return self.text.stopped

    def on_finish(self, row: DecodeRow) -> None:
        delta = self._led(self.text.finish())
        reason = row.finish_reason
        self._post(("finish", self.index, delta, "length" if reason == "length" else "stop" if reason == "stop"
                    else None))

    def on_error(self, message: str) -> None:
        self._post(("error", self.index, message))


class Job:
    """One request's rows on the model thread, and the loop-side state that shapes the answer."""

    def __init__(self, request: Request, served: ServedModel, prompts: list[list[int]], n: int, *,
                 max_tokens: int, sampling: dict[str, Any], seed: Optional[int], stops: list[str],
                 logprobs: Optional[int], echo: bool = False) -> None:
        self.request = request
        self.served = served
        self.tokenizer = served.loaded.tokenizer
        self.prompts = prompts
        self.events: asyncio.Queue[tuple] = asyncio.Queue()
        mailbox = request.app.state.mailbox
        self.sinks: list[ChoiceSink] = []
        self.rows: list[RowRequest] = []
        for p, ids in enumerate(prompts):
            for j in range(n):
                sink = ChoiceSink(p * n + j, self.tokenizer, stops, mailbox, self.events, self.tokenizer.eos_id,
                                  echo_prompt=ids if echo else None)
                self.sinks.append(sink)
                self.rows.append(RowRequest(ids, max_tokens, sink, seed=None if seed is None else seed + j,
                                            logprobs=logprobs, **sampling))
        self.open = len(self.sinks)

    @property
    def engine(self) -> Engine:
        return self.request.app.state.engine

    def submit(self) -> None:
        self.engine.submit(self.served, self.rows)

    def cancel(self) -> None:
        """The client left or the request failed: stop every row still decoding."""
        for sink in self.sinks:
            sink.cancelled = True

    async def events_until_done(self) -> AsyncIterator[tuple]:
        while self.open:
            event = await self.events.get()
            if event[0] in ("finish", "error"):
                self.open -= 1
                self.sinks[event[1]].done = True
                if event[0] == "finish":
                    self.sinks[event[1]].finish_reason = event[3]
            yield event

    def usage(self) -> dict[str, int]:
        prompt = sum(len(p) for p in self.prompts)
        completion = sum(s.text.tokens for s in self.sinks)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _watch_disconnect(request: Request, job: Job) -> None:
    """Cancel the job's rows when a non-streaming client hangs up before its answer is ready."""
    while True:
        await asyncio.sleep(0.2)
        if await request.is_disconnected():
            job.cancel()
            return


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


class TokenChunks:
    """The SSE event of one plain token, made from a template: the JSON of ``chunk(...)`` without building it.

    Most events of a stream are one token's text and nothing else; at a few thousand events per second the
    event loop's time is the limit, so those are formatted from the constant parts and the text's JSON alone.
    ``tests`` check the result parses to the same object as the general path.
    """

    def __init__(self, head: dict[str, Any], tail: dict[str, Any], field: str) -> None:
        dumps = lambda obj: json.dumps(obj, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
        self._head = "data: " + dumps(head)[:-1] + ',"choices":[{"index":'
        rest = dumps(tail)
        self._tail = "}]" + ("," + rest[1:] if len(rest) > 2 else "}") + "\n\n"
        self._field = field  # '"text":' (completions) or '"delta":{"content":' (chat)
        self._close = "}" if field.startswith('"delta"') else ""

    def __call__(self, index: int, text: str) -> str:
        return (f'{self._head}{index},{self._field}{json.dumps(text, ensure_ascii=False)}{self._close},'
                f'"logprobs":null,"finish_reason":null{self._tail}')


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _stream(job: Job, chunks: AsyncIterator[str]) -> StreamingResponse:
    """Send ``chunks`` (one string per event, "" for none), joining those already waiting into one write.

    When the client or the network is slower than decoding, events pile up; sending them in one piece costs one
    write instead of many. ``chunks`` yields exactly one string per event it takes, so pulling as many strings
    as there are waiting events never blocks.
    """
    async def body() -> AsyncIterator[str]:
        it = chunks.__aiter__()
        parts: list[str] = []
        try:
            while True:
                try:
                    parts.append(await it.__anext__())
                    for _ in range(job.events.qsize()):
                        parts.append(await it.__anext__())
                except StopAsyncIteration:
                    break
                text, parts = "".join(parts), []
                if text:
                    yield text
            yield "".join(parts) + "data: [DONE]\n\n"
        finally:  # the client left (the task is cancelled) or the stream ended: free the rows
            job.cancel()

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


async def _collect(job: Job) -> list[tuple]:
    """Every event of a job run to its end; a decoding error becomes a 500."""
    watcher = asyncio.create_task(_watch_disconnect(job.request, job))
    try:
        events = [event async for event in job.events_until_done()]
    finally:
        watcher.cancel()
        job.cancel()
    error = next((e[2] for e in events if e[0] == "error"), None)
    if error:
        raise ApiError(500, error, type="server_error")
    return events


def _token_entries(events: list[tuple], choices: int) -> list[list[tuple]]:
    """Per choice, (token, logprob, top, text offset) of each generated token that carries them."""
    items: list[list[tuple]] = [[] for _ in range(choices)]
    for event in events:
        if event[0] == "token" and event[3] is not None:
            items[event[1]].append(event[3])
    return items


# ------------------------------------------------------------------------------------------- completions


def _legacy_logprobs(tok: Tokenizer, items: list[tuple[int, Optional[float], list[tuple[int, float]], int]],
                     want_top: bool) -> dict[str, Any]:
    """OpenAI's completions ``logprobs`` object from (token, logprob, top, text offset) entries."""
    return {
        "tokens": [token_text(tok, t) for t, _, _, _ in items],
        "token_logprobs": [lp for _, lp, _, _ in items],
        "top_logprobs": [({token_text(tok, i): v for i, v in top} if want_top and lp is not None else None)
                         for _, lp, top, _ in items],
        "text_offset": [off for _, _, _, off in items],
    }


async def _echo_logprobs(job: Job, k: int, prefix_offsets: list[int]) -> list[list[tuple]]:
    """Prompt tokens' entries for ``echo`` with ``logprobs`` (one list per prompt)."""
    out = []
    for ids, offsets in zip(job.prompts, prefix_offsets):
        scored = await job.engine.run(prompt_logprobs, job.served, ids, k)
        out.append([(t, lp, top, off) for t, (lp, top), off in zip(ids, scored, offsets)])
    return out


def _prompt_offsets(tok: Tokenizer, ids: list[int]) -> list[int]:
    """Character offset of each prompt token in the prompt's decoded text."""
    from .text import TextStream

    stream = TextStream(tok)
    offsets = []
    for t in ids:
        offsets.append(len(stream.text))
        stream.push(t)
    return offsets


@router.post("/completions", summary="Continue prompts (OpenAI completions)")
async def completions(body: CompletionRequest, request: Request) -> Any:
    """Continue each prompt, streamed (server-sent events) or whole; see the module docstring for the fields."""
    settings = request.app.state.settings
    served = request.app.state.registry.get(body.model)
    _unsupported(body)
    if body.suffix:
        raise ApiError(400, "suffix is not supported; leave it out", param="suffix", code="unsupported_parameter")
    n = _choices_per_prompt(body, settings)
    if body.best_of is not None and body.best_of != n:
        raise ApiError(400, f"best_of={body.best_of} is not supported; only best_of == n ({n})", param="best_of",
                       code="unsupported_parameter")
    max_tokens = _max_tokens(body.max_tokens, min(16, settings.max_tokens), settings)
    tok = served.loaded.tokenizer
    append_eos = served.pairs if body.append_eos is None else body.append_eos
    raw = body.prompt
    prompts: list[Union[str, list[int]]]
    if isinstance(raw, str):
        prompts = [raw]
    elif raw and isinstance(raw[0], int):
        prompts = [list(raw)]  # type: ignore[arg-type]
    else:
        prompts = list(raw)  # type: ignore[arg-type]
    if len(prompts) * n > settings.max_rows_per_request:
        raise ApiError(400, f"{len(prompts)} prompts x n={n} is {len(prompts) * n} sequences; this server decodes at "
                            f"most {settings.max_rows_per_request} per request", param="prompt",
                       code="too_many_sequences")
    ids = await _encode_all(tok, prompts, append_eos, settings)
    echo = bool(body.echo)
    heads = [echo_head(tok, p) for p in ids] if echo else []  # the prompt as the model read it
    want_lp = body.logprobs is not None
    job = Job(request, served, ids, n, max_tokens=max_tokens, sampling=_sampling(body), seed=body.seed,
              stops=_stops(body), logprobs=body.logprobs if want_lp else None, echo=echo)
    prefix_lp: list[list[tuple]] = []
    if echo and want_lp:
        offsets = [_prompt_offsets(tok, p) for p in ids]
        prefix_lp = await _echo_logprobs(job, body.logprobs or 0, offsets)
    job.submit()
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def head(i: int) -> str:
        """What choice ``i``'s text starts with: with ``echo``, its prompt as ``wordformer generate`` prints it
        (the joint to the continuation, which depends on the first new token, leads the continuation's text)."""
        return heads[i // n] if echo else ""

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
        out = {"id": cid, "object": "text_completion", "created": created, "model": served.id, "choices": choices,
               "system_fingerprint": FINGERPRINT}
        if include_usage:
            out["usage"] = usage
        return out

    if body.stream:
        plain = TokenChunks({"id": cid, "object": "text_completion", "created": created, "model": served.id},
                            {"system_fingerprint": FINGERPRINT, **({"usage": None} if include_usage else {})},
                            '"text":')

        async def chunks() -> AsyncIterator[str]:
            for i in range(len(job.sinks)):
                if echo:
                    lp = _legacy_logprobs(tok, prefix_lp[i // n], bool(body.logprobs)) if want_lp else None
                    yield sse(chunk([{"index": i, "text": head(i), "logprobs": lp, "finish_reason": None}]))
            async for event in job.events_until_done():
                kind, i = event[0], event[1]
                if kind == "error":
                    yield sse(error_body(event[2], type="server_error"))
                    continue
                lp = None
                if want_lp:
                    entries = []
                    if kind == "token" and event[3] is not None:
                        t, v, top, off = event[3]
                        entries = [(t, v, top, len(head(i)) + off)]
                    lp = _legacy_logprobs(tok, entries, bool(body.logprobs))
                if kind == "token":
                    yield plain(i, event[2]) if lp is None else sse(chunk([{"index": i, "text": event[2], "logprobs": lp,
                                                                             "finish_reason": None}]))
                else:
                    yield sse(chunk([{"index": i, "text": event[2], "logprobs": lp, "finish_reason": event[3]}]))
            if include_usage:
                yield sse(chunk([], job.usage()))

        return _stream(job, chunks())

    events = await _collect(job)
    items = [[(t, v, top, len(head(i)) + off) for t, v, top, off in entries]
             for i, entries in enumerate(_token_entries(events, len(job.sinks)))]
    choices = []
    for i, sink in enumerate(job.sinks):
        lp = None
        if want_lp:
            lp = _legacy_logprobs(tok, (prefix_lp[i // n] if echo else []) + items[i], bool(body.logprobs))
        choices.append({"index": i, "text": head(i) + sink.shown, "logprobs": lp,
                        "finish_reason": sink.finish_reason or "stop"})
    return JSONResponse({"id": cid, "object": "text_completion", "created": created, "model": served.id,
                         "choices": choices, "usage": job.usage(), "system_fingerprint": FINGERPRINT})


# ------------------------------------------------------------------------------------------- chat


def _chat_prompt(body: ChatRequest) -> str:
    """The last user message's text (text parts joined); the chapter's pairs models answer one prompt."""
    for message in reversed(body.messages):
        if message.role != "user":
            continue
        content = message.content
        if isinstance(content, list):
            other = [p.type for p in content if p.type != "text"]
            if other:
                raise ApiError(400, f"message content of type {other[0]!r} is not supported; send text",
                               param="messages", code="unsupported_content")
            content = "".join(p.text or "" for p in content)
        if not content or not content.strip():
            raise ApiError(400, "the last user message is empty; give it some text", param="messages",
                           code="invalid_prompt")
        return content
    raise ApiError(400, "no user message: the last message with role 'user' is the prompt", param="messages",
                   code="invalid_prompt")


def _chat_logprobs(tok: Tokenizer, items: list[tuple[int, float, list[tuple[int, float]]]]) -> dict[str, Any]:
    def entry(t: int, v: float) -> dict[str, Any]:
        text = token_text(tok, t)
        return {"token": text, "logprob": v, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**entry(t, v), "top_logprobs": [entry(i, w) for i, w in top]} for t, v, top in items],
            "refusal": None}


@router.post("/chat/completions", summary="Answer the last user message (models trained with --pairs)")
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    """The chapter's prompt/answer models: the last user message, then ``<eos>``, starts the answer."""
    settings = request.app.state.settings
    served = request.app.state.registry.get(body.model)
    if not served.pairs:
        raise ApiError(400, f"the model {served.id!r} was not trained on prompt/answer pairs (wordformer train "
                            "--pairs): it continues text, so use POST /v1/completions with a prompt",
                       param="model", code="model_not_chat")
    _unsupported(body)
    if body.tools:
        raise ApiError(400, "tools are not supported by wordformer models", param="tools",
                       code="unsupported_parameter")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise ApiError(400, "only response_format {\"type\": \"text\"} is supported", param="response_format",
                       code="unsupported_parameter")
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    n = _choices_per_prompt(body, settings)
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    wanted = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    max_tokens = _max_tokens(wanted, settings.max_tokens, settings, param)
    tok = served.loaded.tokenizer
    text = _chat_prompt(body)
    [ids] = await _encode_all(tok, [text], True, settings, "messages")
    want_lp = bool(body.logprobs)
    job = Job(request, served, [ids], n, max_tokens=max_tokens, sampling=_sampling(body), seed=body.seed,
              stops=_stops(body), logprobs=(body.top_logprobs or 0) if want_lp else None)
    job.submit()
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
        out = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": served.id,
               "choices": choices, "system_fingerprint": FINGERPRINT}
        if include_usage:
            out["usage"] = usage
        return out

    if body.stream:
        plain = TokenChunks({"id": cid, "object": "chat.completion.chunk", "created": created, "model": served.id},
                            {"system_fingerprint": FINGERPRINT, **({"usage": None} if include_usage else {})},
                            '"delta":{"content":')

        async def chunks() -> AsyncIterator[str]:
            for i in range(n):
                yield sse(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                  "finish_reason": None}]))
            async for event in job.events_until_done():
                kind, i = event[0], event[1]
                if kind == "error":
                    yield sse(error_body(event[2], type="server_error"))
                    continue
                if kind == "token":
                    lp = None
                    if want_lp and event[3] is not None:
                        t, v, top, _ = event[3]
                        lp = _chat_logprobs(tok, [(t, v, top)])
                    if lp is None:
                        yield plain(i, event[2]) if event[2] else ""
                    else:
                        yield sse(chunk([{"index": i, "delta": {"content": event[2]}, "logprobs": lp,
                                          "finish_reason": None}]))
                else:
                    last = sse(chunk([{"index": i, "delta": {"content": event[2]}, "logprobs": None,
                                       "finish_reason": None}])) if event[2] else ""
                    yield last + sse(chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": event[3]}]))
            if include_usage:
                yield sse(chunk([], job.usage()))

        return _stream(job, chunks())

    events = await _collect(job)
    items = [[(t, v, top) for t, v, top, _ in entries] for entries in _token_entries(events, len(job.sinks))]
    choices = [{"index": i, "message": {"role": "assistant", "content": sink.text.text, "refusal": None},
                "logprobs": _chat_logprobs(tok, items[i]) if want_lp else None,
                "finish_reason": sink.finish_reason or "stop"} for i, sink in enumerate(job.sinks)]
    return JSONResponse({"id": cid, "object": "chat.completion", "created": created, "model": served.id,
                         "choices": choices, "usage": job.usage(), "system_fingerprint": FINGERPRINT})
