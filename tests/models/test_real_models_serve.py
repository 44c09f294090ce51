"""The real models by name through `python -m jaxengine.serve --model-path NAME` and the
`openai` client: greedy answers equal HF transformers' greedy generate on the same GGUF file
(`gguf_file=`, its own dequantization, chat template and EOS ids), prompt token counts
equal HF's rendering of the chat template, and an answer that ends at EOS ends there with
finish_reason "stop" and no special token in its text.

Qwen2.5-Coder (ChatML, <|im_end|> EOS, q/k/v biases, untied head, K-quants) is asked in
chat; Gemma-3-270M is a base model without a chat template, so it gets plain completions.
The 1.5B runs in the slow tier only (`make test-slow`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from jaxengine.models.known_models import known_model_path
from tests.server.conftest import REPO, ServerHandle, _free_port, _stop, _wait_healthy

NEW_TOKENS = 24
CHAT = ["Write a Python function that reverses a string.",
        "Answer with one word, yes or no: is 7 a prime number?"]
TEXT = ["The capital of France is", "def fibonacci(n):\n    "]


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[ServerHandle]:
    port = _free_port()
    handle = ServerHandle(f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("served") /
                          "server.log")
    cmd = [sys.executable, "-m", "jaxengine.serve", "--model-path", request.param, "--host",
           "127.0.0.1", "--port", str(port), "--skip-server-warmup", "--context-length", "512",
           "--max-total-tokens", "4096"]
    with open(handle.log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_healthy(handle.url, proc, time.monotonic() + 840, handle)
        yield handle
    finally:
        _stop(proc)


def hf_greedy(name: str, tokenizer, prompts: list[list[int]]) -> list[tuple[str, bool]]:
    """(answer text, whether it stopped at an EOS) of HF's greedy generate per prompt."""
    path = known_model_path(name)
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              dtype=torch.float32).eval()
    eos = hf.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    out = []
    for ids in prompts:
        with torch.inference_mode():
            new = hf.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=NEW_TOKENS,
                              pad_token_id=0)[0, len(ids):].tolist()
        out.append((tokenizer.decode(new, skip_special_tokens=True), bool(eos & set(new))))
    return out


def hf_tokenizer(name: str):
    path = known_model_path(name)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.parametrize("served", [
    "qwen2.5-coder-0.5b",
    pytest.param("qwen2.5-coder-1.5b", marks=pytest.mark.slow)], indirect=True)
def test_qwen_chat_equals_hf(served: ServerHandle):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="none")
    name = client.models.list().data[0].id
    answers = [client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": q}], temperature=0.0,
        max_tokens=NEW_TOKENS) for q in CHAT]
    tokenizer = hf_tokenizer(name)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                             add_generation_prompt=True, tokenize=True,
                                             return_dict=False) for q in CHAT]
    want = hf_greedy(name, tokenizer, prompts)
    for answer, ids, (text, stopped) in zip(answers, prompts, want, strict=True):
        choice = answer.choices[0]
        assert answer.usage.prompt_tokens == len(ids)  # the same ChatML rendering
        assert choice.message.content == text
        assert choice.finish_reason == ("stop" if stopped else "length")
        assert "<|im_end|>" not in choice.message.content
    assert any(stopped for _, stopped in want)  # one answer ends at EOS before the limit


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.mark.parametrize("served", ["qwen2.5-coder-0.5b"], indirect=True)
def test_qwen_tools_through_its_own_template(served: ServerHandle):
    """Qwen2.5's template takes `tools` natively: the prompt is HF's rendering with the tools,
    the calls it writes (<tool_call> JSON, an added token llguidance matches by id) come back
    as tool_calls, any call under `auto` is valid, and the tool result turn renders as HF
    renders it."""
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="none")
    name = client.models.list().data[0].id
    tokenizer = hf_tokenizer(name)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    calls = {}
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", "auto", named):
        answer = client.chat.completions.create(model=name, messages=ask, tools=[WEATHER],
                                                tool_choice=choice, temperature=0.0,
                                                max_tokens=48, parallel_tool_calls=False)
        want = tokenizer.apply_chat_template(ask, tools=[WEATHER], add_generation_prompt=True,
                                             tokenize=True, return_dict=False)
        assert answer.usage.prompt_tokens == len(want)
        message = answer.choices[0].message
        for call in message.tool_calls or []:
            assert call.function.name == "get_weather"
            assert isinstance(json.loads(call.function.arguments)["city"], str)
        calls[str(choice)] = message.tool_calls
    assert calls["required"] and calls[str(named)]  # (under auto this 0.5B model often
    # writes the JSON in a code fence instead)
    streamed: dict[int, list[str]] = {}
    for chunk in client.chat.completions.create(
            model=name, messages=ask, tools=[WEATHER], tool_choice="required", temperature=0.0,
            max_tokens=48, parallel_tool_calls=False, stream=True):
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            entry = streamed.setdefault(delta.index, ["", ""])
            entry[0] += delta.function.name or ""
            entry[1] += delta.function.arguments or ""
    assert [tuple(v) for v in streamed.values()] == \
        [(c.function.name, c.function.arguments) for c in calls["required"]]
    call = calls["required"][0]
    turn = [*ask, {"role": "assistant", "content": None,
                   "tool_calls": [call.model_dump(exclude_none=True)]},
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
    final = client.chat.completions.create(model=name, messages=turn, tools=[WEATHER],
                                           temperature=0.0, max_tokens=32)
    assert final.choices[0].message.content or final.choices[0].message.tool_calls
    hf_turn = [*ask, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": call.function.name,
                                          "arguments": json.loads(call.function.arguments)}}]},
        {"role": "tool", "content": "Sunny, 21 C"}]
    want = tokenizer.apply_chat_template(hf_turn, tools=[WEATHER], add_generation_prompt=True,
                                         tokenize=True, return_dict=False)
    assert final.usage.prompt_tokens == len(want)


@pytest.mark.parametrize("served", ["gemma3-270m"], indirect=True)
def test_gemma3_completions_equal_hf(served: ServerHandle):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="none")
    name = client.models.list().data[0].id
    answers = [client.completions.create(model=name, prompt=p, temperature=0.0,
                                         max_tokens=NEW_TOKENS) for p in TEXT]
    tokenizer = hf_tokenizer(name)
    prompts = [tokenizer(p).input_ids for p in TEXT]
    want = hf_greedy(name, tokenizer, prompts)
    for answer, ids, (text, stopped) in zip(answers, prompts, want, strict=True):
        assert answer.usage.prompt_tokens == len(ids)  # BOS included, as HF does
        assert answer.choices[0].text == text
        assert answer.choices[0].finish_reason == ("stop" if stopped else "length")
    # SGLang's native route encodes text prompts the same way
    native = httpx.post(served.url + "/generate", timeout=120, json={
        "text": TEXT, "sampling_params": {"temperature": 0.0, "max_new_tokens": NEW_TOKENS}})
    native.raise_for_status()
    for out, ids, (text, _) in zip(native.json(), prompts, want, strict=True):
        assert out["meta_info"]["prompt_tokens"] == len(ids)
        assert out["text"] == text
