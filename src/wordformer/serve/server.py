"""Serving on a socket: which checkpoints, bound where, run by uvicorn until Ctrl-C.

The port is bound before any model is loaded, so a taken port is one line at once and nobody can take the
port between the check and the start. Only the standard library is imported at module level.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import WordformerError
from ..runs import BEST

if TYPE_CHECKING:  # uvicorn and torch load only when a server really starts
    from .registry import ModelRegistry
    from .settings import ServeSettings

DEMO_CHECKPOINT = Path("runs/demo") / BEST


def checkpoints_to_serve(given: Optional[list[str]]) -> list[str]:
    """The ``--checkpoint`` paths, else the demo's run; refused in one line before the port is opened."""
    paths = list(given) if given else []
    if not paths:
        if not DEMO_CHECKPOINT.is_file():
            raise WordformerError(f"no --checkpoint given and no demo run at {DEMO_CHECKPOINT}; run `make demo` first "
                                  "(or give --checkpoint PATH)")
        paths = [str(DEMO_CHECKPOINT)]
    for path in map(Path, paths):  # the cheap checks; loading comes after binding
        if not path.expanduser().exists():
            raise WordformerError(f"checkpoint {path} does not exist; train one with `wordformer train --out DIR` "
                                  "(or `make demo`)")
        if path.expanduser().is_dir():
            hint = " (did you mean DIR/best.ckpt?)" if (path.expanduser() / BEST).exists() else ""
            raise WordformerError(f"checkpoint {path} is a folder, not a file{hint}")
    return paths


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``."""
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


def base_url(host: str, port: int) -> str:
    """The URL a browser on this machine reaches the server at."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def make_server(registry: ModelRegistry, settings: ServeSettings, *, verbose: bool = False) -> Any:
    """A uvicorn server for the app over ``registry`` (run it with ``server.run(sockets=[sock])``)."""
    import uvicorn

    from .app import create_app

    config = uvicorn.Config(create_app(registry, settings), log_level="info" if verbose else "warning",
                            access_log=verbose, timeout_graceful_shutdown=3, lifespan="on")
    logging.getLogger("wordformer.serve").setLevel(logging.INFO if verbose else logging.WARNING)
    return uvicorn.Server(config)


def open_when_up(server: Any, url: str) -> None:
    """Open ``url`` in the default browser once uvicorn's ``server`` has started (gives up after 30 s)."""
    import time
    import webbrowser

    for _ in range(300):
        if server.started:
            webbrowser.open(url)
            return
        time.sleep(0.1)
