"""jaxengine workers and SGLang's router as child processes: start, wait until ready, kill,
restart, stop. Used by `tools/launch_router.py`, the router tests and
`benchmarks/bench_router.py`.

Each worker is `python -m jaxengine.serve` in a process group of its own (its engine-core
process goes with it); the router is `python -m sglang_router.launch_router` (PyPI's
`sglang-router`, the `router` extra).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

# Router flags the launcher sets unless the caller overrides them (the router's argparse keeps
# the last value given). The router's defaults suit long-lived fleets: a health check a minute
# and a circuit that opens after 10 failures, so a dead worker would keep taking requests (and
# every retry of them) for a minute or more.
ROUTER_DEFAULTS = (
    "--health-check-interval-secs", "5",
    "--health-failure-threshold", "2",
    "--cb-failure-threshold", "3",     # a request's retries move to another worker
    "--cb-timeout-duration-secs", "10",  # a restarted worker is tried again soon
    "--log-level", "warn",
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _url(host: str, port: int) -> str:
    """How this machine reaches a server listening on host:port (any-address binds: loopback)."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(
        host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}"


@dataclass
class Child:
    """One child process in its own process group, logging to a file or to our stdout."""

    name: str
    cmd: list[str]
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    _log: IO | None = field(default=None, repr=False)

    def start(self) -> None:
        if self._log is not None:  # a restart
            self._log.close()
        if self.log_path is not None:
            self._log = open(self.log_path, "a")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.started_at = time.monotonic()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, as far as anyone else can tell."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM (a worker drains its requests), then SIGKILL what is left of the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(logged to the console)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


class Worker(Child):
    def __init__(self, index: int, host: str, port: int, flags: list[str],
                 log_dir: Path | None = None) -> None:
        cmd = [sys.executable, "-m", "jaxengine.serve", "--host", host, "--port", str(port),
               *flags]
        super().__init__(f"worker {index}", cmd,
                         None if log_dir is None else log_dir / f"worker-{index}.log")
        self.url = _url(host, port)

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


class Router(Child):
    def __init__(self, worker_urls: list[str], host: str, port: int, policy: str,
                 extra: list[str] = (), log_dir: Path | None = None, name: str = "router",
                 api_key: str | None = None):
        # With --api-key the router asks clients for that key and sends it to the workers.
        key = ["--api-key", api_key] if api_key else []
        cmd = [sys.executable, "-m", "sglang_router.launch_router", "--host", host,
               "--port", str(port), "--policy", policy, "--worker-urls", *worker_urls,
               *ROUTER_DEFAULTS, *key, *extra]
        super().__init__(name, cmd, None if log_dir is None else log_dir / f"{name}.log")
        self.url = _url(host, port)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def healthy_workers(self) -> set[str]:
        """URLs of the workers the router would send requests to now."""
        try:
            workers = httpx.get(self.url + "/workers", headers=self.headers,
                                timeout=5).json()["workers"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return set()
        return {w["url"] for w in workers if w.get("is_healthy")}


def _api_key(flags: list[str]) -> str | None:
    """The value of a `--api-key KEY` (or `--api-key=KEY`) among the workers' flags."""
    for i, flag in enumerate(flags):
        if flag == "--api-key" and i + 1 < len(flags):
            return flags[i + 1]
        if flag.startswith("--api-key="):
            return flag.split("=", 1)[1]
    return None


def wait_until(ready, children: list[Child], timeout: float, what: str) -> None:
    """Poll `ready()` until true; RuntimeError (with the log's end) if a child exits first or
    time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        for child in children:
            if not child.running:
                raise RuntimeError(f"{child.name} exited (code {child.proc.returncode}) before "
                                   f"{what}:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} after {timeout:.0f} s:\n" +
                               "\n".join(f"--- {c.name}\n{c.log_tail(15)}" for c in children))
        time.sleep(0.5)


class Fleet:
    """N workers on this host and one router in front of them."""

    def __init__(self, num_workers: int, worker_flags: list[str], *, host: str = "127.0.0.1",
                 port: int = 30000, worker_host: str = "127.0.0.1",
                 worker_ports: list[int] | None = None, policy: str = "cache_aware",
                 router_args: list[str] = (), log_dir: Path | None = None) -> None:
        ports = worker_ports or [port + 1 + i for i in range(num_workers)]
        if len(ports) != num_workers:
            raise ValueError(f"{num_workers} workers need {num_workers} ports, got {ports}")
        self.workers = [Worker(i, worker_host, p, worker_flags, log_dir)
                        for i, p in enumerate(ports)]
        self.router = Router([w.url for w in self.workers], host, port, policy,
                             list(router_args), log_dir, api_key=_api_key(worker_flags))

    @property
    def worker_urls(self) -> list[str]:
        return [w.url for w in self.workers]

    def start(self, timeout: float = 900.0) -> None:
        """Workers first (in parallel), the router once they all answer /health, and return
        when the router has registered every worker as healthy."""
        try:
            for w in self.workers:
                w.start()
            wait_until(lambda: all(w.healthy() for w in self.workers), self.workers, timeout,
                       "all workers were ready")
            self.router.start()
            wait_until(lambda: self.router.healthy_workers() >= set(self.worker_urls),
                       [self.router], 120, "the router had registered every worker")
        except BaseException:
            self.stop()
            raise

    def restart_worker(self, index: int) -> None:
        worker = self.workers[index]
        worker.stop()
        worker.start()

    def stop(self) -> None:
        """The router first, so nothing new reaches a worker that is draining."""
        self.router.stop(grace_s=10)
        for w in self.workers:
            if w.running:
                w.proc.send_signal(signal.SIGTERM)  # all drain at once
        for w in self.workers:
            w.stop()
