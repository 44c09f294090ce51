"""Inputs a hostile client or a careless one sends: each gets a clear 4xx, never a 500 or a
hang, and the server goes on serving. Runs against the shared test server (context 2048).
Every request has a hard timeout, so that a regression fails instead of stalling the suite."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .test_errors import assert_error, assert_still_serving

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CHAT = {"messages": QUESTION, "max_tokens": 4}
COMPLETION = {"prompt": "Hello", "max_tokens": 4}
TIMEOUT = 60


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        yield c


# -- strict types: OpenAI answers 400, not a coerced value ---------------------------------------

@pytest.mark.parametrize(("path", "base", "field", "value"), [
    ("/v1/chat/completions", CHAT, "temperature", "0.5"),
    ("/v1/chat/completions", CHAT, "max_tokens", "8"),
    ("/v1/chat/completions", CHAT, "stream", "yes"),
    ("/v1/chat/completions", CHAT, "n", "2"),
    ("/v1/chat/completions", CHAT, "n", 2.0),
    ("/v1/chat/completions", CHAT, "logprobs", "yes"),
    ("/v1/chat/completions", CHAT, "logprobs", 1),
    ("/v1/chat/completions", CHAT, "seed", 2**64),
    ("/v1/completions", COMPLETION, "max_tokens", "8"),
    ("/v1/completions", COMPLETION, "echo", "true"),
    ("/v1/completions", COMPLETION, "top_p", "1"),
    ("/v1/completions", COMPLETION, "max_tokens", 2**64),
])
def test_strings_are_not_numbers_or_booleans(http, path, base, field, value) -> None:
    assert_error(http.post(path, json={**base, field: value}), param=field)
    assert_still_serving(http)


@pytest.mark.parametrize("raw", ["1e999", "Infinity", "-Infinity", "NaN"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "frequency_penalty"])
def test_numbers_must_be_finite(http, raw: str, field: str) -> None:
    body = json.dumps(COMPLETION)[:-1] + f', "{field}": {raw}}}'
    response = http.post("/v1/completions", content=body,
                         headers={"content-type": "application/json"})
    assert_error(response, param=field)
    native = json.dumps({"text": "hi", "sampling_params": {"max_new_tokens": 2}})
    native = native.replace('"max_new_tokens": 2', f'"max_new_tokens": 2, "{field}": {raw}')
    assert_error(http.post("/generate", content=native,
                           headers={"content-type": "application/json"}), param=field)
    assert_still_serving(http)


@pytest.mark.parametrize("params", [{"max_new_tokens": 2**64}, {"max_new_tokens": 2**31},
                                    {"min_new_tokens": 2**40}, {"seed": 2**70},
                                    {"temperature": "0.5"}, {"ignore_eos": "yes"}])
def test_generate_sampling_params_are_strict(http, params: dict) -> None:
    assert_error(http.post("/generate", json={"text": "hi", "sampling_params": params}),
                 param=next(iter(params)))


def test_null_means_the_default(http) -> None:
    body = {**CHAT, "temperature": None, "top_p": None, "n": None, "stream": None,
            "stop": None, "presence_penalty": None, "logprobs": None, "seed": None}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 1


# -- bytes and nesting the parsers choke on ----------------------------------------------------

@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi \ud800 there"}],
                              "max_tokens": 2}),
    ("/v1/completions", {"prompt": "\udfff", "max_tokens": 2}),
    ("/v1/completions", {"prompt": ["fine", "bad \ud83d"], "max_tokens": 2}),
    ("/generate", {"text": "\ud800", "sampling_params": {"max_new_tokens": 2}}),
    ("/v1/tokenize", {"prompt": "x\ud800"}),
    ("/v1/chat/completions", {**CHAT, "stop": ["\ud800"]}),
])
def test_lone_surrogates_are_a_400(http, path: str, body: dict) -> None:
    raw = json.dumps(body)  # keeps "\ud800" as an escape, as a hostile client sends it
    assert "\\ud8" in raw or "\\udf" in raw
    response = http.post(path, content=raw, headers={"content-type": "application/json"})
    assert "surrogate" in assert_error(response, param=None)["message"]
    assert_still_serving(http)


def test_surrogate_pairs_are_fine(http) -> None:
    raw = json.dumps({"prompt": "Emoji: \U0001f600", "max_tokens": 2})  # "\ud83d\ude00"
    assert "\\ud83d\\ude00" in raw
    response = http.post("/v1/completions", content=raw,
                         headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


def _nested_schema(depth: int) -> str:
    return '{"type": "array", "items": ' * depth + '{"type": "string"}' + "}" * depth


@pytest.mark.parametrize("depth", [200, 5000, 100_000])
def test_deep_nesting_is_a_400(http, depth: int) -> None:
    schema = _nested_schema(depth)
    body = ('{"prompt": "x", "max_tokens": 2, "response_format": {"type": "json_schema", '
            '"json_schema": {"name": "deep", "schema": ' + schema + "}}}")
    response = http.post("/v1/completions", content=body,
                         headers={"content-type": "application/json"})
    assert "nests deeper" in assert_error(response, param=None)["message"]
    # The same schema as a JSON string inside /generate's sampling params.
    native = {"text": "x", "sampling_params": {"max_new_tokens": 2, "json_schema": schema}}
    assert_error(http.post("/generate", json=native), param=None)
    assert_still_serving(http)


def test_a_body_that_is_not_utf8_is_a_400(http) -> None:
    for encoding in ("utf-16", "utf-32", "latin-1"):
        raw = json.dumps({"prompt": "café", "max_tokens": 2}, ensure_ascii=False).encode(encoding)
        response = http.post("/v1/completions", content=raw,
                             headers={"content-type": "application/json"})
        assert "UTF-8" in assert_error(response, param=None)["message"], encoding
    assert_still_serving(http)


def test_a_body_past_the_limit_is_a_413(server) -> None:
    prompt = "a " * (5 << 20)  # 10 MiB, past the 8 MiB limit
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        response = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": 1})
        assert response.status_code == 413
        assert response.json()["type"] == "RequestTooLargeError"
        assert response.headers["connection"] == "close"
        assert_still_serving(c)  # on a new connection


def test_tokenizing_a_huge_prompt_does_not_freeze_other_routes(server, http) -> None:
    """A 7 MB prompt takes seconds to tokenize: off the event loop, so /health and other
    requests answer meanwhile (it then gets its 400: far past the context)."""
    results: dict[str, httpx.Response] = {}

    def big() -> None:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            results["big"] = c.post("/v1/tokenize", json={"prompt": "word " * (1_400_000)})

    worker = threading.Thread(target=big)
    worker.start()
    time.sleep(0.3)
    slowest = 0.0
    while worker.is_alive():
        t0 = time.monotonic()
        assert http.get("/health").status_code == 200
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(0.1)
    worker.join()
    assert results["big"].status_code == 200 and results["big"].json()["count"] > 1_000_000
    assert slowest < 2.0, f"/health took {slowest:.1f} s while a prompt was tokenized"


# -- request ids ---------------------------------------------------------------------------

def test_duplicate_rids_in_a_batch_are_a_400(http) -> None:
    body = {"text": ["hi", "hello"], "rid": ["a", "a"], "sampling_params": {"max_new_tokens": 3}}
    assert "more than one prompt" in assert_error(http.post("/generate", json=body),
                                                  param="rid")["message"]
    body["rid"] = "one-for-all"
    assert_error(http.post("/generate", json=body), param="rid")
    assert_still_serving(http)


def test_two_clients_with_the_same_rid_get_their_own_answers(http) -> None:
    prompts = ["The capital of France is", "One, two, three, four,"]

    def ask(prompt: str, rid: str | None) -> dict:
        body = {"text": prompt, "sampling_params": {"max_new_tokens": 24, "temperature": 0.0,
                                                    "ignore_eos": True}}
        if rid is not None:
            body["rid"] = rid
        response = http.post("/generate", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    alone = [ask(p, None)["output_ids"] for p in prompts]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda p: ask(p, "shared-rid"), prompts))
    assert [out["output_ids"] for out in together] == alone
    assert all(out["meta_info"]["id"] == "shared-rid" for out in together)


def test_a_reused_rid_after_an_abort_runs_normally(http) -> None:
    body = {"text": "Count to one hundred:", "rid": "retry-me", "stream": True,
            "sampling_params": {"max_new_tokens": 64, "ignore_eos": True}}
    with http.stream("POST", "/generate", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # the client gives up after the first chunk
    body.update(stream=False, sampling_params={"max_new_tokens": 8, "ignore_eos": True})
    response = http.post("/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["meta_info"]["completion_tokens"] == 8
    info = http.get("/get_server_info").json()
    assert info["kv_cache_integrity"] == "ok"


# -- sizes and probes ------------------------------------------------------------------------

def test_batches_are_capped(http) -> None:
    response = http.post("/v1/completions", json={"prompt": ["hi"] * 1025, "max_tokens": 1})
    assert "at most 1024" in assert_error(response, param="prompt")["message"]
    response = http.post("/v1/completions", json={"prompt": ["hi"] * 600, "n": 2,
                                                  "max_tokens": 1})
    assert_error(response, param="prompt")
    response = http.post("/generate", json={"input_ids": [[1, 2]] * 1025})
    assert_error(response, param="input_ids")
    assert_still_serving(http)


def test_health_answers_head_and_options(http) -> None:
    head = http.head("/health")
    assert head.status_code == 200 and head.content == b""
    options = http.options("/health")
    assert options.status_code == 204 and "HEAD" in options.headers["allow"]
    assert http.head("/health_generate").status_code == 200
