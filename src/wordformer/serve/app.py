"""The FastAPI application: safety layers, health, the model list, and the routers of the API and the page.

``create_app(registry, settings)`` builds it; :mod:`.command` runs it with uvicorn. Layers, outermost
first: CORS (only with ``--cors-origin``), the API key on ``/v1/*`` (constant-time comparison), and the
request-body cap (413 before any JSON is parsed). The model thread (:class:`~.batching.Engine`) starts
and stops with the application.

Reached from any route: ``request.app.state.registry`` (:class:`~.registry.ModelRegistry`),
``request.app.state.engine`` (run model work with ``await engine.run(fn, *args)``) and
``request.app.state.settings`` (:class:`~.settings.ServeSettings`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Optional, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .batching import Engine, Mailbox
from .errors import ApiError, TYPES, error_body, install_error_handlers
from .registry import ModelRegistry
from .settings import ServeSettings

STATIC = Path(__file__).resolve().parent / "static"


# ------------------------------------------------------------------------------------------- ASGI layers


async def _send_error(send: Any, status: int, message: str, *, code: Optional[str] = None,
                      headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error_body(message, type=TYPES.get(status, "invalid_request_error"), code=code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class ApiKeyLayer:
    """``/v1/*`` answers 401 unless ``Authorization: Bearer KEY`` matches (compared in constant time)."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1") or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return await _send_error(send, 401, "missing API key: send the header 'Authorization: Bearer KEY'",
                                     code="missing_api_key", headers=[(b"www-authenticate", b"Bearer")])
        if not hmac.compare_digest(token.strip(), self.key):
            return await _send_error(send, 401, "wrong API key", code="invalid_api_key",
                                     headers=[(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


class BodyLimitLayer:
    """Read request bodies up to ``limit`` bytes before the app sees them; larger ones get a 413.

    The body is read here (it is small by construction) and handed on in one piece, so neither JSON parsing
    nor the routes ever hold more than the limit. A too-large body is still drained (up to a ceiling), so the
    client reads a clean 413 rather than a broken connection.
    """

    DRAIN_FACTOR = 64  # drain at most this many times the limit before answering a too-large body

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _send_error(send, 400, "the Content-Length header is not a number")
        too_big = f"the request body is larger than this server's limit of {self.limit:,} bytes"
        chunks: list[bytes] = []
        size = 0
        more = True
        drain = declared is None or declared <= self.limit * self.DRAIN_FACTOR
        if declared is not None and declared > self.limit and not drain:
            return await _send_error(send, 413, too_big, code="body_too_large")
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            data = message.get("body", b"")
            size += len(data)
            more = message.get("more_body", False)
            if size <= self.limit:
                chunks.append(data)
            elif size > self.limit * self.DRAIN_FACTOR:
                break
        if size > self.limit:
            return await _send_error(send, 413, too_big, code="body_too_large")
        body = b"".join(chunks)
        scope = self._as_json(scope)
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client's disconnect

        return await self.app(scope, replay, send)

    @staticmethod
    def _as_json(scope: dict) -> dict:
        """Read API bodies as JSON whatever they say: ``curl -d`` labels JSON as a form, and a body that is not JSON
        gets a clear 400 from the JSON parser anyway."""
        if not scope["path"].startswith("/v1"):
            return scope
        headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
        given = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), b"")
        if given.split(b";")[0].strip().lower() in (b"", b"text/plain", b"application/x-www-form-urlencoded"):
            return {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        return scope


# ------------------------------------------------------------------------------------------- the app


def create_app(registry: ModelRegistry, settings: Optional[ServeSettings] = None) -> FastAPI:
    """The application serving ``registry``'s models with ``settings``' limits."""
    from . import inspect, openai_api

    settings = settings or ServeSettings()
    engine = Engine(max_rows=settings.max_rows, gather_s=settings.gather_s, threads=settings.threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.mailbox = Mailbox(asyncio.get_running_loop())
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(
        title="wordformer",
        version=__version__,
        summary="Word predictors you trained, as an OpenAI-compatible API and a page that shows how they work.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.registry = registry
    app.state.engine = engine
    app.state.settings = settings
    install_error_handlers(app)

    app.add_middleware(BodyLimitLayer, limit=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyLayer, api_key=settings.api_key)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.get("/health", tags=["server"], summary="Is the server up")
    async def health(request: Request) -> dict[str, Any]:
        engine = request.app.state.engine
        return {"status": "ok", "version": __version__, "models": len(registry), "decoding": engine.active_rows,
                "stats": engine.stats.as_dict()}

    @app.get("/v1/models", tags=["openai"], summary="The served models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_entry(m) for m in registry.models()]}

    @app.get("/v1/models/{model_id:path}", tags=["openai"], summary="One served model")
    async def get_model(model_id: str) -> dict[str, Any]:
        return _model_entry(registry.get(model_id))

    app.include_router(openai_api.router, prefix="/v1")
    app.include_router(inspect.router, prefix="/v1/inspect")

    @app.get("/", include_in_schema=False)
    async def page() -> Any:
        index = STATIC / "index.html"
        if not index.is_file():
            raise ApiError(404, "the page is not installed (serve/static/index.html is missing); the API is at /v1",
                           code="page_missing")
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app


def _model_entry(served: Any) -> dict[str, Any]:
    """OpenAI's model object, plus the model card (architecture, tokenizer, training) under ``card``."""
    return {"id": served.id, "object": "model", "created": served.created, "owned_by": "wordformer",
            "card": served.card()}

