"""Faults and overload against a real server with a small KV pool (2048 tokens, 8 running):
the context follows the pool, a preemption storm gives the roomy server's greedy tokens,
hostile grammars are refused within their budget while others are served, a soak of mixed
requests leaves nothing behind, and (last) a killed engine core fails every request in flight
fast, with 503s, and the server exits 1. A server told to stop while it loads exits 0 and
leaves no engine core behind. Every wait is bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from benchmarks.bench_soak import SOAK_FLAGS, books, run_soak, soak_calls
from tools.procs import children, gone, tree_rss_mb

from .conftest import REPO, ServerHandle, _free_port, _stop, _wait_healthy

pytestmark = pytest.mark.skipif(bool(os.environ.get("JAXENGINE_TEST_SERVER_URL")),
                                reason="starts its own servers")
POOL = 2048


def _launch(flags: list[str], log_path: Path) -> tuple[ServerHandle, subprocess.Popen]:
    port = _free_port()
    handle = ServerHandle(f"http://127.0.0.1:{port}", log_path)
    cmd = [sys.executable, "-m", "jaxengine.serve", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "info", *flags]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return handle, proc


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Iterator[tuple[ServerHandle, subprocess.Popen]]:
    handle, proc = _launch([*SOAK_FLAGS, "--grammar-compile-timeout", "3"],
                           tmp_path_factory.mktemp("faults") / "server.log")
    try:
        _wait_healthy(handle.url, proc, time.monotonic() + 600, handle)
        yield handle, proc
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def http(small) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small[0].url, timeout=120) as c:
        yield c


def test_the_context_follows_the_pool(http) -> None:
    assert http.get("/v1/models").json()["data"][0]["max_model_len"] == POOL
    assert http.get("/get_model_info").json()["context_length"] == POOL
    response = http.post("/v1/completions", json={"prompt": [7] * 3000, "max_tokens": 1})
    assert response.status_code == 400 and f"{POOL} tokens" in response.json()["message"]
    # The longest prompt that fits gets its one token (it once never answered).
    response = http.post("/v1/completions", json={"prompt": [7] * (POOL - 1), "max_tokens": 1})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 1


def test_a_preemption_storm_gives_the_roomy_pools_tokens(http, server) -> None:
    """10 greedy requests of ~280 tokens each at once: the 8 that run need more than the
    2048-token pool holds."""
    bodies = [{"prompt": [100 + 37 * k + i for i in range(180 + 3 * k)], "max_tokens": 100,
               "temperature": 0.0, "ignore_eos": True} for k in range(10)]
    before = http.get("/get_server_info").json()["num_preemptions_total"]
    with ThreadPoolExecutor(len(bodies)) as pool:
        stormy = list(pool.map(lambda b: http.post("/v1/completions", json=b), bodies))
    assert all(r.status_code == 200 for r in stormy), [r.text for r in stormy][:2]
    info = http.get("/get_server_info").json()
    assert info["num_preemptions_total"] > before and info["kv_cache_integrity"] == "ok"
    with httpx.Client(base_url=server.url, timeout=300) as roomy, \
            ThreadPoolExecutor(len(bodies)) as pool:
        calm = list(pool.map(lambda b: roomy.post("/v1/completions", json=b), bodies))
    assert [r.json()["choices"][0]["text"] for r in stormy] == \
        [r.json()["choices"][0]["text"] for r in calm]


def test_hostile_grammars_are_refused_in_budget_while_others_are_served(http) -> None:
    chain = 20_000
    ebnf = "root ::= r0\n" + "".join(f'r{i} ::= "a" r{i + 1}\n' for i in range(chain)) + \
        f'r{chain} ::= "b"\n'
    done: dict[str, httpx.Response] = {}
    took: dict[str, float] = {}

    def hostile() -> None:
        t0 = time.monotonic()
        done["ebnf"] = http.post("/generate", json={"text": "x", "sampling_params": {
            "ebnf": ebnf, "max_new_tokens": 4}})
        took["ebnf"] = time.monotonic() - t0

    worker = threading.Thread(target=hostile)
    worker.start()
    latencies = []
    while worker.is_alive():
        t0 = time.monotonic()
        plain = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert plain.status_code == 200
        assert http.get("/health").status_code == 200
        latencies.append(time.monotonic() - t0)
    worker.join()
    assert done["ebnf"].status_code == 400, done["ebnf"].text
    assert "did not compile within 3 s" in done["ebnf"].json()["message"]
    assert took["ebnf"] < 20 and latencies and max(latencies) < 10, (took, latencies)
    for regex in ("a{1000}{1000}", "a{1000}{1000}"):  # the verdict is remembered
        response = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 4,
                                                      "regex": regex})
        assert response.status_code == 400, response.text
        assert "cannot run this regex" in response.json()["message"]
    ok = http.post("/v1/completions", json={"prompt": "Digits:", "max_tokens": 4,
                                            "regex": r"\d{4}", "temperature": 0.0})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"].isdigit()


def test_a_soak_leaves_nothing_behind(small) -> None:
    handle, proc = small
    warm = asyncio.run(run_soak(handle.url, soak_calls(24, seed=99), 8))
    assert not warm.failures, warm.failures[:3]
    rss_warm = tree_rss_mb(proc.pid)
    out = asyncio.run(run_soak(handle.url, soak_calls(120, seed=1), 12))
    assert not out.failures, out.failures[:5]
    assert out.counts[200] > 90 and out.counts[400] > 0
    state = books(handle.url)
    assert (state["num_running_reqs"], state["num_queue_reqs"],
            state["kv_cache_integrity"]) == (0, 0, "ok"), state
    assert tree_rss_mb(proc.pid) < rss_warm + 400, "memory grew during the soak"


def test_a_killed_engine_core_fails_requests_fast_and_the_server_exits(small) -> None:
    """Last: it ends the module's server."""
    handle, proc = small
    stream_events: list[str] = []
    results: list[httpx.Response | Exception] = []
    first = threading.Event()
    body = {"prompt": "Count:", "max_tokens": 400, "ignore_eos": True}

    def stream() -> None:
        with httpx.Client(base_url=handle.url, timeout=60) as c, \
                c.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    stream_events.append(line)
                    first.set()

    def plain(_: int) -> None:
        try:
            with httpx.Client(base_url=handle.url, timeout=60) as c:
                results.append(c.post("/v1/completions", json=body))
        except httpx.HTTPError as e:
            results.append(e)

    reader = threading.Thread(target=stream)
    reader.start()
    assert first.wait(60), handle.log_tail()
    pool = ThreadPoolExecutor(12)  # 8 run, the rest wait in the queue
    for k in range(12):
        pool.submit(plain, k)
    time.sleep(2.0)
    cores = children(proc.pid)
    assert cores, "no engine-core process found"
    t0 = time.monotonic()
    for pid in cores:
        os.kill(pid, signal.SIGKILL)
    reader.join(30)
    pool.shutdown(wait=True)
    assert not reader.is_alive() and time.monotonic() - t0 < 30
    assert stream_events[-1] == "data: [DONE]"
    assert "engine core died" in stream_events[-2] and '"code": 503' in stream_events[-2]
    assert len(results) == 12
    for r in results:
        assert isinstance(r, httpx.Response), r  # an answer, never a reset connection
        assert r.status_code == 503, r.text
        assert r.headers.get("retry-after") and "engine" in r.json()["message"]
    assert proc.wait(30) == 1, handle.log_tail()
    assert time.monotonic() - t0 < 30
    assert "the engine core died (killed by SIGKILL)" in handle.log_tail()
    assert all(gone(pid) for pid in cores)


def test_sigterm_while_loading_exits_0_and_leaves_no_core(tmp_path) -> None:
    handle, proc = _launch([], tmp_path / "server.log")  # full warm-up: a long load
    try:
        deadline = time.monotonic() + 120
        while not children(proc.pid):  # its engine core is loading
            assert proc.poll() is None and time.monotonic() < deadline, handle.log_tail()
            time.sleep(0.2)
        assert httpx.get(handle.url + "/health", timeout=10).status_code == 503
        cores = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, handle.log_tail()
        deadline = time.monotonic() + 15
        while not all(gone(pid) for pid in cores):
            assert time.monotonic() < deadline, "the engine core outlived its server"
            time.sleep(0.2)
    finally:
        _stop(proc)
