"""CoreCounters: the engine core's request bookkeeping for /metrics (no JAX, no model)."""

from __future__ import annotations

import time

from jaxengine.core.stats import CoreCounters


def test_queue_time_is_measured_once_at_the_first_step() -> None:
    c = CoreCounters()
    c.arrived("a")
    time.sleep(0.02)
    c.scheduled(["a"])
    c.scheduled(["a"])  # a later step (or a readmission after preemption) is no queue time
    first = c.take_queue_time("a")
    assert first is not None and first >= 0.02
    assert c.take_queue_time("a") is None


def test_finished_and_aborted_requests_and_tokens() -> None:
    c = CoreCounters()
    for rid in ("a", "b", "c"):
        c.arrived(rid)
    c.scheduled(["a", "b"])
    c.generated(5)
    c.finished("a", aborted=False)
    c.finished("b", aborted=True)
    c.finished("c", aborted=True)  # aborted while queued: its arrival is forgotten
    s = c.summary()
    assert s["generation_tokens_total"] == 5
    assert s["num_requests_total"] == 3 and s["num_aborted_requests_total"] == 2
    assert not c._arrivals and not c._queue_times  # nothing kept for finished requests


def test_gen_throughput_covers_only_the_window() -> None:
    c = CoreCounters(throughput_window_s=0.05)
    c.generated(10)
    assert c.gen_throughput() > 0
    time.sleep(0.08)
    assert c.gen_throughput() == 0.0
