"""Every request body is checked before FastAPI parses it: a size limit (413), UTF-8 (400),
JSON nesting depth and lone UTF-16 surrogates (400). Those inputs would otherwise reach a
tokenizer or a recursive walk and come back as a 500, or freeze the event loop.

The body is read here once and replayed to the app; later `receive` calls go to the client's
channel, so disconnects are still seen.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

MAX_DEPTH = 128  # JSON schemas nest a few dozen levels at most
MIN_BODY_BYTES = 8 << 20
# A body past the limit is read (and dropped) up to this much, so that the client, still
# sending, reads a clean 413 instead of a reset connection; beyond it the connection is cut.
DRAIN_BYTES = 64 << 20
BODY_BYTES_PER_TOKEN = 32  # text and JSON escapes: a context's worth of prompt fits easily
_THREAD_OVER = 256 << 10  # bodies larger than this are checked off the event loop


def body_limit(context_length: int) -> int:
    """The largest body accepted, in bytes."""
    return max(MIN_BODY_BYTES, BODY_BYTES_PER_TOKEN * context_length)


class BodyProblem(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def check_json(body: bytes) -> None:
    """BodyProblem if the body is not UTF-8, nests deeper than MAX_DEPTH or holds a lone
    surrogate. Malformed JSON passes: FastAPI reports it with its position."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyProblem(f"The request body must be UTF-8 encoded JSON (byte {e.start} is "
                          "not UTF-8)") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise BodyProblem(f"The request body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        return
    _walk(value)


def _walk(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise BodyProblem(f"The request body nests deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BodyProblem(f"The request body holds a lone UTF-16 surrogate "
                          f"(\\u{ord(text[e.start]):04x}), which is not valid Unicode text"
                          ) from None


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            ctype = value.decode("latin-1").split(";")[0].strip().lower()
            return ctype == "application/json" or (ctype.startswith("application/")
                                                   and ctype.endswith("+json"))
    return True  # FastAPI parses a body without a content type as JSON


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyGuard:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
            if body and _is_json(scope):
                if len(body) > _THREAD_OVER:
                    await asyncio.to_thread(check_json, body)
                else:
                    check_json(body)
        except BodyProblem as e:
            response = error_response(str(e), e.status)
            if e.status == 413:  # the rest of the body is not read: the connection must go
                response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        except _Gone:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        too_big = BodyProblem(f"The request body is larger than {self.max_bytes} bytes", 413)
        drain_limit = max(DRAIN_BYTES, self.max_bytes)
        declared = _declared_length(scope)
        if declared is not None and declared > drain_limit:
            raise too_big
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_bytes:
                chunks.append(chunk)
            elif size > drain_limit:
                raise too_big
            if not message.get("more_body", False):
                break
        if size > self.max_bytes:
            raise too_big
        return b"".join(chunks)


class _Gone(Exception):
    """The client left while sending its body."""
