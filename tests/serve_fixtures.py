"""Fixtures for the server's tests: tiny trained checkpoints and a live server on a free loopback port.

Use in a test module::

    from serve_fixtures import live_server, serve_models, start_server  # noqa: F401  (fixtures)

* ``serve_models`` (session): ``{"word", "char", "bpe", "pairs"}`` -> checkpoint path, each a real
  ``wordformer train`` run (12 steps, ``d_model`` 16, one layer) with its logs beside it; ``pairs`` is the
  chapter's toy prompt/answer model (``--pairs``).
* ``live_server`` (session): all four served without a key by uvicorn in a thread of the test process.
* ``start_server(checkpoints, **settings)``: a context manager for a server with other settings.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from conftest import SMALL_TEXT, TINY_TRAIN, TOY_PAIRS

KINDS = ("word", "char", "bpe", "pairs")


@dataclass
class RunningServer:
    """A server started by the tests: where it listens and its parts (same process)."""

    base_url: str  # http://127.0.0.1:PORT
    api_base: str  # base_url + "/v1", what the openai client takes as base_url
    app: Any
    server: Any  # the uvicorn.Server
    thread: threading.Thread
    ids: dict[str, str]  # kind (the dict key given to start_server, or the path) -> model id

    @property
    def registry(self) -> Any:
        return self.app.state.registry

    @property
    def engine(self) -> Any:
        return self.app.state.engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(root: Path, kind: str) -> Path:
    from wordformer.cli import main

    out = root / kind
    if kind == "pairs":
        data = root / "toy.tsv"
        data.write_text(TOY_PAIRS, encoding="utf-8")
        extra = ["--pairs", "--lr", "0.02", "--max-steps", "60", "--eval-interval", "30"]
    else:
        data = root / "small.txt"
        data.write_text(SMALL_TEXT, encoding="utf-8")
        extra = ["--tokenizer", kind] + (["--bpe-vocab-size", "300"] if kind == "bpe" else [])
    code = main(["train", "--data", str(data), "--out", str(out), "--cache-dir", str(root / "cache"), *TINY_TRAIN,
                 *extra])
    assert code == 0, f"training the {kind} test model failed"
    return out / "best.ckpt"


@pytest.fixture(scope="session")
def serve_models(tmp_path_factory, trained_run) -> dict[str, Path]:
    """Tiny checkpoints of every tokenizer, plus a pairs model; ids are ``<kind>/best``."""
    root = tmp_path_factory.mktemp("serve_models")
    shutil.copytree(trained_run, root / "word")  # the suite's shared word-level run, under a telling folder name
    paths = {"word": root / "word" / "best.ckpt"}
    for kind in ("char", "bpe", "pairs"):
        paths[kind] = _train(root, kind)
    return paths


@contextmanager
def start_server(checkpoints: Sequence[Path] | dict[str, Path], **settings: Any) -> Iterator[RunningServer]:
    """Serve ``checkpoints`` with ``ServeSettings(**settings)`` on a free loopback port until the block ends."""
    import uvicorn

    from wordformer.serve.app import create_app
    from wordformer.serve.registry import ModelRegistry
    from wordformer.serve.settings import ServeSettings

    named = checkpoints if isinstance(checkpoints, dict) else {str(p): Path(p) for p in checkpoints}
    registry = ModelRegistry.load(list(named.values()))
    ids = dict(zip(named, registry.ids))
    app = create_app(registry, ServeSettings(**settings))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    try:
        yield RunningServer(base, base + "/v1", app, server, thread, ids)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="session")
def live_server(serve_models) -> Iterator[RunningServer]:
    """Every test model served without a key (ids in ``live_server.ids``: word, char, bpe, pairs).

    ``max_tokens`` is 4096, so a long generation (a greedy char model never says ``<eos>``) lasts seconds.
    """
    with start_server(serve_models, max_tokens=4096) as running:
        yield running
