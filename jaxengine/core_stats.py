"""Request counters of the engine core: what /get_server_info and /metrics report that the
scheduler does not already count (generated tokens, finished and aborted requests, queue time,
generation throughput). Host-only bookkeeping, no JAX."""

from __future__ import annotations

import time
from collections import deque
from typing import Any


class CoreCounters:
    """Counters since start-up, plus each queued request's arrival time, so the time it waited
    for its first step can travel back with its first output."""

    def __init__(self, throughput_window_s: float = 10.0) -> None:
        self.generation_tokens_total = 0
        self.num_requests_total = 0          # finished, however they finished
        self.num_aborted_requests_total = 0  # aborted or refused (a full queue)
        self._arrivals: dict[str, float] = {}
        self._queue_times: dict[str, float] = {}
        self._window = throughput_window_s
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) per step
        self._start = time.monotonic()

    def arrived(self, rid: str) -> None:
        self._arrivals[rid] = time.monotonic()

    def scheduled(self, rids: list[str]) -> None:
        """The requests of a dispatched step; the first time a request is seen, its queue time
        is measured (a preempted request's second wait is not a queue time)."""
        now = time.monotonic()
        for rid in rids:
            start = self._arrivals.pop(rid, None)
            if start is not None:
                self._queue_times[rid] = now - start

    def take_queue_time(self, rid: str) -> float | None:
        return self._queue_times.pop(rid, None)

    def generated(self, num_tokens: int) -> None:
        self.generation_tokens_total += num_tokens
        self._recent.append((time.monotonic(), num_tokens))

    def finished(self, rid: str, aborted: bool) -> None:
        self.num_requests_total += 1
        self.num_aborted_requests_total += int(aborted)
        self._arrivals.pop(rid, None)
        self._queue_times.pop(rid, None)

    def gen_throughput(self) -> float:
        """Generated tokens per second over the last `throughput_window_s` seconds."""
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - self._window:
            self._recent.popleft()
        span = min(self._window, max(now - self._start, 1e-3))
        return sum(n for _, n in self._recent) / span

    def summary(self) -> dict[str, Any]:
        return {"generation_tokens_total": self.generation_tokens_total,
                "num_requests_total": self.num_requests_total,
                "num_aborted_requests_total": self.num_aborted_requests_total,
                "gen_throughput": self.gen_throughput()}


class CompileCounter:
    """JAX compilations in this process (compiles and persistent-cache loads alike). After
    warm-up the count must stand still: any compile while serving is a latency spike."""

    EVENTS = ("/jax/core/compile/backend_compile", "/jax/compilation_cache/cache_hits")

    def __init__(self) -> None:
        import jax.monitoring

        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        jax.monitoring.register_event_listener(self._event)

    def _duration(self, event: str, *args, **kwargs) -> None:
        if event.startswith(self.EVENTS[0]):
            self.count += 1

    def _event(self, event: str, *args, **kwargs) -> None:
        if event.startswith(self.EVENTS[1]):
            self.count += 1


_COMPILES: CompileCounter | None = None


def compile_counter() -> CompileCounter:
    """The process's one CompileCounter (JAX listeners cannot be removed)."""
    global _COMPILES
    if _COMPILES is None:
        _COMPILES = CompileCounter()
    return _COMPILES
