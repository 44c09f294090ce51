"""One real server for all server tests: `python -m jaxengine.serve` on a free loopback port,
with the default model, started once per session and stopped at the end.

JAXENGINE_TEST_SERVER_URL=http://host:port points the tests at a server that is already
running instead (for example one on a GPU machine); JAXENGINE_TEST_SERVER_ARGS adds flags to
the one the tests start; JAXENGINE_TEST_SERVER_TIMEOUT (seconds, default 840) bounds the wait
for model load and JIT compilation.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServerHandle:
    url: str  # http://127.0.0.1:PORT
    log_path: Path | None = None

    def log_tail(self, n: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen | None, deadline: float,
                  handle: ServerHandle) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the server exited with code {proc.returncode} before it was ready:\n"
                        f"{handle.log_tail()}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    pytest.fail(f"the server was not healthy in time:\n{handle.log_tail()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    # The server runs in its own process group: whatever is left of it (an engine-core
    # process that outlived a crash) goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    timeout = float(os.environ.get("JAXENGINE_TEST_SERVER_TIMEOUT", "840"))
    external = os.environ.get("JAXENGINE_TEST_SERVER_URL")
    if external:
        handle = ServerHandle(external.rstrip("/"))
        _wait_healthy(handle.url, None, time.monotonic() + timeout, handle)
        yield handle
        return

    port = _free_port()
    log_dir = tmp_path_factory.mktemp("server")  # pytest keeps the last few runs' logs
    handle = ServerHandle(f"http://127.0.0.1:{port}", log_dir / "server.log")
    cmd = [sys.executable, "-m", "jaxengine.serve", "--host", "127.0.0.1", "--port", str(port),
           "--skip-server-warmup", "--context-length", "2048", "--log-level", "info",
           *shlex.split(os.environ.get("JAXENGINE_TEST_SERVER_ARGS", ""))]
    with open(handle.log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_healthy(handle.url, proc, time.monotonic() + timeout, handle)
        yield handle
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def client(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="EMPTY", timeout=180,
                         max_retries=0)


@pytest.fixture(scope="session")
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=180) as c:
        yield c


@pytest.fixture(scope="session")
def model_info(http: httpx.Client) -> dict:
    response = http.get("/get_model_info")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="session")
def model_name(model_info: dict) -> str:
    return model_info["served_model_name"]
