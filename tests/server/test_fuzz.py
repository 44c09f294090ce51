"""Fuzzing the OpenAI endpoints from the server's own OpenAPI schema (schemathesis strategies,
driven by hypothesis): valid bodies and bodies that break the schema on purpose (wrong types,
out-of-range values, missing fields). No answer may be a 5xx, and the server must still serve a
normal request afterwards. The number of examples is bounded so this stays a few seconds."""

from __future__ import annotations

import json
import math

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

# Valid requests must stay cheap on a CPU: cap what sets the amount of work. Values that are
# invalid (negative, wrong type) are left alone: they are what the 400 paths are for.
CAPS = {"max_tokens": 4, "max_completion_tokens": 4, "min_tokens": 2, "n": 2,
        "top_logprobs": 2, "best_of": 2}
MAX_BATCH = 3


def _bounded(body: object) -> object:
    if not isinstance(body, dict):
        return body
    body = dict(body)
    for key, cap in CAPS.items():
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            body[key] = cap
    if body.get("max_tokens") is None:  # chat's default is the rest of the context
        body["max_tokens"] = CAPS["max_tokens"]
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], list | str):
        body["prompt"] = prompt[:MAX_BATCH]
    return body


def _json_or_none(body: object) -> str | None:
    try:
        return json.dumps(body, allow_nan=False)
    except (TypeError, ValueError):
        return None  # not representable as JSON: nothing a client could send


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_fuzzed_requests_never_get_a_5xx(server, http: httpx.Client, path: str) -> None:
    documented = http.get("/openapi.json").json()["paths"][path]["post"]["responses"]
    assert "400" in documented and "422" not in documented  # what the server really answers
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operation = schema[path]["POST"]
    cases = (operation.as_strategy(GenerationMode.POSITIVE)
             | operation.as_strategy(GenerationMode.NEGATIVE))
    seen: dict[int, int] = {}

    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def check(case) -> None:
        content = _json_or_none(_bounded(case.body))
        if content is None:
            return
        response = http.post(path, content=content,
                             headers={"content-type": "application/json"}, timeout=60)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (content, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert body["object"] == "error" and body["code"] == response.status_code, body

    check()
    assert 400 in seen and 200 in seen, seen  # both kinds were exercised
    out = http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2})
    assert out.status_code == 200 and out.json()["usage"]["completion_tokens"] >= 1
    assert math.isfinite(http.get("/get_server_info").json()["num_running_reqs"])
