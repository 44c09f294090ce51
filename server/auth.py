"""--api-key: `Authorization: Bearer KEY` on every route but the probes (/health, /metrics),
as a plain ASGI middleware so that streaming responses pass through untouched."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

OPEN_PATHS = frozenset({"/health", "/metrics"})


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._expected = api_key.encode()

    def _authorized(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                given = value
                break
        # The scheme is case-insensitive (RFC 9110: "bearer" is "Bearer").
        scheme, _, token = given.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            token = b""
        # compare_digest: the time taken must not tell how much of the key was right.
        return hmac.compare_digest(token.strip(), self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = error_response("Invalid or missing API key: send "
                                  "'Authorization: Bearer <key>'", 401, code="invalid_api_key")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
