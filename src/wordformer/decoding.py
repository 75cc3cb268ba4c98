"""Continuous batched decoding: many prompts share each forward pass, and rows come and go between steps.

:func:`wordformer.generation.generate_ids` decodes a fixed batch from start to end. A server needs more: a
request that arrives while others are being decoded should join them at the next step rather than wait,
a client that leaves should free its row at once, and each row has its own sampling options and seed.
:class:`ContinuousDecoder` does this one token at a time (:meth:`~ContinuousDecoder.step`), and every row
sees exactly what :func:`generate_ids` would show it alone: the same tokens at the same positions, with
the same context policy (the last ``block_size`` tokens of the prompt; when the window fills, restart from
the most recent ``block_size // 2`` tokens, recomputing their keys and values), and the same sampling
(:func:`~wordformer.generation.next_token` on the row's own logits with the row's own generator). A row
decoded alone performs the very same operations as ``generate_ids``, so greedy and seeded outputs match it
token for token; in a batch they match up to float rounding.

How the rows share one KV cache: each row has a slot (a batch index) in preallocated storage, its keys and
values right-aligned (the newest token of every row in the same column), shorter rows left-padded, and a
key-padding mask hides the padding. A joining row, or one whose window slides, is first run on its window
(a prefill, which also gives its next token), then copied into a free slot; a row that finishes or is
dropped frees its slot by moving the last row into it. So a row coming or going copies one row, never the
batch. Columns that are padding for every row are cut off the left when the cache is full or a quarter of
it is waste. At most ``max_batch`` rows decode at once (by default as many as 1 GiB of keys and values holds,
at most 64); more wait for a free slot.

Shape legend: B = rows, L = cache columns, H = heads, D = head size, W = window tokens, V = vocabulary.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import KVCache
from .errors import WordformerError
from .generation import check_sampling, filter_logits, suppress
from .model import WordPredictor

__all__ = ["ContinuousDecoder", "DecodeRow", "StepToken", "inverse_cdf_sample"]


KV_BUDGET_BYTES = 1 << 30
"""Most bytes of keys and values one decoder keeps for its batch: rows beyond wait for a free place."""


def kv_bytes_per_row(model: WordPredictor) -> int:
    """Bytes of keys and values one row holds at full context (every layer, keys and values)."""
    c = model.config
    return 2 * c.num_layers * c.block_size * c.d_model * model.token_embedding.weight.element_size()


def inverse_cdf_sample(probs: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """One token per row of (B, V) ``probs`` (rows sum to about 1): the first entry whose running sum passes a
    uniform draw. A token of probability 0 is never chosen, even when rounding leaves the total below the draw."""
    cdf = probs.cumsum(dim=-1)  # (B, V)
    u = torch.rand(probs.size(0), 1, dtype=cdf.dtype, device=cdf.device, generator=generator) * cdf[:, -1:]  # (B, 1)
    picked = torch.searchsorted(cdf, u, right=True).squeeze(-1)  # (B,)
    last = probs.size(-1) - 1 - (probs > 0).flip(-1).int().argmax(dim=-1)  # (B,) the last token that may be drawn
    return torch.minimum(picked, last)


@dataclass(eq=False)
class DecodeRow:
    """One sequence being decoded: its tokens so far, its options and where it stands.

    ``ids`` holds the prompt and every generated token; ``start`` is the first id the model sees (the
    window); ``cached`` counts this row's tokens in the batch KV cache (0 until its prefill).
    """

    ids: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    logprobs: Optional[int] = None  # report the chosen token's log-probability and this many top entries
    tag: Any = None  # the caller's handle (a request and choice)
    prompt_length: int = 0
    start: int = 0
    cached: int = 0
    generated: int = 0
    finish_reason: Optional[str] = None  # "stop" at <eos>, "length" at max_new_tokens, "cancelled"
    generator: Optional[torch.Generator] = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def new_ids(self) -> list[int]:
        return self.ids[self.prompt_length:]


@dataclass
class StepToken:
    """One row's new token from a step, with its log-probability and the top alternatives when asked."""

    row: DecodeRow
    token: int
    logprob: Optional[float] = None
    top: list[tuple[int, float]] = field(default_factory=list)  # (id, log-probability), most likely first


class ContinuousDecoder:
    """Decode any number of rows of one model together, one token per row per :meth:`step`.

    Not thread-safe: one thread owns a decoder (the server's model thread).
    """

    def __init__(self, model: WordPredictor, *, eos_id: Optional[int], pad_id: int = 0,
                 suppress_ids: Sequence[int] = (), max_batch: Optional[int] = None) -> None:
        vocab = model.config.vocab_size
        for name, value in (("pad_id", pad_id), ("eos_id", eos_id)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                      or not 0 <= value < vocab):
                raise WordformerError(f"{name}={value!r} must be a token id in 0..{vocab - 1}")
        self.model = model
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.suppress_ids = sorted({int(i) for i in suppress_ids})
        if any(not 0 <= i < vocab for i in self.suppress_ids) or len(self.suppress_ids) >= vocab:
            raise WordformerError(f"suppress_ids={self.suppress_ids} must be fewer than {vocab} ids of the vocabulary")
        self.block = model.config.block_size
        if max_batch is None:
            max_batch = max(1, min(64, KV_BUDGET_BYTES // max(1, kv_bytes_per_row(model))))
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise WordformerError(f"max_batch={max_batch!r} must be an integer >= 1")
        self.max_batch = max_batch
        self._rows: list[DecodeRow] = []  # rows in the cache: row i lives in slot i of the storage
        self._joining: list[DecodeRow] = []  # rows waiting for their prefill (and for room in the batch)
        self._keys: list[Tensor] = []  # per layer (slots, H, block_size, D), rows right-aligned at column _length
        self._values: list[Tensor] = []
        self._length = 0  # cache columns in use
        self._cache: Optional[KVCache] = None  # its layers are views of the first len(_rows) slots
        self.forwards = 0  # forward passes run (prefills and batch steps)
        self.batched_steps = 0  # batch steps that decoded more than one row at once
        self.largest_batch = 0  # most rows that shared one batch step

    # ------------------------------------------------------------------------------------------- rows

    def add(self, prompt: Sequence[int], *, max_new_tokens: int, temperature: float = 1.0,
            top_k: Optional[int] = None, top_p: Optional[float] = None, seed: Optional[int] = None,
            logprobs: Optional[int] = None, tag: Any = None) -> DecodeRow:
        """Queue a prompt (token ids); it joins the batch at the next :meth:`step`."""
        check_sampling(temperature, top_k, top_p, max_new_tokens)
        vocab = self.model.config.vocab_size
        if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence) or not prompt:
            raise WordformerError("a prompt is a non-empty list of token ids")
        for i in prompt:
            if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < vocab:
                raise WordformerError(f"token id {i!r} is not in the vocabulary 0..{vocab - 1}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise WordformerError(f"seed={seed!r} must be an integer >= 0 (or None)")
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0):
            raise WordformerError(f"logprobs={logprobs!r} must be an integer >= 0 (or None)")
        device = self.model.token_embedding.weight.device
        ids = [int(i) for i in prompt]
        row = DecodeRow(ids=ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, logprobs=logprobs, tag=tag, prompt_length=len(ids),
                        start=max(0, len(ids) - self.block))
        if seed is not None:
            row.generator = torch.Generator(device=device).manual_seed(int(seed))
        if max_new_tokens == 0:
            row.finish_reason = "length"
        else:
            self._joining.append(row)
        return row

    def cancel(self, row: DecodeRow) -> None:
        """Stop a row now (its client left); its place in the batch is freed at the next step."""
        if not row.finished:
            row.finish_reason = "cancelled"

    @property
    def active(self) -> list[DecodeRow]:
        """Rows still decoding (in the batch or about to join it)."""
        return [r for r in self._rows + self._joining if not r.finished]

    def __len__(self) -> int:
        return len(self.active)

    @property
    def cache_length(self) -> int:
        """Columns in the batch KV cache (the longest row's cached tokens plus the others' padding)."""
        return self._length

    # ------------------------------------------------------------------------------------------- step

    def step(self) -> list[StepToken]:
        """One new token for every active row; rows that reach ``<eos>`` or their limit finish.

        Runs in inference mode (no autograd bookkeeping: a tenth of a tiny model's step) and in eval mode; a model
        left in training mode is put back after the step (checked first: switching walks every module).
        """
        was_training = self.model.training
        if was_training:
            self.model.eval()
        try:
            with torch.inference_mode():
                return self._step()
        finally:
            if was_training:
                self.model.train(True)

    def _step(self) -> list[StepToken]:
        self._drop([r for r in self._rows if r.finished])
        self._joining = [r for r in self._joining if not r.finished]
        # a row whose next token would overflow the window slides: it restarts from its latest block // 2
        # tokens, recomputed by a prefill (as generate_ids does), so it leaves the batch cache for now
        sliding = [r for r in self._rows if len(r.ids) - r.start > self.block]
        if sliding:
            for r in sliding:
                r.start = len(r.ids) - max(1, self.block // 2)
            self._drop(sliding)
        room = self.max_batch - len(self._rows) - len(sliding)
        joining, self._joining = self._joining[:max(0, room)], self._joining[max(0, room):]
        prefill = sliding + joining
        if not self._rows and not prefill:
            return []

        logits: dict[int, Tensor] = {}  # id(row) -> (V,)
        steady = list(self._rows)
        if steady:
            for row, row_logits in zip(steady, self._decode_steady()):
                logits[id(row)] = row_logits
        by_width: dict[int, list[DecodeRow]] = {}
        for r in prefill:
            by_width.setdefault(len(r.ids) - r.start, []).append(r)
        for width, group in by_width.items():
            group_logits, kv = self._prefill(group, width)
            for i, r in enumerate(group):
                logits[id(r)] = group_logits[i]
                self._insert(r, [(k[i], v[i]) for k, v in kv])
        self._views()

        order = steady + prefill
        return self._sample(order, torch.stack([logits[id(r)] for r in order]))  # (B, V)

    def _decode_steady(self) -> Tensor:
        """Feed each cached row its newest token in one batched forward; (B, V) logits."""
        rows = self._rows
        device = self.model.token_embedding.weight.device
        if self._length + 1 > self.block:
            self._compact(force=True)
        cache = self._cache
        assert cache is not None  # rows in the batch imply a cache
        length = self._length
        cached = torch.tensor([r.cached for r in rows], device=device)  # (B,)
        tokens = torch.tensor([[r.ids[-1]] for r in rows], dtype=torch.long, device=device)  # (B, 1)
        positions = cached[:, None]  # (B, 1): each row's position in its own window
        padding_mask = None
        if any(r.cached < length for r in rows):
            # column j holds row i's tokens from L - cached_i on; the new token goes to column L
            padding_mask = torch.arange(length + 1, device=device)[None, :] >= (length - cached)[:, None]  # (B, L+1)
        out = self.model(tokens, cache=cache, positions=positions, key_padding_mask=padding_mask)  # (B, 1, V)
        self.forwards += 1
        if len(rows) > 1:
            self.batched_steps += 1
        self.largest_batch = max(self.largest_batch, len(rows))
        for r in rows:
            r.cached += 1
        self._length = length + 1
        return out[:, -1]

    def _prefill(self, rows: list[DecodeRow], width: int) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Run rows whose windows have ``width`` tokens, without padding: (G, V) logits, per-layer (G, H, W, D) k, v."""
        device = self.model.token_embedding.weight.device
        tokens = torch.tensor([r.ids[r.start:] for r in rows], dtype=torch.long, device=device)  # (G, W)
        positions = torch.arange(width, device=device)[None, :].expand(len(rows), width)  # (G, W)
        cache = self.model.new_cache(len(rows))
        out = self.model(tokens, cache=cache, positions=positions)  # (G, W, V)
        self.forwards += 1
        self.largest_batch = max(self.largest_batch, len(rows))
        for r in rows:
            r.cached = width
        kv = [(layer.keys[:, :, :width], layer.values[:, :, :width]) for layer in cache.layers]
        return out[:, -1], kv

    # ------------------------------------------------------------------------------------------- cache surgery

    def _views(self) -> None:
        """Point the KV cache's layers at the slots in use (views: appending writes into the storage)."""
        b = len(self._rows)
        if b == 0:
            self._cache, self._length = None, 0
            return
        if self._cache is None:
            self._cache = self.model.new_cache(1, max_len=1)  # the object only: its layers get views below
        for layer, keys, values in zip(self._cache.layers, self._keys, self._values):
            layer.keys, layer.values, layer.length = keys[:b], values[:b], self._length

    def _drop(self, gone: list[DecodeRow]) -> None:
        """Free the slots of ``gone``: the last row moves into each freed slot (one row's copy, not the batch's)."""
        if not gone:
            return
        leaving = {id(r) for r in gone}
        length, i = self._length, 0
        while i < len(self._rows):
            if id(self._rows[i]) not in leaving:
                i += 1
                continue
            last = len(self._rows) - 1
            if i != last:
                for t in self._keys + self._values:
                    t[i, :, :length] = t[last, :, :length]
                self._rows[i] = self._rows[last]
            self._rows.pop()
        self._compact()
        self._views()

    def _compact(self, *, force: bool = False) -> None:
        """Cut columns that are padding for every row (the left ones): when full (``force``) or a quarter is waste,
        since every step attends over all the columns."""
        if not self._rows:
            self._length = 0
            return
        length = self._length
        shift = length - max(r.cached for r in self._rows)
        if shift <= 0 or (not force and 4 * shift < length):
            return
        for t in self._keys + self._values:
            t[:, :, : length - shift] = t[:, :, shift:length].clone()
        self._length = length - shift
        self._views()

    def _insert(self, row: DecodeRow, kv: list[tuple[Tensor, Tensor]]) -> None:
        """Put a prefilled row's keys and values (per layer (H, W, D)) into a free slot, right-aligned."""
        b, length, width = len(self._rows), self._length, row.cached
        if not self._keys or self._keys[0].size(0) <= b:  # more slots: double them (zeros: masked padding is finite)
            slots = max(4, 2 * b)
            grown_k, grown_v = [], []
            for li, (k, v) in enumerate(kv):
                shape = (slots, k.size(0), self.block, k.size(2))
                grown_k.append(torch.zeros(shape, dtype=k.dtype, device=k.device))
                grown_v.append(torch.zeros(shape, dtype=v.dtype, device=v.device))
                if b:
                    grown_k[li][:b, :, :length] = self._keys[li][:b, :, :length]
                    grown_v[li][:b, :, :length] = self._values[li][:b, :, :length]
            self._keys, self._values = grown_k, grown_v
        if width > length:  # the new row is longer than the batch: shift the others right
            for t in self._keys + self._values:
                t[:b, :, width - length : width] = t[:b, :, :length].clone()
            length = self._length = width
        for li, (k, v) in enumerate(kv):
            self._keys[li][b, :, length - width : length] = k
            self._values[li][b, :, length - width : length] = v
        self._rows.append(row)

    # ------------------------------------------------------------------------------------------- sampling

    def _sample(self, rows: list[DecodeRow], logits: Tensor) -> list[StepToken]:
        """Pick each row's next token from its (V,) logits with its own options, exactly as generate_ids would.

        :func:`~wordformer.generation.next_token`'s arithmetic, done for many rows at once: greedy rows take one
        argmax; sampled rows sharing top-k and top-p get their probabilities in one pass (each row's temperature
        divides its own logits, in float64 as there), then each seeded row draws with its own generator, so its
        draw is the one it would get alone; unseeded rows, which promise no particular draw, share one uniform
        number each through :func:`inverse_cdf_sample` (``torch.multinomial`` draws one exponential number per
        vocabulary entry: most of a sampled step's time at a few thousand tokens).
        """
        logits = suppress(logits, self.suppress_ids)  # (B, V)
        chosen: list[int] = [0] * len(rows)
        greedy = [i for i, r in enumerate(rows) if r.temperature <= 0]
        if greedy:
            picked = logits[greedy].argmax(dim=-1).tolist()
            for i, tok in zip(greedy, picked):
                chosen[i] = int(tok)
        groups: dict[tuple[Optional[int], Optional[float]], list[int]] = {}
        for i, r in enumerate(rows):
            if r.temperature > 0:
                groups.setdefault((r.top_k, r.top_p), []).append(i)
        for (top_k, top_p), members in groups.items():
            sub = logits[members].double()  # (G, V)
            temperature = torch.tensor([rows[i].temperature for i in members], dtype=torch.float64,
                                       device=sub.device)[:, None]  # (G, 1)
            scaled = (sub - sub.max(dim=-1, keepdim=True).values) / temperature
            probs = filter_logits(scaled, top_k=top_k, top_p=top_p).softmax(dim=-1)  # (G, V)
            shared = [j for j, i in enumerate(members) if rows[i].generator is None]
            for j, i in enumerate(members):
                if rows[i].generator is not None:
                    chosen[i] = int(torch.multinomial(probs[j : j + 1], 1, generator=rows[i].generator)[0, 0])
            if shared:
                for j, tok in zip(shared, inverse_cdf_sample(probs[shared]).tolist()):
                    chosen[members[j]] = int(tok)
        out: list[StepToken] = []
        wants = [i for i, r in enumerate(rows) if r.logprobs is not None]
        where = {i: j for j, i in enumerate(wants)}
        logp = F.log_softmax(logits[wants].float(), dim=-1) if wants else None  # (B', V)
        for i, r in enumerate(rows):
            tok = chosen[i]
            item = StepToken(r, tok)
            if logp is not None and i in where:
                row_logp = logp[where[i]]
                item.logprob = float(row_logp[tok])
                if r.logprobs:
                    allowed = r.logprobs if not self.suppress_ids else min(r.logprobs,
                                                                           row_logp.numel() - len(self.suppress_ids))
                    top = torch.topk(row_logp, allowed)
                    item.top = [(int(t), float(v)) for v, t in zip(top.values, top.indices)]
            r.ids.append(tok)
            r.generated += 1
            if self.eos_id is not None and tok == self.eos_id:
                r.finish_reason = "stop"
            elif r.generated >= r.max_new_tokens:
                r.finish_reason = "length"
            out.append(item)
        return out
