"""GrammarSandbox: every new grammar is first compiled in a child process, under a time and
a memory budget, before any request with it is queued.

Compiling is where hostile grammars hurt: llguidance's compile time grows with the square of
an EBNF's rule chain (20,000 rules: minutes) and a regex such as `a{1000}{1000}` expands as it
compiles. A thread cannot be stopped; a process can, so a grammar past the budget costs its
worker process (killed and replaced) and its client a 400, never the server. What passed is
remembered (by kind and spec), so each grammar is checked once.

The worker is `python -m jaxengine.structured.sandbox_process FD PARENT_PID`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

from jaxengine.structured.backend import tokenizer_json

DEFAULT_TIMEOUT_S = 10.0
MEMORY_LIMIT_BYTES = 4 << 30   # address space of a worker: llguidance, the tokenizer, a grammar
WORKERS = 2                    # grammars checked at once
_RESULTS = 1024                # grammars whose verdict is remembered
_START_TIMEOUT_S = 60.0        # importing llguidance and building its view of the tokenizer


class GrammarSandbox:
    """`await check(kind, spec)` returns if the grammar compiles (and takes its first step)
    within `timeout_s` and the memory limit; otherwise ValueError with the reason. Callable
    from any event loop and any thread."""

    def __init__(self, tokenizer, vocab_size: int, eos_ids: list[int],
                 timeout_s: float = DEFAULT_TIMEOUT_S, workers: int = WORKERS,
                 memory_bytes: int = MEMORY_LIMIT_BYTES) -> None:
        """`tokenizer`: an HF fast tokenizer (or its `tokenizer_json`)."""
        self._tokenizer = tokenizer
        self._setup: tuple | None = None
        self._limits = (vocab_size, list(eos_ids), memory_bytes)
        self.timeout_s = timeout_s
        self._verdicts: OrderedDict[tuple[str, str], str | None] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()   # each executor thread owns one worker process
        self._workers: list[_Worker] = []
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="jaxengine-grammar")

    async def check(self, kind: str, spec: str) -> None:
        key = (kind, spec)
        with self._lock:
            known = key in self._verdicts
            verdict = self._verdicts.get(key)
        if not known:
            loop = asyncio.get_running_loop()
            verdict = await loop.run_in_executor(self._executor, self._check_in_worker, kind,
                                                 spec)
            with self._lock:
                self._verdicts[key] = verdict
                if len(self._verdicts) > _RESULTS:
                    self._verdicts.popitem(last=False)
        if verdict is not None:
            raise ValueError(verdict)

    def _check_in_worker(self, kind: str, spec: str) -> str | None:
        worker = getattr(self._local, "worker", None)
        if worker is None or not worker.alive:
            with self._lock:
                if self._setup is None:
                    text = self._tokenizer if isinstance(self._tokenizer, str) else \
                        tokenizer_json(self._tokenizer)
                    self._setup = (text, *self._limits)
            worker = self._local.worker = _Worker(self._setup)
            with self._lock:
                self._workers = [w for w in self._workers if w.alive] + [worker]
        try:
            return worker.ask((kind, spec), self.timeout_s)
        except TimeoutError:
            worker.kill()
            return (f"the {kind} did not compile within {self.timeout_s:g} s "
                    "(the grammar is too large or too complex)")
        except EOFError:
            worker.kill()
            gib = self._limits[2] / (1 << 30)
            return f"compiling the {kind} needed more than {gib:g} GiB of memory"

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.kill()


class _Worker:
    """One sandbox process and its end of the socket pair; RuntimeError if it cannot start
    (a server fault, not the grammar's)."""

    def __init__(self, setup: tuple) -> None:
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "jaxengine.structured.sandbox_process", str(theirs.fileno()),
             str(os.getpid())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(ours.detach())
        try:
            self._conn.send(setup)
            if not self._conn.poll(_START_TIMEOUT_S) or self._conn.recv() != "ready":
                raise EOFError
        except (EOFError, OSError):
            self.kill()
            raise RuntimeError("the grammar sandbox process did not start (exit code "
                               f"{self._proc.returncode}); see the log above") from None

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def ask(self, job: tuple[str, str], timeout_s: float) -> str | None:
        self._conn.send(job)
        if not self._conn.poll(timeout_s):
            raise TimeoutError
        return self._conn.recv()  # EOFError if the worker died (out of memory)

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._conn.close()
