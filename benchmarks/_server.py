"""Start `python -m jaxengine.serve` (or another OpenAI-compatible server) on a free loopback
port for a benchmark, and stop it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    startup_seconds: float  # from launch to the first 200 on /health
    pid: int


@contextlib.contextmanager
def serving(flags: list[str], timeout: float = 1800) -> Iterator[Server]:
    """`python -m jaxengine.serve FLAGS` on a free port, ready."""
    with serving_command(lambda port: [sys.executable, "-m", "jaxengine.serve", "--port",
                                       str(port), "--log-level", "warning", *flags],
                         timeout) as server:
        yield server


@contextlib.contextmanager
def serving_command(command: Callable[[int], list[str]], timeout: float = 1800
                    ) -> Iterator[Server]:
    """The server `command(port)` starts, once GET /health answers 200; stopped on exit."""
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(command(port))
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"server not ready after {timeout:.0f}s")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield Server(url, time.monotonic() - t0, proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
