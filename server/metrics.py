"""Prometheus metrics (--enable-metrics) under SGLang's names with a `jaxengine:` prefix.

Two sources, so that the engine core never does metrics work in its loop:
- gauges and counters are read from the engine core's "stats" call when /metrics is scraped;
- latency histograms are observed here, in the API process, from each request's output
  timestamps (the engine calls `observe` when a request finishes).
Each app has its own registry, so several servers (or tests) in one process never collide.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "jaxengine:"

# name -> help; each read from the core's stats under the same name.
GAUGES = {
    "num_running_reqs": "Requests decoding or prefilling now.",
    "num_queue_reqs": "Requests waiting for a running slot.",
    "num_used_tokens": "KV cache tokens held by running requests.",
    "token_usage": "Fraction of the KV pool held by running requests.",
    "cache_hit_rate": "Prompt tokens found in the prefix cache / prompt tokens.",
    "gen_throughput": "Generated tokens per second over the last 10 s.",
    "max_total_num_tokens": "KV pool size in tokens.",
}
COUNTERS = {
    "prompt_tokens_total": "Prompt tokens admitted.",
    "generation_tokens_total": "Tokens generated.",
    "cached_tokens_total": "Prompt tokens served from the prefix cache.",
    "num_requests_total": "Requests finished (aborted ones included).",
    "num_aborted_requests_total": "Requests aborted or refused.",
    "num_preemptions_total": "Running requests preempted (recomputed later) for KV pages.",
}
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
            160.0, 320.0, 640.0)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
        1.0, 2.5, 5.0)


class _CoreStats(Collector):
    """The core's counters as of the last scrape, exposed in Prometheus types."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.stats: dict[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        for name, doc in GAUGES.items():
            family = GaugeMetricFamily(PREFIX + name, doc, labels=["model_name"])
            family.add_metric([self.model_name], float(self.stats.get(name, 0.0)))
            yield family
        for name, doc in COUNTERS.items():
            family = CounterMetricFamily(PREFIX + name, doc, labels=["model_name"])
            family.add_metric([self.model_name], float(self.stats.get(name, 0)))
            yield family


class ServerMetrics:
    def __init__(self, engine: Any, model_name: str) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        self._core = _CoreStats(model_name)
        self.registry.register(self._core)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Any:
            return Histogram(PREFIX + name, doc, ["model_name"], buckets=buckets,
                             registry=self.registry).labels(model_name)

        self.ttft = histogram("time_to_first_token_seconds", "Time to the first token.", _LATENCY)
        self.itl = histogram("inter_token_latency_seconds", "Time between tokens.", _ITL)
        self.e2e = histogram("e2e_request_latency_seconds", "Arrival to last token.", _LATENCY)
        self.queue = histogram("queue_time_seconds", "Arrival to the first step.", _LATENCY)
        self._lock = asyncio.Lock()
        engine.request_listeners.append(self.observe)

    def observe(self, timings: dict[str, Any]) -> None:
        """A finished request's timings (see `jaxengine.request.RequestState.timings`)."""
        if timings["ttft"] is not None:
            self.ttft.observe(timings["ttft"])
        for gap in timings["itl"]:
            self.itl.observe(gap)
        self.e2e.observe(timings["e2e"])
        if timings["queue_time"] is not None:
            self.queue.observe(timings["queue_time"])

    async def render(self) -> bytes:
        async with self._lock:  # one stats snapshot per exposition
            info = await asyncio.to_thread(self.engine.get_server_info)
            self._core.stats = info
            return generate_latest(self.registry)


router = APIRouter()


@router.get("/metrics")
async def metrics(raw: Request) -> Response:
    body = await raw.app.state.metrics.render()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
