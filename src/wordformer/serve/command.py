"""``wordformer serve``: load checkpoints once, then serve the page and the OpenAI-compatible API until Ctrl-C.

Only argparse and the settings dataclass are imported here at module level, so ``wordformer --help`` does not
pay for FastAPI, uvicorn or torch. The port is bound before any model is loaded: a taken port is one line
at once, and nobody can take the port between the check and the start.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Optional

from ..errors import WordformerError
from .settings import API_KEY_ENV, DEFAULT_MAX_TOKENS, DEFAULT_PORT, ServeSettings

DEMO_CHECKPOINT = Path("runs/demo/best.ckpt")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``wordformer serve`` on the main parser's subcommands."""
    p = subparsers.add_parser(
        "serve",
        help="serve trained models: a page that shows how they work, and an OpenAI-compatible API",
        description="Load the checkpoints once and serve, until Ctrl-C, the page at / and the OpenAI-compatible "
                    "API at /v1 (completions, chat completions for --pairs models, the model list). Without "
                    f"--checkpoint it serves the demo's run ({DEMO_CHECKPOINT}).",
    )
    p.add_argument("--checkpoint", action="append", default=None, metavar="PATH",
                   help="a .ckpt or .safetensors file; repeat for several models (default: the demo's "
                        f"{DEMO_CHECKPOINT})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 opens the server to the network (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' on /v1/* (default: ${API_KEY_ENV} if set, else none)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                   help=f"most new tokens one choice may ask for (default: {DEFAULT_MAX_TOKENS})")
    p.add_argument("--cors-origin", action="append", default=None, metavar="ORIGIN",
                   help="let web pages from ORIGIN call the API (repeatable; default: CORS off)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser once the server is up")
    p.set_defaults(func=run)
    return p


def _checkpoints(given: Optional[list[str]]) -> list[str]:
    if given:
        return given
    if DEMO_CHECKPOINT.is_file():
        return [str(DEMO_CHECKPOINT)]
    raise WordformerError(f"no --checkpoint given and no demo run at {DEMO_CHECKPOINT}; run `make demo` first "
                          "(or give --checkpoint PATH)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a taken port or an unknown host is a :class:`WordformerError`."""
    if not 0 <= port <= 65535:
        raise WordformerError(f"--port {port} must lie in 0..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise WordformerError(f"--host {host!r} is not an address of this machine ({exc}); try 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse a port in TIME_WAIT
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise WordformerError(f"port {port} on {host} is already in use; choose another --port (or stop the "
                                  "program using it)") from None
        if exc.errno in (99, 49, 10049):  # EADDRNOTAVAIL: no interface has this address
            raise WordformerError(f"--host {host} is not an address of this machine; try 127.0.0.1") from None
        if exc.errno in (13, 10013):
            raise WordformerError(f"no permission to listen on port {port}; choose a port above 1023") from None
        raise WordformerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def run(args: argparse.Namespace) -> int:
    """``wordformer serve``: check options, bind, load, print the URLs, serve until Ctrl-C (exit 0)."""
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if args.max_tokens < 1:
        raise WordformerError(f"--max-tokens {args.max_tokens} must be an integer >= 1")
    settings = ServeSettings(api_key=api_key, max_tokens=args.max_tokens, cors_origins=tuple(args.cors_origin or ()))
    if not _is_loopback(args.host) and not settings.api_key:
        print(f"wordformer: warning: serving on {args.host} without --api-key: anyone who can reach this machine "
              "can use the models", file=sys.stderr)
    paths = _checkpoints(args.checkpoint)
    for path in map(Path, paths):  # the cheap checks before the port is opened; loading comes after binding
        if not path.expanduser().exists():
            raise WordformerError(f"checkpoint {path} does not exist; train one with `wordformer train --out DIR` "
                                  "(or `make demo`)")
        if path.expanduser().is_dir():
            hint = " (did you mean DIR/best.ckpt?)" if (path.expanduser() / "best.ckpt").exists() else ""
            raise WordformerError(f"checkpoint {path} is a folder, not a file{hint}")
    sock = bind(args.host, args.port)
    try:
        return _serve(args, settings, paths, sock)
    finally:
        sock.close()


def _serve(args: argparse.Namespace, settings: ServeSettings, paths: list[str], sock: socket.socket) -> int:
    import logging

    import uvicorn

    from .app import create_app
    from .registry import ModelRegistry

    registry = ModelRegistry.load(paths)
    port = sock.getsockname()[1]
    base = _url(args.host, port)
    verbose = bool(getattr(args, "verbose", False))
    config = uvicorn.Config(create_app(registry, settings), log_level="info" if verbose else "warning",
                            access_log=verbose, timeout_graceful_shutdown=3, lifespan="on")
    server = uvicorn.Server(config)
    print(f"wordformer serve: {len(registry)} model{'s' if len(registry) > 1 else ''}: {', '.join(registry.ids)}")
    print(f"  page: {base}/")
    print(f"  API:  {base}/v1   (OpenAI-compatible; schema at {base}/openapi.json)")
    print("Ctrl-C stops the server.", flush=True)
    if args.open:
        threading.Thread(target=open_when_up, args=(server, f"{base}/"), daemon=True).start()
    logging.getLogger("wordformer.serve").setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises the signal again: that is our exit
        pass
    print("wordformer serve: stopped", file=sys.stderr)
    return 0


def open_when_up(server: Any, url: str) -> None:
    """Open ``url`` in the default browser once uvicorn's ``server`` has started (gives up after 30 s)."""
    import time
    import webbrowser

    for _ in range(300):
        if server.started:
            webbrowser.open(url)
            return
        time.sleep(0.1)
