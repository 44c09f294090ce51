"""CoreClient: starts the engine-core process and routes its outputs to per-request sinks."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from jaxengine.config import EngineConfig
from jaxengine.core.messages import AddRequest, TokenOutput, from_rows

log = logging.getLogger(__name__)

Sink = Callable[[TokenOutput], None]


class EngineDeadError(RuntimeError):
    """The engine core is gone (it crashed, was killed, or the engine was shut down): nothing
    can be generated any more. Servers answer it with 503."""


class CoreClient:
    """Owns the engine-core process. Thread-safe: any thread may submit or abort.

    If the core process dies, every request in flight finishes as an abort with status 503
    and the reason ("the engine core died: killed by signal 9"), later calls raise
    EngineDeadError, and `on_death(reason)` is called once (from the reader thread)."""

    def __init__(self, config: EngineConfig, on_death: Callable[[str], None] | None = None):
        # A fresh interpreter (not multiprocessing's spawn), so scripts need no __main__ guard
        # and a parent that already initialised JAX is never forked.
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "jaxengine.core.process", str(theirs.fileno()),
             str(os.getpid())],
            pass_fds=[theirs.fileno()])
        theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send(config)
        self.info = self._await_ready()
        self._sinks: dict[str, Sink] = {}
        self._calls: dict[int, Future] = {}
        self._call_ids = itertools.count()
        self._send_lock = threading.Lock()
        self._sinks_lock = threading.Lock()
        self._closed = False
        self._stopping = False   # shutdown() was called: the core's exit is expected
        self.death_reason: str | None = None
        self._on_death = on_death
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name="jaxengine-core-reader")
        self._reader.start()

    def _await_ready(self) -> dict[str, Any]:
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            code = self._proc.wait(10)
            raise RuntimeError(f"the engine core exited during start-up "
                               f"(exit code {code}); see its log above") from None
        if kind == "error":
            self._proc.wait(10)
            raise RuntimeError(f"the engine core failed to start: {payload}")
        return payload

    def submit(self, add: AddRequest, sink: Sink) -> None:
        """Queue a request. `add.rid` routes its outputs, so it must be unique among the
        requests in flight (the Engine's own keys are)."""
        with self._sinks_lock:
            if self._closed:
                raise EngineDeadError(self._dead_message())
            assert add.rid not in self._sinks, f"request key {add.rid!r} is in use"
            self._sinks[add.rid] = sink
        self._send(("add", add))

    def _dead_message(self) -> str:
        return self.death_reason or "the engine has shut down"

    def abort(self, rid: str) -> None:
        with self._sinks_lock:
            live = rid in self._sinks and not self._closed
        if live:
            try:
                self._send(("abort", rid))
            except EngineDeadError:
                pass  # the reader thread fails every request of a dead core

    @property
    def alive(self) -> bool:
        """False once the core process is gone (crashed, killed or shut down)."""
        with self._sinks_lock:
            return not self._closed

    def live_request_ids(self) -> list[str]:
        """Requests submitted and not yet finished."""
        with self._sinks_lock:
            return list(self._sinks)

    def call(self, method: str, timeout: float = 60.0) -> Any:
        """A control call answered by the core between steps (flush_cache, stats)."""
        future: Future = Future()
        with self._sinks_lock:
            if self._closed:
                raise EngineDeadError(self._dead_message())
            call_id = next(self._call_ids)
            self._calls[call_id] = future
        self._send(("call", (call_id, method)))
        return future.result(timeout)

    def _send(self, message: tuple[str, Any]) -> None:
        try:
            with self._send_lock:
                self._conn.send(message)
        except OSError as e:  # the core is gone; the reader thread reports why
            raise EngineDeadError(self._dead_message()) from e

    def _read_loop(self) -> None:
        while True:
            try:
                kind, payload = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception:
                log.exception("unreadable message from the engine core")
                break
            if kind == "reply":
                call_id, result = payload
                with self._sinks_lock:
                    future = self._calls.pop(call_id, None)
                if future is not None:
                    future.set_result(result)
                continue
            if kind != "outputs":
                continue
            for out in from_rows(payload):
                with self._sinks_lock:
                    sink = self._sinks.get(out.rid)
                    if out.finish_reason is not None:
                        self._sinks.pop(out.rid, None)
                if sink is not None:
                    sink(out)
        self._fail_all()

    def _fail_all(self) -> None:
        """The core is gone: every request still waiting finishes as aborted (503)."""
        reason = "the engine has shut down" if self._stopping else self._exit_reason()
        with self._sinks_lock:
            self._closed = True
            self.death_reason = reason
            sinks, self._sinks = self._sinks, {}
            calls, self._calls = self._calls, {}
        for future in calls.values():
            future.set_exception(EngineDeadError(reason))
        if not self._stopping:
            log.error("%s, with %d request(s) in flight", reason, len(sinks))
        for rid, sink in sinks.items():
            sink(TokenOutput(rid, [], [], "abort", abort_status=503, abort_message=reason))
        if not self._stopping and self._on_death is not None:
            self._on_death(reason)

    def _exit_reason(self) -> str:
        try:
            code = self._proc.wait(5)
        except subprocess.TimeoutExpired:
            return "the engine core stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"the engine core died (killed by {name})"
        return f"the engine core died (exit code {code})"

    def shutdown(self) -> None:
        with self._sinks_lock:
            closed = self._closed
            self._stopping = True
        if not closed:
            try:
                self._send(("shutdown", None))
            except EngineDeadError:
                pass
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._conn.close()
        self._reader.join(5)
