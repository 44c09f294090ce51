"""Every bad request gets a 400 with the OpenAI-style error body, never a 422 or a 500, and the
server keeps answering afterwards. Runs against the same real server as test_server.py."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys

import httpx
import openai
import pytest

GREEDY = {"temperature": 0.0}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def assert_error(response: httpx.Response, status: int = 400, param: str | None = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["object"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    assert body["type"] == {400: "BadRequestError", 404: "NotFoundError"}.get(status, body["type"])
    assert body["code"] == status
    assert "param" in body
    if param != "":
        assert body["param"] == param, body
    return body


def assert_still_serving(http: httpx.Client) -> None:
    response = http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2, **GREEDY})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1


LONG = "hello " * 5000  # longer than the 2048-token context the tests start the server with
CHAT_ERRORS = [
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].type"),
    ({"messages": QUESTION, "max_tokens": 0}, "max_tokens"),
    ({"messages": QUESTION, "max_tokens": -5}, "max_tokens"),
    ({"messages": QUESTION, "temperature": -1}, "temperature"),
    ({"messages": QUESTION, "top_p": 0}, "top_p"),
    ({"messages": QUESTION, "top_p": 1.5}, "top_p"),
    ({"messages": QUESTION, "n": 0}, "n"),
    ({"messages": QUESTION, "n": 1000}, "n"),
    ({"messages": QUESTION, "top_k": -7}, "top_k"),
    ({"messages": QUESTION, "presence_penalty": 3}, "presence_penalty"),
    ({"messages": QUESTION, "stop": [""]}, "stop"),
    ({"messages": QUESTION, "temperature": "hot"}, "temperature"),
    ({"messages": QUESTION, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"messages": QUESTION, "top_logprobs": 2}, "top_logprobs"),
    ({"messages": QUESTION, "logit_bias": {str(i): 1 for i in range(65)}}, "logit_bias"),
    ({"messages": [{"role": "user", "content": LONG}]}, "messages"),
    ({"messages": [{"role": "user", "content": LONG}], "stream": True}, "messages"),
    ({"messages": QUESTION, "max_tokens": 100_000}, "max_tokens"),
    ({"messages": QUESTION, "min_tokens": 2, "stop_token_ids": [10**12]}, "stop_token_ids"),
    ({"messages": QUESTION, "min_tokens": 2, "stop_token_ids": list(range(100, 200))}, None),
]
COMPLETION_ERRORS = [
    ({}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [10**9]}, "prompt"),
    ({"prompt": [1] * 5000}, "prompt"),
    ({"prompt": "hi", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "hi", "suffix": "x"}, "suffix"),
    ({"prompt": "hi", "min_p": 2}, "min_p"),
    ({"prompt": "hi", "logprobs": 6}, "logprobs"),
    ({"prompt": LONG, "stream": True}, "prompt"),
]
GENERATE_ERRORS = [
    ({"sampling_params": {}}, "text"),
    ({"text": "hi", "input_ids": [1]}, "text"),
    ({"text": "hi", "sampling_params": {"temperature": -1}}, "temperature"),
    ({"text": "hi", "sampling_params": {"no_such_param": 1}}, None),
    ({"text": "hi", "sampling_params": {"max_new_tokens": -1}}, "max_new_tokens"),
    ({"text": LONG}, None),  # the engine's own ValueError (it tokenizes `text`)
    ({"text": LONG, "stream": True}, None),
    ({"text": ""}, None),
    ({"text": "hi", "sampling_params": {"stop_token_ids": [10**12]}}, "stop_token_ids"),
    ({"text": "hi", "sampling_params": {"temperature": "hot"}}, "temperature"),
    ({"text": "hi", "sampling_params": {"stop_token_ids": 5}}, "stop_token_ids"),
    ({"text": "hi", "sampling_params": {"n": 2}}, "sampling_params.n"),
    ({"text": ["a", "b"], "sampling_params": [{}]}, "sampling_params"),
    ({"text": "hi", "return_logprob": True, "logprob_start_len": -2}, "logprob_start_len"),
    ({"text": "hi", "sampling_params": {"stop_regex": "(unclosed"}}, "stop_regex"),
    ({"text": "hi", "image_data": "data:image/png;base64,AAAA"}, "image_data"),
    ({"text": "hi", "lora_path": "adapter"}, "lora_path"),
    ({"text": "hi", "return_hidden_states": True}, "return_hidden_states"),
    ({"text": "hi", "sampling_params": {"stop_regex": [3]}}, "stop_regex"),
    ({"text": ["a", "b"], "return_logprob": True, "logprob_start_len": [0]},
     "logprob_start_len"),
    ({"text": "hi", "return_logprob": True, "top_logprobs_num": 21}, "top_logprobs_num"),
    ({"text": "hi", "sampling_params": {"logit_bias": {"x": 1}}}, "logit_bias"),
    ({"text": "hi", "sampling_params": {"logit_bias": {"99999999": 1}}}, None),
]


@pytest.mark.parametrize(("body", "param"), CHAT_ERRORS)
def test_chat_bad_request(http: httpx.Client, body: dict, param: str) -> None:
    assert_error(http.post("/v1/chat/completions", json=body), param=param)
    assert_still_serving(http)


@pytest.mark.parametrize(("body", "param"), COMPLETION_ERRORS)
def test_completion_bad_request(http: httpx.Client, body: dict, param: str) -> None:
    assert_error(http.post("/v1/completions", json=body), param=param)
    assert_still_serving(http)


@pytest.mark.parametrize(("body", "param"), GENERATE_ERRORS)
def test_generate_bad_request(http: httpx.Client, body: dict, param: str | None) -> None:
    assert_error(http.post("/generate", json=body), param=param)
    assert_still_serving(http)


@pytest.mark.parametrize(("content", "content_type"), [
    (b'{"messages": [', "application/json"),
    (b'{"messages": []}', "text/plain"),
    (b'{"messages": []}', None),
    (b"[1, 2]", "application/json"),
    (b"", "application/json"),
])
def test_malformed_body(http: httpx.Client, content: bytes, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = http.post("/v1/chat/completions", content=content, headers=headers)
    assert_error(response, param=None)
    assert_still_serving(http)


def test_openai_client_sees_bad_request(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=QUESTION, max_tokens=8,
                                       temperature=-2)
    assert info.value.param == "temperature" and info.value.type == "BadRequestError"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": LONG}],
                                       stream=True)
    assert_still_serving(http)


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing-here"), status=404)
    response = http.get("/v1/chat/completions")
    assert response.status_code == 405 and response.json()["object"] == "error"
    assert_still_serving(http)


def test_client_disconnects_mid_stream(server, http: httpx.Client) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 32, "ignore_eos": True,
            "stream": True, **GREEDY}
    with httpx.Client(base_url=server.url, timeout=180) as other:
        with other.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            next(response.iter_lines())
        # the connection closes here, after one chunk; the engine request must be aborted
    with contextlib.suppress(httpx.TimeoutException):  # a non-streaming client gives up
        httpx.post(f"{server.url}/v1/completions", json={**body, "stream": False},
                   timeout=0.05)
    assert_still_serving(http)


def test_serve_fails_fast_on_a_busy_port() -> None:
    """The port is bound before the model loads: a taken port is an error in seconds."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "jaxengine.serve", "--host", "127.0.0.1",
                               "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
