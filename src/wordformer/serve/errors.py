"""Errors in OpenAI's JSON shape, so the official clients raise their usual exceptions.

Every error the server sends, its own and the framework's, reads
``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`` with the matching status:
400 malformed JSON or a request the model cannot serve, 401 missing or wrong key, 404 unknown model or
route, 405 wrong method, 413 body too large, 422 a field of the wrong type or outside its range, 429 the
queue is full, 500 a bug (its traceback goes to the server log, not to the client).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import WordformerError

logger = logging.getLogger("wordformer.serve")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class ApiError(Exception):
    """An error answer: HTTP status, one-line message, and OpenAI's ``type``, ``param`` and ``code``."""

    def __init__(self, status: int, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                 type: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or TYPES.get(status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param: Optional[str] = None,
               code: Optional[str] = None) -> dict[str, Any]:
    """The JSON object of an error (also sent as an SSE event when a stream fails midway)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(status: int, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                   headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(ApiError(status, message, param=param, code=code).body(), status_code=status, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> Optional[str]:
    """``("body", "messages", 0, "content")`` -> ``"messages[0].content"``; the request body itself -> None."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic names union members ("str", "list[str]", "function-after[...]") in the location: not field names
    parts = [p for p in parts if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool",
                                                                                  "list", "dict", "none")))]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def validation_message(errors: list[dict[str, Any]]) -> tuple[int, str, Optional[str]]:
    """Status, one-line message and field for pydantic's errors: unparsable JSON is 400, the rest 422."""
    for err in errors:
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            detail = f" ({ctx['error']})" if ctx.get("error") else ""
            return 400, f"the request body is not valid JSON{detail}; send a JSON object", None
    first = errors[0] if errors else {}
    field = _field_name(tuple(first.get("loc", ())))
    if first.get("type") == "missing" and field is None:
        return 400, "the request body is empty; send a JSON object", None
    msg = str(first.get("msg", "invalid request"))
    if msg.startswith("Value error, "):  # our own validators' words, without pydantic's prefix
        msg = msg[len("Value error, "):]
    if first.get("type") == "missing":
        return 422, f"'{field}' is required", field
    if field is None:
        if first.get("type") in ("model_attributes_type", "dict_type", "model_type"):
            return 422, "the request body must be a JSON object", None
        return 422, msg, None
    got = first.get("input")
    shown = repr(got) if isinstance(got, (int, float, bool)) or got is None else type(got).__name__
    if isinstance(got, str):
        shown = repr(got if len(got) <= 40 else got[:40] + "...")
    return 422, f"'{field}': {msg} (got {shown})", field


def install_error_handlers(app: FastAPI) -> None:
    """Give every error, the framework's included, OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(WordformerError)
    async def _user_error(request: Request, exc: WordformerError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, param = validation_message(list(exc.errors()))
        return error_response(status, message, param=param, code="invalid_value" if status == 422 else "invalid_json")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; the API lives under /v1 (see /docs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error (the server log has the details)")
