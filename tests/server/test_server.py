"""The HTTP server, end to end: the real `python -m jaxengine.serve` on the default model,
driven by the real `openai` client and by httpx. max_tokens stays small: CPUs are slow."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

GREEDY = {"temperature": 0.0}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def sse_events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE response, in order ([DONE] included)."""
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


# -- info endpoints --------------------------------------------------------------------------

def test_health(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200


def test_health_generate_and_version(http: httpx.Client) -> None:
    assert http.get("/health_generate").status_code == 200
    assert http.get("/version").json()["version"]


def test_get_model_info(model_info: dict) -> None:
    assert model_info["is_generation"] is True
    assert model_info["context_length"] > 0 and model_info["vocab_size"] > 0
    for key in ("model_path", "served_model_name", "architecture"):
        assert key in model_info


def test_get_server_info(http: httpx.Client) -> None:
    response = http.get("/get_server_info")
    assert response.status_code == 200
    assert isinstance(response.json(), dict)


def test_models_list_and_retrieve(client: openai.OpenAI, model_name: str) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [model_name]
    assert models[0].owned_by == "jaxengine" and models[0].object == "model"
    assert client.models.retrieve(model_name).id == model_name


def test_models_retrieve_unknown_is_404(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"
    body = http.get("/v1/models/no-such-model").json()
    assert body["object"] == "error" and body["code"] == "model_not_found"


# -- chat ------------------------------------------------------------------------------------

def test_chat_answers_paris(client: openai.OpenAI, model_name: str) -> None:
    out = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=32,
                                         temperature=0)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert len(out.choices) == 1
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = out.usage
    assert 0 < usage.completion_tokens <= 32
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens >= 0


def test_chat_content_parts_system_and_any_model_name(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]
    out = client.chat.completions.create(model="whatever-name", messages=messages,
                                         max_tokens=8, temperature=0)
    assert out.choices[0].message.content
    assert out.model == "whatever-name"


def test_chat_stream_matches_non_stream(client: openai.OpenAI, model_name: str) -> None:
    full = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=16,
                                          temperature=0)
    stream = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=16,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and
               c.choices[0].finish_reason]
    assert reasons == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_chat_stream_raw_sse_ends_with_done(http: httpx.Client) -> None:
    body = {"messages": QUESTION, "max_tokens": 4, "stream": True, **GREEDY}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["choices"] for c in chunks)  # no usage chunk unless asked for
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_chat_n2(client: openai.OpenAI, model_name: str) -> None:
    out = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=8,
                                         n=2, temperature=0.8, seed=1)
    assert sorted(c.index for c in out.choices) == [0, 1]
    assert all(c.message.content is not None for c in out.choices)
    assert out.usage.completion_tokens <= 16


def test_chat_n2_stream(client: openai.OpenAI, model_name: str) -> None:
    stream = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=6,
                                            n=2, temperature=0.8, stream=True)
    finished = [c.choices[0].index for c in stream if c.choices and c.choices[0].finish_reason]
    assert sorted(finished) == [0, 1]


def test_concurrent_chats(client: openai.OpenAI, model_name: str) -> None:
    def ask(_: int) -> str:
        out = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=8,
                                             temperature=0)
        return out.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert len(set(answers)) == 1  # greedy: the batch must not change the answer


# -- completions -----------------------------------------------------------------------------

def test_completion(client: openai.OpenAI, model_name: str) -> None:
    out = client.completions.create(model=model_name, prompt="The capital of France is",
                                    max_tokens=8, temperature=0)
    assert out.object == "text_completion" and out.id.startswith("cmpl-")
    assert out.choices[0].text and out.choices[0].finish_reason in ("stop", "length")
    assert 0 < out.usage.completion_tokens <= 8


def test_completion_default_max_tokens_is_16(http: httpx.Client) -> None:
    body = {"prompt": "Once upon a time", "ignore_eos": True, **GREEDY}
    out = http.post("/v1/completions", json=body).json()
    assert out["usage"]["completion_tokens"] == 16
    assert out["choices"][0]["finish_reason"] == "length"


def test_completion_stream_matches_non_stream(client: openai.OpenAI, model_name: str) -> None:
    kw = {"model": model_name, "prompt": "The capital of France is", "max_tokens": 8,
          "temperature": 0}
    full = client.completions.create(**kw)
    chunks = list(client.completions.create(**kw, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completion_list_prompt(client: openai.OpenAI, model_name: str) -> None:
    prompts = ["The capital of France is", "One, two, three,"]
    out = client.completions.create(model=model_name, prompt=prompts, max_tokens=4,
                                    temperature=0)
    assert [c.index for c in out.choices] == [0, 1]
    single = [client.completions.create(model=model_name, prompt=p, max_tokens=4,
                                        temperature=0) for p in prompts]
    assert [c.text for c in out.choices] == [s.choices[0].text for s in single]
    assert out.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in single)


def test_completion_token_id_prompts(client: openai.OpenAI, model_name: str) -> None:
    ids = [100, 200, 300, 400, 500]
    one = client.completions.create(model=model_name, prompt=ids, max_tokens=4, temperature=0)
    assert one.usage.prompt_tokens == len(ids) and len(one.choices) == 1
    two = client.completions.create(model=model_name, prompt=[ids, ids[:3]], max_tokens=4,
                                    temperature=0)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].text == one.choices[0].text


def test_completion_echo(client: openai.OpenAI, model_name: str) -> None:
    prompt = "The capital of France is"
    out = client.completions.create(model=model_name, prompt=prompt, max_tokens=4,
                                    temperature=0, echo=True)
    assert out.choices[0].text.startswith(prompt) and len(out.choices[0].text) > len(prompt)


def test_completion_seed_is_reproducible(http: httpx.Client) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 1.0, "seed": 1234}
    texts = [http.post("/v1/completions", json=body).json()["choices"][0]["text"]
             for _ in range(2)]
    assert texts[0] == texts[1]


def test_top_k_past_the_vocabulary_means_no_top_k(http: httpx.Client) -> None:
    # Regression: a top_k that does not fit int32 used to fail the whole engine step.
    body = {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 1.0, "seed": 7}
    texts = [http.post("/v1/completions", json={**body, "top_k": k}).json()["choices"][0]["text"]
             for k in (-1, 10**12)]
    assert texts[0] == texts[1]


def test_stop_strings_are_trimmed(http: httpx.Client) -> None:
    base = {"prompt": "Once upon a time", "max_tokens": 24, "ignore_eos": True, **GREEDY}
    text = http.post("/v1/completions", json=base).json()["choices"][0]["text"]
    words = [w for w in text.split() if w.isalpha()]
    assert len(words) >= 3, text
    stop = words[len(words) // 2]
    cut = text.index(stop)
    out = http.post("/v1/completions", json={**base, "stop": [stop]}).json()["choices"][0]
    assert out["text"] == text[:cut]
    assert out["finish_reason"] == "stop" and out["matched_stop"] == stop
    kept = http.post("/v1/completions", json={**base, "stop": stop, "no_stop_trim": True})
    assert kept.json()["choices"][0]["text"] == text[:cut + len(stop)]


# -- native /generate ------------------------------------------------------------------------

def test_generate(http: httpx.Client) -> None:
    body = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 8,
                                                                   "temperature": 0}}
    out = http.post("/generate", json=body).json()
    meta = out["meta_info"]
    assert out["text"] and len(out["output_ids"]) == meta["completion_tokens"] <= 8
    assert meta["finish_reason"]["type"] in ("stop", "length")
    assert meta["prompt_tokens"] > 0


def test_generate_stream_is_cumulative(http: httpx.Client) -> None:
    body = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 8,
                                                                   "temperature": 0}}
    full = http.post("/generate", json=body).json()
    with http.stream("POST", "/generate", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts = [c["text"] for c in chunks]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert texts[-1] == full["text"] and chunks[-1]["output_ids"] == full["output_ids"]
    assert chunks[-1]["meta_info"]["finish_reason"] is not None


def test_generate_input_ids_and_batch(http: httpx.Client) -> None:
    params = {"max_new_tokens": 4, "temperature": 0}
    one = http.post("/generate", json={"input_ids": [100, 200, 300],
                                       "sampling_params": params}).json()
    assert one["meta_info"]["prompt_tokens"] == 3
    batch = http.post("/generate", json={"text": ["Hello", "The capital of France is"],
                                         "sampling_params": params}).json()
    assert isinstance(batch, list) and len(batch) == 2 and all(o["text"] for o in batch)
