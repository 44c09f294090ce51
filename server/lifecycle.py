"""Graceful shutdown: stop taking work, let requests in flight finish for a while, then abort
the rest, so that every open stream ends with an error event and [DONE] instead of a cut
connection, and every non-streaming client gets a 503 it can retry elsewhere."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

logger = logging.getLogger(__name__)

# Probes keep answering while draining: /health_generate itself says 503.
_ALWAYS_OPEN = frozenset({"/health", "/health_generate", "/metrics", "/get_server_info"})


class RefuseWhileDraining:
    """503 with Retry-After for new requests once shutdown has begun (a keep-alive
    connection may still send one after the listener closed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("app").state if scope.get("app") is not None else None
        if (scope["type"] == "http" and scope["path"] not in _ALWAYS_OPEN
                and getattr(state, "draining", False)):
            reason = getattr(state, "stop_reason", None) or "The server is shutting down"
            response = error_response(f"{reason}; retry on another replica", 503)
            response.headers["Retry-After"] = "1"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def drain(app: Any, grace_s: float) -> list[str]:
    """Refuse new work, wait up to `grace_s` for requests in flight, abort the rest; returns
    the ids aborted."""
    app.state.draining = True
    engine = app.state.engine
    deadline = time.monotonic() + grace_s
    live = engine.live_request_ids()
    if live:
        logger.info("shutting down: waiting up to %.0f s for %d request(s)", grace_s, len(live))
    while live and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        live = engine.live_request_ids()
    aborted = engine.abort_matching(".*", "the server is shutting down", 503)
    if aborted:
        logger.info("shutting down: aborted %d request(s)", len(aborted))
    return aborted


class Starting:
    """What uvicorn serves from the first second: 503 with Retry-After for every request
    (/health and /health_generate included) until `ready(app)` swaps the real app in once the
    engine has loaded, so probes can tell "starting" from "down"."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    def ready(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        response = error_response("The server is starting: the model is still loading", 503)
        response.headers["Retry-After"] = "5"
        await response(scope, receive, send)
