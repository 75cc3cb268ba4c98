"""Generation and next-token prediction: the decoder run one token at a time.

The chapter's end-of-sequence token ends the input and starts generation; with ``append_eos`` the
prompt gets ``<eos>`` appended, and generation stops at the next ``<eos>``. By default a prompt gets it
as the model was trained: a model trained on prompt/answer pairs (``--pairs``) answers what follows
``<eos>``, and its tokenizer, loaded from the checkpoint, says so (``Tokenizer.pairs``), so
``generate(model, tokenizer, "who wrote hamlet")`` answers like ``wordformer generate``.

What ``wordformer generate`` prints is :func:`echo_text` (``generate(..., echo=True)``): the prompt as the
model read it (a word model's lowercasing and ``<unk>`` visible), then the continuation, joined as the
tokenizer joins tokens. :func:`generate` alone returns the continuation.

Context policy (documented in the README): the model sees at most ``block_size`` tokens. A prompt
longer than that keeps its last ``block_size`` tokens. When generation fills the window, the window
slides: it restarts from the most recent ``block_size // 2`` tokens, whose keys and values are
recomputed (cached keys carry their old positions, so a cache cannot simply be cropped). The cached
and uncached paths follow the same policy and give identical greedy output. In a batch, prompts of
different lengths would slide at the padded length: when a slide lies ahead, each length is decoded as its
own batch, so every row gets exactly what it would get alone.

``<pad>`` only fills batches, so it is never generated nor offered by :func:`predict_next` (its logit is
set to -inf), unless it doubles as ``<eos>`` (GPT-2's ``<|endoftext|>``). At most :data:`MAX_NEW_TOKENS`
tokens are generated per call: the output buffer is allocated up front.

Shape legend: B = batch, N = tokens so far (with left padding), T = new tokens, V = vocabulary.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import WordformerError, check_int
from .model import WordPredictor
from .token_display import token_text
from .tokenizers import Tokenizer

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS = 1_000_000
"""Most tokens one call generates: the (batch, prompt + new) id buffer is allocated up front, so an
unbounded count would ask for terabytes (or overflow torch's int64 sizes) instead of failing clearly."""


def check_sampling(temperature: float, top_k: Optional[int], top_p: Optional[float], max_new_tokens: int) -> None:
    """Refuse sampling options outside their domains (temperature <= 0 means greedy)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise WordformerError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 0")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise WordformerError(f"max_new_tokens={max_new_tokens} is above the limit of {MAX_NEW_TOKENS:,} new tokens "
                              "per call; ask for fewer (generation also stops at <eos>)")
    if top_k is not None:
        check_int("top_k", top_k)
    if top_p is not None and not (0.0 < top_p <= 1.0):
        raise WordformerError(f"top_p={top_p!r} must lie in (0, 1] (or be omitted)")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not math.isfinite(temperature):
        # inf would flatten every distribution to uniform noise; NaN has no meaning
        raise WordformerError(f"temperature={temperature!r} must be a finite number (0 or below means greedy)")


def filter_logits(logits: Tensor, *, top_k: Optional[int] = None, top_p: Optional[float] = None) -> Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest set with mass >= top_p."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keep the token that crosses top_p
        drop = drop.scatter(-1, order, drop)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: Tensor, *, temperature: float, top_k: Optional[int], top_p: Optional[float],
               generator: Optional[torch.Generator]) -> Tensor:
    """Pick one token per row from (B, V) logits: argmax when temperature <= 0, else sample."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    # best logit shifted to 0 and float64 (a float32 1e-300 is 0): a tiny temperature then gives -inf for the
    # rest, not inf - inf or 0 / 0 = NaN
    logits = logits.double()
    scaled = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    probs = filter_logits(scaled, top_k=top_k, top_p=top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def never_generated(tokenizer: Tokenizer) -> list[int]:
    """Ids the model must never emit: ``<pad>``, unless it is also ``<eos>`` (GPT-2), which ends text."""
    return [] if tokenizer.pad_id == tokenizer.eos_id else [tokenizer.pad_id]


def top_k_allowed(probabilities: Tensor, k: int, banned: Sequence[int]) -> "torch.return_types.topk":
    """The ``k`` most likely entries of (V,) ``probabilities``, never a banned one (even at a tie at 0)."""
    ranked = probabilities.clone()
    if banned:
        ranked[list(banned)] = -1.0  # below every probability
    return torch.topk(ranked, min(k, probabilities.numel() - len(banned)))


def suppress(logits: Tensor, ids: Sequence[int]) -> Tensor:
    """``logits`` (..., V) with the entries of ``ids`` set to -inf, so neither argmax nor sampling picks them."""
    if not ids:
        return logits
    logits = logits.clone()
    logits[..., list(ids)] = float("-inf")
    return logits


@torch.no_grad()
def generate_ids(
    model: WordPredictor,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    eos_id: Optional[int] = None,
    pad_id: int = 0,
    seed: Optional[int] = None,
    use_cache: bool = True,
    suppress_ids: Sequence[int] = (),
) -> list[list[int]]:
    """Continue each prompt (token ids) by up to ``max_new_tokens`` tokens; returns the new ids per prompt.

    Prompts of different lengths are batched with left padding; a row stops at ``eos_id`` (included
    in its output). Greedy output is identical with and without the KV cache. ``suppress_ids`` are never
    generated: :func:`generate` passes ``<pad>`` (:func:`never_generated`); with bare ids (GPT-2 without its
    tokenizer) id 0 is a real token, so nothing is suppressed unless asked.
    """
    check_sampling(temperature, top_k, top_p, max_new_tokens)
    vocab = model.config.vocab_size
    prompts = _checked_prompts(prompts, vocab)
    for name, value in (("pad_id", pad_id), ("eos_id", eos_id)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                  or not 0 <= value < vocab):
            raise WordformerError(f"{name}={value!r} must be a token id in 0..{vocab - 1}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise WordformerError(f"seed={seed!r} must be an integer >= 0 (or None)")
    suppress_ids = sorted({int(i) for i in suppress_ids})
    if any(not 0 <= i < vocab for i in suppress_ids):
        raise WordformerError(f"suppress_ids={suppress_ids} must lie in the vocabulary 0..{vocab - 1}")
    if len(suppress_ids) >= vocab:
        raise WordformerError("suppress_ids leaves no token to generate; suppress fewer ids")
    threads = torch.get_num_threads()
    if len(prompts) == 1 and use_cache and model.token_embedding.weight.device.type == "cpu":
        # one cached token at a time is a chain of tiny ops: a second thread only adds synchronisation
        # (measured: 2,132 vs 949 tokens/s on 2 cores, benchmarks/NOTES.md)
        torch.set_num_threads(1)
    device = model.token_embedding.weight.device
    generator = torch.Generator(device=device).manual_seed(int(seed)) if seed is not None else None
    options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos_id,
                   pad_id=pad_id, generator=generator, use_cache=use_cache, suppress_ids=suppress_ids)
    lengths, block = [len(p) for p in prompts], model.config.block_size
    try:
        if len(set(lengths)) == 1 or min(max(lengths), block) + max_new_tokens <= block + 1:  # no slide ahead
            return _generate_ids(model, prompts, **options)
        # The window would slide: a left-padded row would slide at the batch's padded length, not at its own,
        # and so see other tokens than it would alone. Rows of one length share a schedule: decode them together.
        out: list[list[int]] = [[] for _ in prompts]
        for length in sorted(set(lengths)):
            rows = [i for i, n in enumerate(lengths) if n == length]
            for i, ids in zip(rows, _generate_ids(model, [prompts[i] for i in rows], **options)):
                out[i] = ids
        return out
    finally:
        torch.set_num_threads(threads)


def _checked_prompts(prompts: object, vocab: int) -> list[list[int]]:
    """Prompts as lists of ints in 0..vocab-1; anything else is a one-line error, never a deep torch one."""
    if isinstance(prompts, Tensor):
        prompts = prompts.tolist() if prompts.dim() == 2 else None
    shape = "a list of prompts, each a list of token ids, e.g. [[1, 2, 3]]"
    if not isinstance(prompts, Sequence) or isinstance(prompts, (str, bytes)) or not prompts:
        raise WordformerError(f"prompts must be {shape}")
    checked = []
    for p in prompts:
        if not isinstance(p, Sequence) or isinstance(p, (str, bytes)):
            raise WordformerError(f"prompts must be {shape}, not a list of {type(p).__name__}")
        if len(p) == 0:
            raise WordformerError("every prompt needs at least one token")
        for i in p:  # a negative id would silently index from the end of the embedding table
            if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < vocab:
                raise WordformerError(f"token id {i!r} is not in the vocabulary 0..{vocab - 1}")
        checked.append([int(i) for i in p])
    return checked


def _generate_ids(model: WordPredictor, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                  temperature: float, top_k: Optional[int], top_p: Optional[float], eos_id: Optional[int],
                  pad_id: int, generator: Optional[torch.Generator], use_cache: bool,
                  suppress_ids: Sequence[int]) -> list[list[int]]:
    was_training = model.training
    model.eval()
    device = model.token_embedding.weight.device
    block = model.config.block_size
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    n = int(lengths.max())
    tokens = torch.full((len(prompts), n + max_new_tokens), pad_id, dtype=torch.long, device=device)  # (B, N)
    for row, p in enumerate(prompts):
        tokens[row, n - len(p) : n] = torch.as_tensor(list(p), dtype=torch.long, device=device)
    pads = n - lengths  # (B,) left padding per row

    start = max(0, n - block)  # first column the model sees
    cache = None
    fed = start  # columns already in the cache
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    produced = 0
    for _ in range(max_new_tokens):
        if n - start > block:  # window full: slide to the most recent block_size // 2 tokens
            start = n - max(1, block // 2)
            cache = None
        if use_cache and cache is None:
            cache, fed = model.new_cache(len(prompts)), start
        first = fed if use_cache else start
        cols = torch.arange(first, n, device=device)  # columns fed now (T,)
        real_pad = (pads - start).clamp(min=0)  # padding inside the window, per row (B,)
        positions = (cols[None, :] - start - real_pad[:, None]).clamp(min=0)  # (B, T)
        padding_mask = None
        if bool((pads > start).any()):
            padding_mask = torch.arange(start, n, device=device)[None, :] >= pads[:, None]  # (B, S)
        logits = model(tokens[:, first:n], cache=cache if use_cache else None, positions=positions,
                       key_padding_mask=padding_mask)
        fed = n
        nxt = next_token(suppress(logits[:, -1], suppress_ids), temperature=temperature, top_k=top_k, top_p=top_p,
                         generator=generator)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens[:, n] = nxt
        n += 1
        produced += 1
        if eos_id is not None:
            done |= nxt == eos_id
            if bool(done.all()):
                break
    model.train(was_training)
    out: list[list[int]] = []
    for row in tokens[:, n - produced : n].tolist():
        ids: list[int] = []
        for tok in row:
            ids.append(tok)
            if eos_id is not None and tok == eos_id:
                break
        out.append(ids)
    return out


def require_tokenizer(tokenizer: Optional[Tokenizer]) -> Tokenizer:
    """``tokenizer``, or one line saying what to do when there is none (GPT-2 loaded ``with_tokenizer=False``)."""
    if tokenizer is None:
        raise WordformerError("this model has no tokenizer, so it cannot read text (was it loaded with "
                              "with_tokenizer=False?): give token ids to wordformer.generate_ids, or load it with "
                              "its tokenizer")
    return tokenizer


def encode_prompt(tokenizer: Tokenizer, prompt: str, *, append_eos: Optional[bool] = None,
                  warn_unknown: bool = True) -> list[int]:
    """Token ids of a user prompt, refusing prompts the model cannot read.

    ``append_eos`` ends the prompt with ``<eos>``; None means as the model was trained (``tokenizer.pairs``,
    set from the checkpoint). Words (or characters) the vocabulary lacks become ``<unk>``: with ``warn_unknown``
    a warning names them; a prompt of nothing else is refused. Empty means "encodes to no tokens": for char and
    BPE models whitespace such as "\\n" is text.
    """
    tokenizer = require_tokenizer(tokenizer)
    ids = tokenizer.encode(prompt) if prompt else []
    if not ids:
        if not prompt.strip():  # "" always; whitespace only where the tokenizer drops it (word)
            raise WordformerError("the prompt is empty: give some text, e.g. --prompt \"the\"")
        raise WordformerError(f"the prompt {prompt!r} has no tokens the tokenizer can read")
    unk = tokenizer.unk_id
    if unk is not None and all(i == unk for i in ids):
        raise WordformerError(
            f"every token of the prompt {prompt!r} is unknown to the model's vocabulary; "
            "use words from the training text"
        )
    if warn_unknown and unk is not None and unk in ids:
        unknown = tokenizer.unknown(prompt)
        what = "characters" if tokenizer.kind == "char" else "words"
        logger.warning("prompt %s the model does not know, read as <unk>: %s", what,
                       ", ".join(repr(u) for u in unknown) or "?")
    return ids + [tokenizer.eos_id] if appends_eos(tokenizer, append_eos) else ids


def appends_eos(tokenizer: Tokenizer, append_eos: Optional[bool]) -> bool:
    """Whether a prompt ends with ``<eos>``: as asked, or (None) as the model was trained (``tokenizer.pairs``)."""
    return bool(tokenizer.pairs) if append_eos is None else bool(append_eos)


def echo_head(tokenizer: Tokenizer, prompt_ids: Sequence[int]) -> str:
    """The prompt as the model read it: its tokens decoded, so a word model's lowercasing and ``<unk>`` show.

    A prompt that ends with ``<eos>`` (a pairs model's question) shows it as ``" <eos> "``: the answer follows.
    """
    ids = [int(i) for i in prompt_ids]
    if ids and ids[-1] == tokenizer.eos_id:
        return (tokenizer.decode(ids[:-1]) + " " + tokenizer.id_to_token(ids[-1])).lstrip() + " "
    return tokenizer.decode(ids)


def echo_separator(tokenizer: Tokenizer, prompt_ids: Sequence[int], first_new: Optional[int]) -> str:
    """What stands between :func:`echo_head` and the continuation's text: the tokenizer's own joint.

    A word tokenizer puts a space between words but none before ``.`` or ``,`` ("the set." not "the set .");
    char and BPE text is joined as it is. Decided by the prompt's last token and the first new one.
    """
    if first_new is None or not prompt_ids or int(prompt_ids[-1]) == tokenizer.eos_id:
        return ""
    last = int(prompt_ids[-1])
    alone, first, both = tokenizer.decode([last]), tokenizer.decode([first_new]), tokenizer.decode([last, first_new])
    if len(both) >= len(alone) + len(first) and both.startswith(alone) and both.endswith(first):
        return both[len(alone):len(both) - len(first)]
    return ""


def echo_text(tokenizer: Tokenizer, prompt_ids: Sequence[int], new_ids: Sequence[int]) -> str:
    """Prompt and continuation in one line, as ``wordformer generate`` prints it (and ``generate(echo=True)``
    returns): the prompt as the model read it, then the generated text, joined as the tokenizer joins tokens."""
    new = [int(i) for i in new_ids]
    return (echo_head(tokenizer, prompt_ids) + echo_separator(tokenizer, prompt_ids, new[0] if new else None)
            + tokenizer.decode(new))


def generate(
    model: WordPredictor,
    tokenizer: Tokenizer,
    prompt: Union[str, Sequence[int]],
    *,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    seed: Optional[int] = None,
    append_eos: Optional[bool] = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
    echo: bool = False,
) -> str:
    """Continue ``prompt`` and return the generated text (without the prompt and the final ``<eos>``).

    ``prompt`` is text or token ids. ``append_eos`` ends the prompt with ``<eos>``; None means as the model
    was trained: on for models trained with ``--pairs``, which answer what follows ``<eos>``. ``echo=True``
    returns the whole line ``wordformer generate`` prints instead
    (:func:`echo_text`): the prompt as the model read it, then the continuation.
    """
    tokenizer = require_tokenizer(tokenizer)
    if isinstance(prompt, str):
        ids = encode_prompt(tokenizer, prompt, append_eos=append_eos)
    else:
        ids = _checked_prompts([prompt], tokenizer.vocab_size)[0]
        ids = ids + [tokenizer.eos_id] if appends_eos(tokenizer, append_eos) else ids
    new = generate_ids(
        model, [ids], max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        eos_id=tokenizer.eos_id if stop_at_eos else None, pad_id=tokenizer.pad_id, seed=seed, use_cache=use_cache,
        suppress_ids=never_generated(tokenizer),
    )[0]
    if stop_at_eos and new and new[-1] == tokenizer.eos_id:
        new = new[:-1]
    return echo_text(tokenizer, ids, new) if echo else tokenizer.decode(new)


@torch.no_grad()
def next_token_probabilities(model: WordPredictor, ids: Sequence[int], suppress_ids: Sequence[int] = ()) -> Tensor:
    """Softmax over the vocabulary for the token after ``ids`` (the last ``block_size`` are used).

    ``suppress_ids`` get probability 0 and the rest is renormalised, as in generation.
    """
    was_training = model.training
    model.eval()
    device = model.token_embedding.weight.device
    window = list(ids)[-model.config.block_size :]
    logits = model(torch.tensor([window], dtype=torch.long, device=device))[0, -1]  # (V,)
    model.train(was_training)
    return F.softmax(suppress(logits.float(), suppress_ids), dim=-1)


def predict_next(
    model: WordPredictor, tokenizer: Tokenizer, prompt: str, k: int = 5, *, append_eos: Optional[bool] = None
) -> list[tuple[str, float]]:
    """The word predictor: the ``k`` most likely next tokens and their probabilities, most likely first.

    Tokens are shown as their decoded text (BPE ``" the"``, not the byte-level entry ``"Ġthe"``); a BPE piece
    that holds only part of a character reads as its bytes (``"\\xe2\\x82"``), never the replacement character
    (:func:`wordformer.token_display.token_text`); specials read ``<eos>``, ``<unk>``. ``<pad>`` is never offered
    (see :func:`never_generated`). ``append_eos``: as in :func:`generate` (None: as the model was trained).
    """
    check_int("k", k)
    tokenizer = require_tokenizer(tokenizer)
    banned = never_generated(tokenizer)
    probs = next_token_probabilities(model, encode_prompt(tokenizer, prompt, append_eos=append_eos), banned)
    top = top_k_allowed(probs, k, banned)
    return [(token_text(tokenizer, int(i)), float(p)) for p, i in zip(top.values, top.indices)]
