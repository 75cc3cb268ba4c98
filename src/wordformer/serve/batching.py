"""The model thread: every request's decoding, batched, and every other use of a model, in one thread.

Why one thread: the models are shared by all requests, and some uses change a model for a moment (the
page's explain and ablation install hooks), so no two uses may overlap; one thread that owns the models
makes that true by construction and keeps the event loop free for the network. Why batching: on a CPU
a forward pass for one token costs almost the same for 1 row as for 16 (the time goes to per-operation
overhead at these sizes), so rows decoded together share that cost.

Requests do not wait for each other: each step of the loop gives every active row one token
(:class:`~wordformer.decoding.ContinuousDecoder`), a request that arrives joins the batch at the next
step, and a row whose client left is dropped before the next step. Other work (:meth:`Engine.run`) runs
between two steps. Tokens reach the requests through :class:`RowSink` objects, whose callbacks run on the
model thread and hand the results to the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from ..decoding import ContinuousDecoder, DecodeRow, StepToken
from ..errors import WordformerError
from ..generation import never_generated
from .errors import ApiError
from .registry import ServedModel

logger = logging.getLogger("wordformer.serve")


class Mailbox:
    """Hands events from the model thread to one event loop, waking the loop once per batch of events.

    A step of 16 rows produces 16 events at once; ``call_soon_threadsafe`` for each would wake the loop (a write
    to its self-pipe) 16 times. Events are queued here and delivered by one callback.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: list[tuple["asyncio.Queue[Any]", Any]] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, queue: "asyncio.Queue[Any]", event: Any) -> None:
        """Put ``event`` on ``queue`` (an asyncio queue of this mailbox's loop), from any thread."""
        with self._lock:
            self._items.append((queue, event))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed (server stopping): nobody is listening
            pass

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        for queue, event in items:
            queue.put_nowait(event)


class RowSink:
    """Where one row's tokens go. Callbacks run on the model thread; subclasses pass results on.

    ``cancelled`` may be set from any thread (a client left): the model thread drops the row before its
    next step.
    """

    def __init__(self) -> None:
        self.cancelled = False

    def on_token(self, token: StepToken) -> bool:
        """A new token; return True to stop this row here (a stop string was completed)."""
        return False

    def on_finish(self, row: DecodeRow) -> None:
        """The row ended (``row.finish_reason``: "stop", "length" or "cancelled")."""

    def on_error(self, message: str) -> None:
        """Decoding failed (a bug); the row is gone."""


@dataclass
class RowRequest:
    """One row to decode: prompt ids and options, validated by the caller."""

    prompt: list[int]
    max_new_tokens: int
    sink: RowSink
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    logprobs: Optional[int] = None


@dataclass
class _Submit:
    model: ServedModel
    rows: list[RowRequest]


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass
class EngineStats:
    """Counters that show batching at work (read by tests, benchmarks and /health)."""

    steps: int = 0  # loop iterations that decoded something
    forwards: int = 0  # model forward passes for decoding
    batched_steps: int = 0  # batch steps in which one forward decoded two or more rows
    largest_batch: int = 0  # most rows in one forward
    tokens: int = 0  # tokens generated
    rows: int = 0  # rows started
    calls: int = 0  # Engine.run calls served

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Engine:
    """Owns the models' thread; requests submit rows and await their tokens through sinks."""

    def __init__(self, *, max_rows: int = 256, gather_s: float = 0.0, threads: Optional[int] = None) -> None:
        self.max_rows = max_rows
        self.gather_s = gather_s  # an idle engine waits this long after the first request for others to join
        # torch threads for batched steps: all cores but one, which the event loop (HTTP, JSON, streaming) needs;
        # measured on 2 cores: 16 streaming clients got 5,000 tokens/s with 2 threads and 6,600-9,300 with 1
        self.threads = threads or max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1))
        self.stats = EngineStats()
        self._inbox: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._decoders: dict[str, ContinuousDecoder] = {}
        self._sinks: dict[int, tuple[DecodeRow, RowSink]] = {}  # id(row) -> (row, sink)
        self._pending = 0  # rows submitted but not finished (read under the lock)
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._threads_now = 0

    # ------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="wordformer-model", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish: rows still decoding end as "cancelled"; calls not yet run fail."""
        if self._thread is None:
            return
        self._stopping = True
        self._inbox.put(None)
        self._thread.join(timeout)
        self._thread = None

    @property
    def active_rows(self) -> int:
        with self._lock:
            return self._pending

    # ------------------------------------------------------------------------------- API for requests

    def submit(self, model: ServedModel, rows: Sequence[RowRequest]) -> None:
        """Queue rows of one request; a full queue is a 429 (nothing is queued then)."""
        if self._thread is None or self._stopping:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        with self._lock:
            if self._pending + len(rows) > self.max_rows:
                raise ApiError(429, f"the server is busy: {self._pending} sequences are being decoded, the limit is "
                                    f"{self.max_rows}; retry in a moment", code="queue_full")
            self._pending += len(rows)
        self._inbox.put(_Submit(model, list(rows)))

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the model thread between two decoding steps and return its result."""
        if self._thread is None or self._stopping:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        call = _Call(fn, args)
        self._inbox.put(call)
        return await asyncio.wrap_future(call.future)

    # ------------------------------------------------------------------------------- the thread

    def _loop(self) -> None:
        torch.set_grad_enabled(False)  # this thread only decodes and inspects
        while True:
            busy = any(len(d) for d in self._decoders.values())
            items = self._drain(block=not busy)
            if items is None:
                break
            for item in items:
                if isinstance(item, _Call):
                    self._call(item)
                else:
                    self._add(item)
            self._drop_cancelled()
            for model_id, decoder in list(self._decoders.items()):
                if len(decoder):
                    self._step(model_id, decoder)
        self._shutdown()

    def _drain(self, *, block: bool) -> Optional[list[Any]]:
        """Everything in the inbox; when idle, wait for the first item and then ``gather_s`` for companions."""
        items: list[Any] = []
        if block:
            first = self._inbox.get()
            if first is None:
                return None
            items.append(first)
            if isinstance(first, _Submit) and self.gather_s > 0:
                time.sleep(self.gather_s)  # requests sent together arrive within a few ms: let them share step 1
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return None
            items.append(item)
        return items

    def _call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        self.stats.calls += 1
        try:
            call.future.set_result(call.fn(*call.args))
        except BaseException as exc:  # handed to the awaiting request, which turns it into an error answer
            call.future.set_exception(exc)

    def _decoder(self, model: ServedModel) -> ContinuousDecoder:
        decoder = self._decoders.get(model.id)
        if decoder is None:
            tok = model.loaded.tokenizer
            decoder = ContinuousDecoder(model.loaded.model, eos_id=tok.eos_id, pad_id=tok.pad_id,
                                        suppress_ids=never_generated(tok))
            self._decoders[model.id] = decoder
        return decoder

    def _add(self, submit: _Submit) -> None:
        decoder = self._decoder(submit.model)
        for req in submit.rows:
            if req.sink.cancelled:
                self._finished_early(req.sink, "cancelled")
                continue
            try:
                row = decoder.add(req.prompt, max_new_tokens=req.max_new_tokens, temperature=req.temperature,
                                  top_k=req.top_k, top_p=req.top_p, seed=req.seed, logprobs=req.logprobs)
            except WordformerError as exc:  # validated before, so a bug if it happens; tell the client anyway
                self._release(1)
                req.sink.on_error(str(exc))
                continue
            self.stats.rows += 1
            if row.finished:  # max_new_tokens 0
                self._release(1)
                req.sink.on_finish(row)
            else:
                self._sinks[id(row)] = (row, req.sink)

    def _finished_early(self, sink: RowSink, reason: str) -> None:
        self._release(1)
        row = DecodeRow(ids=[], max_new_tokens=0, finish_reason=reason)
        sink.on_finish(row)

    def _release(self, n: int) -> None:
        with self._lock:
            self._pending -= n

    def _drop_cancelled(self) -> None:
        for key, (row, sink) in list(self._sinks.items()):
            if sink.cancelled and not row.finished:
                row.finish_reason = "cancelled"
                self._end(key)

    def _end(self, key: int) -> None:
        row, sink = self._sinks.pop(key)
        self._release(1)
        try:
            sink.on_finish(row)
        except Exception:  # pragma: no cover - a sink bug must not stop the thread
            logger.exception("a row's finish callback failed")

    def _step(self, model_id: str, decoder: ContinuousDecoder) -> None:
        rows = len(decoder)
        # one row is a chain of tiny operations: extra threads only add synchronisation (as generate_ids does)
        threads = 1 if rows == 1 else self.threads
        if threads != self._threads_now:  # changing the count reconfigures the thread pool: only when it changes
            torch.set_num_threads(threads)
            self._threads_now = threads
        before = (decoder.forwards, decoder.batched_steps)
        try:
            tokens = decoder.step()
        except Exception as exc:  # a bug: fail this model's rows, keep serving the others
            logger.exception("decoding failed for model %s", model_id)
            message = str(exc) if isinstance(exc, WordformerError) else "internal error while decoding"
            for row in decoder.active:
                entry = self._sinks.pop(id(row), None)
                if entry is not None:
                    self._release(1)
                    entry[1].on_error(message)
            del self._decoders[model_id]
            return
        self.stats.steps += 1
        self.stats.forwards += decoder.forwards - before[0]
        self.stats.batched_steps += decoder.batched_steps - before[1]
        self.stats.largest_batch = max(self.stats.largest_batch, decoder.largest_batch)
        self.stats.tokens += len(tokens)
        for item in tokens:
            entry = self._sinks.get(id(item.row))
            if entry is None:
                continue
            row, sink = entry
            try:
                stop = sink.on_token(item)
            except Exception:  # pragma: no cover - a sink bug: end this row only
                logger.exception("a row's token callback failed")
                stop = True
            if stop and not row.finished:
                row.finish_reason = "stop"
            if row.finished:
                decoder.cancel(row)  # already finished: a no-op; frees its place at the next step
                self._end(id(row))

    def _shutdown(self) -> None:
        for key, (row, _sink) in list(self._sinks.items()):
            if not row.finished:
                row.finish_reason = "cancelled"
            self._end(key)
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Call):
                item.future.set_exception(ApiError(503, "the server is shutting down", code="shutting_down"))
            elif isinstance(item, _Submit):
                for req in item.rows:
                    self._finished_early(req.sink, "cancelled")
