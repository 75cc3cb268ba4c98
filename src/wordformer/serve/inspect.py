"""The page's own endpoints, under ``/v1/inspect``: everything the chapter explains, as JSON for one served model.

Routes stay thin: validate the request (pydantic), run the library function on the model thread
(``engine.run``), shape the JSON. The numerics live in the library: :mod:`wordformer.explain` (the seven steps,
the same function as ``wordformer explain --json``), :mod:`wordformer.lens` (logit lens, head ablation, the
sampling distribution), :mod:`wordformer.plots` (attention maps, positional table, embedding coordinates,
training curves) and :mod:`wordformer.token_display` (readable tokens). A request names a model by its id
and text or token ids, never a file: the training curves come from the run folder beside the checkpoint the
server was started with.

Endpoints (all ``POST`` with a JSON body, except ``GET /models``):
``/models`` model cards; ``/tokens``; ``/attention`` every layer and head; ``/explain`` the seven steps;
``/distribution`` next-token probabilities with temperature, top-k and top-p; ``/lens`` logit lens with heads
switched off; ``/positional``; ``/embeddings``; ``/curves``; ``/generate`` token-by-token generation as
server-sent events with each new token's attention and the KV cache's length.
"""

from __future__ import annotations

import json
import math
from typing import Any, AsyncIterator, Optional

import torch
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import WordformerError
from ..explain import explain_token
from ..generation import encode_prompt, never_generated, next_token, suppress
from ..lens import check_heads, head_ablation, logit_lens, sampling_distribution
from ..plots import attention_maps, embedding_coordinates, find_metrics_csv, positional_table, read_metrics
from ..token_display import readable_tokens
from .errors import ApiError
from .registry import ServedModel

router = APIRouter(tags=["inspect"])

MAX_IDS = 100_000  # a bound on the ids list before it is checked against the model's block_size
DIGITS = 5  # decimals sent for weights and probabilities: enough to check by hand, a third of the bytes


# ------------------------------------------------------------------------------------------ requests


class Text(BaseModel):
    """A model and a sequence: ``prompt`` text (``<eos>`` appended for pair models unless ``append_eos`` says
    otherwise) or the token ``ids`` themselves (as the page holds them during generation)."""

    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = Field(None, description="a served model id (GET /v1/models); default: the first")
    prompt: Optional[str] = Field(None, max_length=200_000, description="the input text")
    ids: Optional[list[int]] = Field(None, max_length=MAX_IDS, description="token ids instead of text")
    append_eos: Optional[bool] = Field(None, description="end the prompt with <eos> (default: on for pair models)")

    @model_validator(mode="after")
    def one_source(self) -> "Text":
        if (self.prompt is None) == (self.ids is None):
            raise ValueError("give either 'prompt' (text) or 'ids' (token ids), not both or neither")
        return self


class Explain(Text):
    layer: int = Field(0, description="decoder block, 0-based (negative counts from the end)")
    head: int = Field(0, description="attention head, 0-based")
    token: int = Field(-1, description="position of the token to explain (negative counts from the end)")
    top_k: int = Field(5, ge=1, le=1000, description="how many next tokens to list")


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0.0, le=100.0, description="0 means greedy")
    top_k: Optional[int] = Field(None, ge=1, description="keep the k most likely tokens (null: off)")
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0, description="keep the smallest set with this mass (null: off)")


class Distribution(Text, Sampling):
    position: int = Field(-1, description="the token after which the next one is predicted (default: the last)")
    limit: int = Field(40, ge=1, le=100_000, description="how many tokens to list, most likely first")


class Lens(Text):
    top_k: int = Field(3, ge=1, le=20, description="tokens per layer and position")
    ablate: list[list[int]] = Field(default_factory=list, max_length=4096,
                                    description="heads to switch off, as [layer, head] pairs")
    position: int = Field(-1, description="position whose prediction is compared with and without the heads")


class Embeddings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = None
    limit: int = Field(300, ge=1, le=5000, description="the first N token ids (word vocabularies: the most frequent)")
    prompt: Optional[str] = Field(None, max_length=200_000, description="its tokens are always included")
    ids: Optional[list[int]] = Field(None, max_length=MAX_IDS, description="these tokens are always included")
    append_eos: Optional[bool] = None


class ModelOnly(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = None


class Generate(Text, Sampling):
    max_tokens: int = Field(16, ge=1, description="tokens to add at most (stops earlier at <eos>)")
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1, description="random seed: the same seed, the same tokens")


# ------------------------------------------------------------------------------------------ helpers


def _served(request: Request, model_id: Optional[str]) -> ServedModel:
    return request.app.state.registry.get(model_id)


def _ids(served: ServedModel, body: Text, *, any_length: bool = False) -> list[int]:
    """The sequence as token ids, refusing what the model cannot read (one clear line, status 400).

    ``any_length`` lets a sequence longer than ``block_size`` through (the tokens view shows it, and says so).
    """
    loaded = served.loaded
    block = loaded.model_config.block_size
    if body.ids is not None:
        if not body.ids:
            raise ApiError(400, "'ids' is empty: give at least one token id", param="ids")
        vocab = loaded.tokenizer.vocab_size
        bad = [i for i in body.ids if not 0 <= i < vocab]
        if bad:
            raise ApiError(400, f"token id(s) {bad[:5]} outside the vocabulary 0..{vocab - 1}", param="ids")
        ids = list(body.ids)
    else:
        append = loaded.pairs if body.append_eos is None else body.append_eos
        try:
            ids = encode_prompt(loaded.tokenizer, body.prompt or "", append_eos=append, warn_unknown=False)
        except WordformerError as exc:
            raise ApiError(400, str(exc), param="prompt") from None
    if len(ids) > block and not any_length:
        raise ApiError(400, f"the sequence has {len(ids)} tokens but the model reads at most block_size={block}; "
                            "shorten the prompt", param="prompt" if body.ids is None else "ids", code="context_length_exceeded")
    return ids


def _round(x: Any, digits: int = DIGITS) -> Any:
    """Nested lists of floats rounded (JSON size); non-finite numbers become None (JSON has no inf)."""
    if isinstance(x, float):
        return round(x, digits) if math.isfinite(x) else None
    if isinstance(x, list):
        return [_round(v, digits) for v in x]
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    return x


def _tokens(served: ServedModel, ids: list[int]) -> list[dict[str, Any]]:
    return readable_tokens(served.loaded.tokenizer, ids)


def _label(served: ServedModel, i: int) -> str:
    return readable_tokens(served.loaded.tokenizer, [i])[0]["label"]


def _position(value: int, count: int, name: str = "position") -> int:
    if not -count <= value < count:
        raise ApiError(400, f"{name} {value} is out of range: the sequence has {count} tokens "
                            f"(0..{count - 1}, or -{count}..-1 from the end)", param=name)
    return value % count


async def _run(request: Request, fn: Any, *args: Any) -> Any:
    return await request.app.state.engine.run(fn, *args)


def _sequence(served: ServedModel, ids: list[int], body: Text) -> dict[str, Any]:
    """What every sequence answer starts with: the model, its tokens and where a pair model's answer begins."""
    tok = served.loaded.tokenizer
    prompt_eos = served.pairs and body.ids is None and (body.append_eos is not False)
    return {"model": served.id, "ids": ids, "tokens": _tokens(served, ids),
            "block_size": served.loaded.model_config.block_size, "pairs": served.pairs,
            "answer_starts": len(ids) if prompt_eos and ids and ids[-1] == tok.eos_id else None}


# ------------------------------------------------------------------------------------------ routes


EXAMPLE_PROMPTS = ("what is statquest", "the python", "a function is", "First Citizen:", "the")


def example_prompt(served: ServedModel) -> str:
    """A first prompt for the page: the chapter's toy sentence or a demo prompt, if the model knows its words."""
    tok = served.loaded.tokenizer
    unk = tok.unk_id
    for prompt in EXAMPLE_PROMPTS:
        ids = tok.encode(prompt)
        if ids and unk not in ids and len(ids) + 1 <= served.loaded.model_config.block_size:
            return prompt
    words = [tok.id_to_token(i) for i in range(3, min(6, tok.vocab_size))] if tok.kind == "word" else []
    return " ".join(words) or "the"


@router.get("/models", summary="model cards of every served checkpoint")
async def models(request: Request) -> dict[str, Any]:
    registry = request.app.state.registry
    return {"default": registry.default_id,
            "data": [{**served.card(), "example_prompt": example_prompt(served)} for served in registry.models()]}


@router.post("/tokens", summary="the sequence's tokens with ids, specials marked, BPE pieces readable")
async def tokens(request: Request, body: Text) -> dict[str, Any]:
    """Any length: ``too_long`` says when the sequence is longer than the model's context (the other views refuse it)."""
    served = _served(request, body.model)
    ids = _ids(served, body, any_length=True)
    return {**_sequence(served, ids, body), "too_long": len(ids) > served.loaded.model_config.block_size}


@router.post("/attention", summary="attention weights of every layer and head (rows: queries; lower triangle)")
async def attention(request: Request, body: Text) -> dict[str, Any]:
    served = _served(request, body.model)
    ids = _ids(served, body)
    maps = await _run(request, attention_maps, served.loaded.model, ids)  # L x (H, T, T)
    # row i holds the weights of query i over keys 0..i: the mask makes the rest exactly 0
    rows = [[[row[: i + 1] for i, row in enumerate(head)] for head in layer.tolist()] for layer in maps]
    return {**_sequence(served, ids, body), "num_layers": len(maps), "num_heads": int(maps[0].size(0)),
            "attention": _round(rows)}


@router.post("/explain", summary="the chapter's seven steps for one layer, head and token (= explain --json)")
async def explain(request: Request, body: Explain) -> dict[str, Any]:
    served = _served(request, body.model)
    ids = _ids(served, body)
    loaded = served.loaded
    e = await _run(request, lambda: explain_token(loaded.model, ids, body.layer, body.head, body.token,
                                                  tokenizer=loaded.tokenizer, top_k=body.top_k))
    data = e.to_dict()
    data.pop("probabilities")  # the whole vocabulary: /distribution serves it
    data["top"] = [{**t, "label": _label(served, loaded.tokenizer.token_to_id(t["token"]))}
                   if loaded.tokenizer.token_to_id(t["token"]) is not None else t for t in data["top"]]
    return {**_sequence(served, ids, body), "explanation": data}


@router.post("/distribution", summary="the next-token distribution with temperature, top-k and top-p applied")
async def distribution(request: Request, body: Distribution) -> dict[str, Any]:
    served = _served(request, body.model)
    ids = _ids(served, body)
    position = _position(body.position, len(ids))
    loaded = served.loaded
    banned = never_generated(loaded.tokenizer)

    def compute() -> Any:
        with torch.no_grad():
            loaded.model.eval()
            logits = loaded.model(torch.tensor([ids], device=loaded.model.token_embedding.weight.device))[0, position]
        return sampling_distribution(logits.float().cpu(), temperature=body.temperature, top_k=body.top_k,
                                     top_p=body.top_p, banned=banned)

    s = await _run(request, compute)
    order = torch.argsort(s.probabilities, descending=True, stable=True)[: body.limit].tolist()
    listed = []
    for i in order:
        listed.append({"id": i, "label": _label(served, i), "probability": float(s.probabilities[i]),
                       "tempered": float(s.tempered[i]), "kept": bool(s.kept[i]),
                       "renormalised": float(s.renormalised[i])})
    return {**_sequence(served, ids, body), "position": position, "temperature": body.temperature,
            "top_k": body.top_k, "top_p": body.top_p, "vocab_size": int(s.probabilities.numel()),
            "kept_count": int(s.kept.sum()), "kept_mass": float(s.tempered[s.kept].sum()),
            "entropy": s.entropy, "entropy_bits": s.entropy_bits, "entropy_before": s.entropy_before,
            "tokens": _round(listed, 7)}


@router.post("/lens", summary="the logit lens: each layer's prediction, with chosen heads switched off")
async def lens(request: Request, body: Lens) -> dict[str, Any]:
    served = _served(request, body.model)
    ids = _ids(served, body)
    position = _position(body.position, len(ids))
    loaded = served.loaded
    try:
        heads = check_heads(loaded.model, body.ablate)
    except WordformerError as exc:
        raise ApiError(400, str(exc), param="ablate") from None
    banned = never_generated(loaded.tokenizer)

    def compute() -> Any:
        return (logit_lens(loaded.model, ids, banned=banned, ablate=heads),
                head_ablation(loaded.model, ids, heads, position=position, banned=banned))

    result, ablation = await _run(request, compute)
    k = min(body.top_k, result.probabilities.size(-1))
    top = torch.topk(result.probabilities, k, dim=-1)  # (S, T, k)
    stages = []
    for s, name in enumerate(result.stages):
        stages.append({"name": name, "top": [[{"id": int(i), "label": _label(served, int(i)), "probability": float(p)}
                                              for p, i in zip(top.values[s, t], top.indices[s, t])]
                                             for t in range(len(ids))]})

    def top_of(p: torch.Tensor) -> list[dict[str, Any]]:
        best = torch.topk(p, min(5, p.numel()))
        return [{"id": int(i), "label": _label(served, int(i)), "probability": float(v)}
                for v, i in zip(best.values, best.indices)]

    return {**_sequence(served, ids, body), "ablate": [list(h) for h in heads], "position": position,
            "stages": _round(stages), "before": _round(top_of(ablation.before)),
            "after": _round(top_of(ablation.after)), "kl_divergence": ablation.kl_divergence,
            "top_changed": ablation.changed_top}


@router.post("/positional", summary="the positional encoding table (positions x d_model)")
async def positional(request: Request, body: ModelOnly) -> dict[str, Any]:
    served = _served(request, body.model)
    table, title = await _run(request, positional_table, served.loaded.model)
    cfg = served.loaded.model_config
    return {"model": served.id, "kind": cfg.positional, "title": title, "table": _round(table.tolist(), 4)}


@router.post("/embeddings", summary="token embeddings in 2-D: as they are at d_model 2, by PCA above")
async def embeddings(request: Request, body: Embeddings) -> dict[str, Any]:
    served = _served(request, body.model)
    loaded = served.loaded
    wanted = set(range(min(body.limit, loaded.tokenizer.vocab_size)))
    prompt_ids: list[int] = []
    if body.prompt is not None or body.ids is not None:
        prompt_ids = _ids(served, Text(model=body.model, prompt=body.prompt, ids=body.ids, append_eos=body.append_eos))
        wanted |= set(prompt_ids)
    coords, xlabel, ylabel = await _run(request, embedding_coordinates, loaded.model.token_embedding.weight)
    ids = sorted(wanted)
    labels = _tokens(served, ids)
    points = [{"id": i, "label": t["label"], "special": t["special"], "x": float(coords[i, 0]),
               "y": float(coords[i, 1]), "in_prompt": i in prompt_ids} for i, t in zip(ids, labels)]
    return {"model": served.id, "d_model": loaded.model_config.d_model,
            "method": "direct" if loaded.model_config.d_model <= 2 else "pca", "x_label": xlabel, "y_label": ylabel,
            "tied": loaded.model_config.tie_weights, "points": _round(points, 5)}


@router.post("/curves", summary="the run's training curves, from metrics.csv beside the served checkpoint")
async def curves(request: Request, body: ModelOnly) -> dict[str, Any]:
    served = _served(request, body.model)
    path = served.loaded.path
    if path is None:
        return {"model": served.id, "available": False, "reason": "the model was not loaded from a run folder"}
    try:
        series = read_metrics(find_metrics_csv(path.parent))
    except WordformerError:
        return {"model": served.id, "available": False,
                "reason": "no logs/csv/metrics.csv beside the checkpoint (an export, or a run trained without logs)"}
    return {"model": served.id, "available": True,
            "series": {name: {"step": steps, "value": _round(values, 7)} for name, (steps, values) in series.items()}}


# ------------------------------------------------------------------------------------------ generation


def _decode_step(model: Any, cache: Any, new: list[int], start: int, generator: Optional[torch.Generator],
                 body: Generate, banned: list[int]) -> tuple[int, float, list[list[list[float]]]]:
    """Feed ``new`` tokens (positions ``start``..) through the KV cache, pick the next token.

    Returns the token, its probability under the distribution it was drawn from, and the attention of the
    last fed token over every cached position, per layer and head (L x H x S).
    """
    with torch.no_grad():
        model.eval()
        device = model.token_embedding.weight.device
        idx = torch.tensor([new], dtype=torch.long, device=device)  # (1, T)
        positions = torch.arange(start, start + len(new), device=device)
        logits, maps = model(idx, cache=cache, positions=positions, return_attention=True)  # (1, T, V), L x (1, H, T, S)
        last = suppress(logits[:, -1].float(), banned)  # (1, V)
        token = next_token(last, temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, generator=generator)
        dist = sampling_distribution(last[0].cpu(), temperature=body.temperature, top_k=body.top_k, top_p=body.top_p)
        row = [m[0, :, -1].float().cpu().tolist() for m in maps]  # L x H x S
    return int(token[0]), float(dist.renormalised[int(token[0])]), row


@router.post("/generate", summary="generate token by token (server-sent events): each token, its attention, the KV cache")
async def generate(request: Request, body: Generate) -> StreamingResponse:
    """Events: one ``{"index", "id", "token", "probability", "cache_length", "attention"}`` per new token, then
    ``{"done": true, "finish_reason": "stop" | "length" | "context"}`` and ``data: [DONE]``.

    The same seed, sampling options and ids give the tokens ``wordformer generate`` gives (greedy: always), as
    long as the context does not fill: the page stops at ``block_size`` (``finish_reason`` "context") rather
    than sliding the window, so every new token's attention covers the whole sequence.
    """
    served = _served(request, body.model)
    ids = _ids(served, body)
    settings = request.app.state.settings
    cap = getattr(settings, "max_tokens", None)
    if cap is not None and body.max_tokens > cap:
        raise ApiError(400, f"max_tokens={body.max_tokens} is above this server's limit of {cap}", param="max_tokens")
    loaded = served.loaded
    model, tok = loaded.model, loaded.tokenizer
    block = loaded.model_config.block_size
    banned = never_generated(tok)
    cache_box: dict[str, Any] = {}

    def start() -> Optional[torch.Generator]:
        cache_box["cache"] = model.new_cache(1)
        if body.seed is None:
            return None
        return torch.Generator(device=model.token_embedding.weight.device).manual_seed(int(body.seed))

    async def events() -> AsyncIterator[str]:
        generator = await _run(request, start)
        seq = list(ids)
        fed = 0
        reason = "length"
        for index in range(body.max_tokens):
            if len(seq) >= block:
                reason = "context"
                break
            if await request.is_disconnected():
                return
            token, p, row = await _run(request, _decode_step, model, cache_box["cache"], seq[fed:], fed, generator,
                                       body, banned)
            fed = len(seq)
            seq.append(token)
            event = {"index": index, "id": token, "token": _tokens(served, [token])[0], "probability": p,
                     "cache_length": fed, "attention": _round(row, 4)}
            yield f"data: {json.dumps(event)}\n\n"
            if token == tok.eos_id:
                reason = "stop"
                break
        yield f"data: {json.dumps({'done': True, 'finish_reason': reason, 'ids': seq})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
