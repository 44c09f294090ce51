"""OpenAI-style error bodies, and the handlers that turn every failure into one.

The body is SGLang's flat form, which the `openai` client reads as the error itself:

    {"object": "error", "message": "...", "type": "BadRequestError", "param": "...", "code": 400}

Bad input is always a 400 (never a 422 or a 500); unknown routes are 404.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jaxengine import EngineDeadError

logger = logging.getLogger(__name__)

_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
          404: "NotFoundError", 405: "MethodNotAllowedError", 413: "RequestTooLargeError",
          429: "RateLimitError", 500: "InternalServerError", 503: "ServiceUnavailableError"}


class APIError(Exception):
    """Raised by endpoint code; becomes an OpenAI-style error response."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 code: int | str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = status if code is None else code
        self.headers = headers or {}


def error_body(message: str, status: int = 400, param: str | None = None,
               code: int | str | None = None) -> dict[str, Any]:
    """The flat OpenAI/SGLang error object."""
    kind = _TYPES.get(status) or HTTPStatus(status).phrase.replace(" ", "") + "Error"
    return {"object": "error", "message": message, "type": kind, "param": param,
            "code": status if code is None else code}


def error_response(message: str, status: int = 400, param: str | None = None,
                   code: int | str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, param, code), status_code=status)


def sse_error(err: APIError) -> str:
    """An error in the middle of a stream: the `openai` client raises on `{"error": {...}}`."""
    body = {"error": error_body(err.message, err.status, err.param, err.code)}
    return f"data: {json.dumps(body)}\n\n"


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    """("body", "messages", 0, "content") -> "messages[0].content"."""
    parts = [p for p in loc if p != "body"]
    # Pydantic names union members in the location ("str", "list[...]", a model's class
    # name); they are noise here (field names are snake_case).
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif "[" in p or p in {"str", "int", "list", "dict", "function-after"} or p[:1].isupper():
            continue
        else:
            out += ("." if out else "") + p
    return out or None


def _is_json(request: Request) -> bool:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return ctype == "application/json" or (ctype.startswith("application/")
                                           and ctype.endswith("+json"))


def _validation_message(request: Request, errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    first = errors[0]
    if first.get("type") == "json_invalid":
        why = first.get("ctx", {}).get("error", "")
        return f"Invalid JSON in the request body: {why}".rstrip(": "), None
    if first.get("loc") == ("body",):
        if not _is_json(request):
            ctype = request.headers.get("content-type") or "none"
            return ("The request body must be JSON with Content-Type: application/json "
                    f"(got Content-Type: {ctype})"), None
        if first.get("type") == "missing":
            return "The request body is missing; send a JSON object", None
        return "The request body must be a JSON object", None
    found = [(_loc_to_param(tuple(err.get("loc", ()))), str(err.get("msg", "invalid value")))
             for err in errors]
    # A union field reports one error per member ("not a string", "item 0: bad type"); keep the
    # most specific ones: drop an error whose field is a prefix of another error's field.
    params = [p for p, _ in found if p]
    found = [(p, m) for p, m in found
             if not p or not any(q != p and q.startswith(p) for q in params)]
    message = "; ".join(f"{p}: {m}" if p else m for p, m in found)
    return message, found[0][0]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        response = error_response(exc.message, exc.status, exc.param, exc.code)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(request, list(exc.errors()))
        return error_response(message, 400, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        if status == 404 and message == "Not Found":
            message = f"Not found: {request.method} {request.url.path}"
        elif status == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        response = error_response(message, status)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(EngineDeadError)
    async def _engine_dead(request: Request, exc: EngineDeadError) -> JSONResponse:
        # The server exits and its supervisor restarts it: retry, here or elsewhere.
        response = error_response(f"The engine is not running: {exc}", 503)
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        # The engine's contract: bad input surfaces as ValueError.
        return error_response(str(exc) or "invalid request", 400)



class InternalErrors:
    """A bug becomes a 500 with the OpenAI body, and the connection stays usable: an
    exception that reached uvicorn after the response was sent (what Starlette's own
    handler does) would close the keep-alive connection under the client's next request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:  # a stream cut short: nothing valid can follow on this connection
                raise
            logger.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            response = error_response(f"Internal server error: {type(exc).__name__}: {exc}",
                                      500)
            await response(scope, receive, send)


_ERROR_SCHEMA = {"type": "object", "required": ["object", "message", "type", "code"],
                 "properties": {"object": {"const": "error"}, "message": {"type": "string"},
                                "type": {"type": "string"},
                                "param": {"type": ["string", "null"]},
                                "code": {"type": ["integer", "string"]}}}


def document_400s(app: FastAPI) -> None:
    """FastAPI documents validation failures as 422 with its own body; this server answers
    400 with the OpenAI error body, so say that in /openapi.json."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None:
                        responses["400"] = {"description": "Bad request",
                                            "content": {"application/json": {
                                                "schema": _ERROR_SCHEMA}}}
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
