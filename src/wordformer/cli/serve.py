"""``wordformer serve``: load checkpoints once, then serve the page and the OpenAI-compatible API until Ctrl-C.

Only argparse and plain settings are imported when the parser is built, so ``wordformer --help`` does not pay
for FastAPI, uvicorn or torch.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from ..serve.server import DEMO_CHECKPOINT, base_url, bind, checkpoints_to_serve, is_loopback, make_server, open_when_up
from ..serve.settings import API_KEY_ENV, DEFAULT_MAX_TOKENS, DEFAULT_PORT, ServeSettings

def add_serve(p: argparse.ArgumentParser) -> None:
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


def run_serve(args: argparse.Namespace) -> int:
    """Check options, bind, load, print the URLs, serve until Ctrl-C (exit 0)."""
    from ..serve.registry import ModelRegistry

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    settings = ServeSettings(api_key=api_key, max_tokens=args.max_tokens, cors_origins=tuple(args.cors_origin or ()))
    if not is_loopback(args.host) and not settings.api_key:
        print(f"wordformer: warning: serving on {args.host} without --api-key: anyone who can reach this machine "
              "can use the models", file=sys.stderr)
    paths = checkpoints_to_serve(args.checkpoint)
    sock = bind(args.host, args.port)
    try:
        registry = ModelRegistry.load(paths)
        server = make_server(registry, settings, verbose=bool(args.verbose))
        base = base_url(args.host, sock.getsockname()[1])
        print(f"wordformer serve: {len(registry)} model{'s' if len(registry) > 1 else ''}: {', '.join(registry.ids)}")
        print(f"  page: {base}/")
        print(f"  API:  {base}/v1   (OpenAI-compatible; schema at {base}/openapi.json)")
        print("Ctrl-C stops the server.", flush=True)
        if args.open:
            threading.Thread(target=open_when_up, args=(server, f"{base}/"), daemon=True).start()
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises the signal again: that is our exit
            pass
    finally:
        sock.close()
    print("wordformer serve: stopped", file=sys.stderr)
    return 0
