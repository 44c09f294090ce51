"""The engine core's own books: request counters (what /get_server_info and /metrics report
that the scheduler does not already count: generated tokens, finished and aborted requests,
queue time, generation throughput), the count of JAX compilations, and per-step host and
device time. Host-only bookkeeping; JAX only to listen to its compile events."""

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


class StepTimer:
    """Per-step host time (everything but waiting for the device) and device wait, over the
    last steps. With overlap on, the device wait is what host work could not hide. While steps
    follow one another, a step lasts until the next begins: the loop's messages to and from
    the client between them are host time the device waits for too."""

    def __init__(self, window: int = 256):
        self.total: deque[float] = deque(maxlen=window)
        self.wait: deque[float] = deque(maxlen=window)
        self._wait = 0.0
        # Since start-up, so that a benchmark can average over exactly the steps of its run
        # (the window mixes in whatever ran before, a warm-up request's small steps).
        self.num_steps_total, self.step_seconds_total, self.wait_seconds_total = 0, 0.0, 0.0

    def record_wait(self, seconds: float) -> None:
        self._wait += seconds

    def record(self, seconds: float) -> None:
        self.total.append(seconds)
        self.wait.append(self._wait)
        self.num_steps_total += 1
        self.step_seconds_total += seconds
        self.wait_seconds_total += self._wait
        self._wait = 0.0

    def summary(self) -> dict[str, float]:
        n = max(len(self.total), 1)
        return {**_step_times_ms(sum(self.total) / n, sum(self.wait) / n),
                "num_steps_measured": len(self.total), "num_steps_total": self.num_steps_total,
                "step_seconds_total": self.step_seconds_total,
                "device_wait_seconds_total": self.wait_seconds_total}


def step_times_between(before: dict, after: dict) -> dict[str, float]:
    """Mean step time, host time and device wait (ms) over the steps between two stats
    snapshots (/get_server_info or Engine.get_server_info)."""
    steps = max(after["num_steps_total"] - before["num_steps_total"], 1)
    step = (after["step_seconds_total"] - before["step_seconds_total"]) / steps
    wait = (after["device_wait_seconds_total"] - before["device_wait_seconds_total"]) / steps
    return {**_step_times_ms(step, wait), "num_steps": steps}


def _step_times_ms(step: float, wait: float) -> dict[str, float]:
    return {"step_time_ms": step * 1e3, "host_time_ms": (step - wait) * 1e3,
            "device_wait_ms": wait * 1e3}
