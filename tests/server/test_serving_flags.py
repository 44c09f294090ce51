"""The flags that change how the server serves, on ONE extra server started with all of them:
--api-key, --enable-metrics, --max-queued-requests (with one running slot, so the queue fills
fast), --allow-auto-truncate, --reasoning-parser qwen3 and a short --graceful-shutdown-timeout. The last test stops it
with SIGTERM and checks that an open stream ends properly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from .conftest import REPO, ServerHandle, _free_port, _stop, _wait_healthy

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
LONG_BODY = {"prompt": "Once upon a time", "max_tokens": 12, "ignore_eos": True,
             "temperature": 0.0}

pytestmark = pytest.mark.skipif(bool(os.environ.get("JAXENGINE_TEST_SERVER_URL")),
                                reason="starts its own server with special flags")


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle,
                                                                        subprocess.Popen]]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("flagged") / "server.log"
    handle = ServerHandle(f"http://127.0.0.1:{port}", log_path)
    cmd = [sys.executable, "-m", "jaxengine.serve", "--host", "127.0.0.1", "--port", str(port),
           "--skip-server-warmup", "--context-length", "256", "--api-key", KEY, "--enable-metrics",
           "--max-running-requests", "1", "--max-queued-requests", "1",
           "--allow-auto-truncate", "--reasoning-parser", "qwen3",
           "--graceful-shutdown-timeout", "1"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        STARTING.update(_first_answers(handle.url, proc))
        _wait_healthy(handle.url, proc, time.monotonic() + 600, handle)
        yield handle, proc
    finally:
        _stop(proc)


STARTING: dict[str, httpx.Response] = {}


def _first_answers(url: str, proc: subprocess.Popen) -> dict[str, httpx.Response]:
    """The first answers of the probes, while the model is still loading."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return {path: httpx.get(url + path, headers=AUTH, timeout=5)
                    for path in ("/health", "/health_generate", "/v1/models")}
        except httpx.TransportError:
            time.sleep(0.2)
    return {}


@pytest.fixture(scope="module")
def http(flagged) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=flagged[0].url, timeout=120, headers=AUTH) as c:
        yield c


def test_probes_answer_503_while_the_model_loads(flagged) -> None:
    assert {path: r.status_code for path, r in STARTING.items()} == {
        "/health": 503, "/health_generate": 503, "/v1/models": 503}
    assert STARTING["/v1/models"].headers["retry-after"] == "5"
    assert "starting" in STARTING["/v1/models"].json()["message"]


# -- --api-key -------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
    ("POST", "/generate"), ("GET", "/get_server_info"), ("GET", "/health_generate"),
    ("POST", "/v1/tokenize"), ("POST", "/abort_request"), ("GET", "/no-such-route")])
def test_every_route_needs_the_key(flagged, method: str, path: str) -> None:
    url = flagged[0].url + path
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                    {"Authorization": f"Basic {KEY}"}):
        response = httpx.request(method, url, headers=headers, json={})
        assert response.status_code == 401, (path, headers)
        body = response.json()
        assert body["object"] == "error" and body["type"] == "AuthenticationError"


def test_probes_are_open_and_the_key_works(flagged, http: httpx.Client) -> None:
    url = flagged[0].url
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 200
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    out = client.completions.create(model="m", prompt="Hello", max_tokens=2)
    assert out.usage.completion_tokens == 2
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
    assert http.get("/get_server_info").json()["api_key"] == "<set>"  # never echoed
    for scheme in ("bearer", "BEARER", "Bearer "):  # the scheme is case-insensitive
        response = httpx.get(f"{url}/v1/models", headers={"Authorization": f"{scheme} {KEY}"})
        assert response.status_code == 200, scheme


# -- --allow-auto-truncate -------------------------------------------------------------------

def test_long_prompts_are_truncated_not_refused(http: httpx.Client) -> None:
    long = "hello " * 400  # past the 256-token context
    out = http.post("/v1/completions", json={"prompt": long, "max_tokens": 4})
    assert out.status_code == 200, out.text
    usage = out.json()["usage"]
    assert usage["prompt_tokens"] <= 255 and usage["prompt_tokens"] + usage[
        "completion_tokens"] <= 256
    chat = http.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": long}], "max_tokens": 2})
    assert chat.status_code == 200, chat.text
    native = http.post("/generate", json={"text": long, "sampling_params": {
        "max_new_tokens": 2}})
    assert native.status_code == 200, native.text


def test_truncation_leaves_room_for_max_tokens(http: httpx.Client) -> None:
    long = "hello " * 400
    out = http.post("/v1/completions", json={"prompt": long, "max_tokens": 40,
                                             "ignore_eos": True, "temperature": 0.0})
    assert out.status_code == 200, out.text
    usage = out.json()["usage"]
    assert usage["completion_tokens"] == 40 and usage["prompt_tokens"] == 256 - 40
    native = http.post("/generate", json={"text": long, "sampling_params": {
        "max_new_tokens": 30, "ignore_eos": True}}).json()
    assert native["meta_info"]["completion_tokens"] == 30
    assert native["meta_info"]["prompt_tokens"] == 256 - 30
    chat = http.post("/v1/chat/completions", json={  # no max_tokens: a quarter is kept
        "messages": [{"role": "user", "content": long}], "ignore_eos": True,
        "max_tokens": None}).json()
    assert chat["usage"]["prompt_tokens"] == 256 - 256 // 4


# -- --max-queued-requests -------------------------------------------------------------------

def test_a_full_queue_answers_503_with_retry_after(http: httpx.Client) -> None:
    def post(_: int) -> httpx.Response:
        return http.post("/v1/completions", json=LONG_BODY)

    with ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(post, range(5)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and 503 in codes, codes  # one runs, one waits, others wait not
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["type"] == "ServiceUnavailableError"
    assert "queue is full" in refused.json()["message"]
    assert post(0).status_code == 200  # and it serves again once the queue drains
    batch = http.post("/generate", json={"text": ["a", "b", "c", "d"], "sampling_params": {
        "max_new_tokens": 64, "ignore_eos": True}})
    assert batch.status_code == 503, batch.text  # one refused prompt fails the batch at once
    assert http.get("/get_server_info").json()["num_queue_reqs"] == 0  # the others stopped


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/completions", {**LONG_BODY, "stream": True}),
    ("/v1/completions", {**LONG_BODY, "stream": True, "n": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12,
                              "ignore_eos": True, "stream": True}),
    ("/generate", {"text": "Once upon a time", "stream": True,
                   "sampling_params": {"max_new_tokens": 12, "ignore_eos": True}}),
])
def test_a_full_queue_refuses_streams_with_503(http: httpx.Client, path: str, body: dict) -> None:
    """Streamed requests past the queue get the same 503 + Retry-After as plain ones, before
    any byte of the stream."""
    def post(_: int) -> httpx.Response:
        return http.post(path, json=body)

    with ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(post, range(5)))
    codes = sorted(r.status_code for r in responses)
    assert 503 in codes and 200 in codes and set(codes) <= {200, 503}, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["type"] == "ServiceUnavailableError", refused.text
    assert http.get("/get_server_info").json()["kv_cache_integrity"] == "ok"


# -- --reasoning-parser ----------------------------------------------------------------------

THINK = {"messages": [{"role": "user", "content": "What is two plus two?"}], "max_tokens": 40,
         "temperature": 0.0, "regex": "<think>[a-z]{2,8}( [a-z]{2,8}){1,3}</think>Four[.!]"}


def _streamed_parts(http: httpx.Client, body: dict) -> tuple[str, str]:
    reasoning = content = ""
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    reasoning += choice["delta"].get("reasoning_content") or ""
                    content += choice["delta"].get("content") or ""
    return reasoning, content


def test_reasoning_is_split_from_the_answer(http: httpx.Client) -> None:
    """A grammar forces <think>...</think>Four.: the thinking is reasoning_content, the rest
    content, streamed as not; separate_reasoning false keeps the tags in content."""
    message = http.post("/v1/chat/completions", json=THINK).json()["choices"][0]["message"]
    reasoning, content = message["reasoning_content"], message["content"]
    assert reasoning and "<" not in reasoning and content in ("Four.", "Four!")
    assert _streamed_parts(http, THINK) == (reasoning, content)
    whole = http.post("/v1/chat/completions", json={**THINK, "separate_reasoning": False})
    message = whole.json()["choices"][0]["message"]
    assert message["content"] == f"<think>{reasoning}</think>{content}"
    assert "reasoning_content" not in message


# -- --enable-metrics ------------------------------------------------------------------------

def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_names_labels_and_values(flagged, http: httpx.Client) -> None:
    http.post("/v1/completions", json={**LONG_BODY, "max_tokens": 6})
    response = httpx.get(f"{flagged[0].url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    model = http.get("/get_model_info").json()["served_model_name"]

    def value(name: str) -> float:
        return samples[f'jaxengine:{name}{{model_name="{model}"}}']

    for gauge in ("num_running_reqs", "num_queue_reqs", "num_used_tokens", "token_usage",
                  "cache_hit_rate", "gen_throughput"):
        assert value(gauge) >= 0.0
    assert value("max_total_num_tokens") > 0
    assert value("prompt_tokens_total") > 0 and value("generation_tokens_total") >= 6
    assert value("num_requests_total") >= 1 and value("cached_tokens_total") >= 0
    assert value("num_aborted_requests_total") >= 1  # the refused requests above
    for hist in ("time_to_first_token_seconds", "inter_token_latency_seconds",
                 "e2e_request_latency_seconds", "queue_time_seconds"):
        assert value(f"{hist}_count") >= 1, hist
        assert value(f"{hist}_sum") > 0, hist
        assert f'jaxengine:{hist}_bucket{{le="+Inf",model_name="{model}"}}' in samples
    assert "# TYPE jaxengine:prompt_tokens_total counter" in response.text
    assert "# TYPE jaxengine:time_to_first_token_seconds histogram" in response.text


# -- SIGTERM (last: it stops the server) ---------------------------------------------------------

def test_sigterm_ends_open_streams_and_exits(flagged) -> None:
    handle, proc = flagged
    events: list[str] = []
    started = threading.Event()

    def stream() -> None:
        body = {**LONG_BODY, "max_tokens": 200, "stream": True}
        with httpx.Client(base_url=handle.url, timeout=60, headers=AUTH) as c, \
                c.stream("POST", "/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(line)
                    started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(60), handle.log_tail()
    queued: list[httpx.Response] = []  # waits behind the stream (one running slot)
    waiter = threading.Thread(target=lambda: queued.append(httpx.post(
        f"{handle.url}/v1/completions", json=LONG_BODY, headers=AUTH, timeout=60)))
    waiter.start()
    time.sleep(0.5)
    with httpx.Client(base_url=handle.url, timeout=10) as probe:  # one keep-alive connection
        assert probe.get("/health").status_code == 200
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while probe.get("/health").status_code == 200:  # draining: the probe says so
            assert time.monotonic() < deadline, "/health still said 200 while draining"
            time.sleep(0.05)
    reader.join(30)
    waiter.join(30)
    assert not reader.is_alive() and not waiter.is_alive()
    assert events[-1] == "data: [DONE]"
    assert "shutting down" in events[-2] and '"code": 503' in events[-2]
    assert queued[0].status_code == 503 and queued[0].headers["retry-after"], queued[0].text
    assert proc.wait(30) == 0, handle.log_tail()  # a drained stop is a success
    assert "aborted 2 request(s)" in handle.log_tail()
