"""A bug in a route becomes a 500 with the OpenAI error body, and the keep-alive connection it
came on stays usable: real uvicorn on a loopback port, one socket for both requests."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from server.errors import InternalErrors, install_error_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(InternalErrors)

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("a bug")

    @app.get("/ok")
    async def ok() -> dict:
        return {"ok": True}

    return app


def test_a_500_keeps_the_connection() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(), log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/boom")
        first = conn.getresponse()
        body = json.loads(first.read())
        assert first.status == 500 and body["type"] == "InternalServerError"
        assert "RuntimeError: a bug" in body["message"]
        assert first.getheader("connection") != "close"
        used = conn.sock
        conn.request("GET", "/ok")  # the same socket: it must still be open
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read()) == {"ok": True}
        assert conn.sock is used
        conn.close()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
