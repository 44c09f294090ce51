"""Prefix caching as an OpenAI client sees it: cached_tokens in usage, /flush_cache."""

from __future__ import annotations

import threading

import httpx

SYSTEM = "You are a meticulous assistant who answers in one short sentence. " * 6


def _chat(client, model_name, question: str):
    return client.chat.completions.create(
        model=model_name, max_tokens=4, temperature=0,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])


def test_shared_system_prompt_is_reported_as_cached(client, model_name):
    first = _chat(client, model_name, "Name a fruit.")
    second = _chat(client, model_name, "Name a river.")
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= 64 and cached < second.usage.prompt_tokens
    assert first.usage.prompt_tokens_details.cached_tokens < cached


def test_flush_cache_is_refused_while_a_request_runs_and_works_when_idle(
        http: httpx.Client, server, client, model_name):
    running = threading.Event()

    def long_request():
        with httpx.Client(base_url=server.url, timeout=180) as c:
            with c.stream("POST", "/v1/completions", json={
                    "prompt": "Count:", "max_tokens": 200, "ignore_eos": True,
                    "stream": True, "temperature": 0}) as r:
                for _ in r.iter_lines():
                    running.set()

    worker = threading.Thread(target=long_request)
    worker.start()
    assert running.wait(120)
    busy = http.post("/flush_cache")
    worker.join(300)
    assert busy.status_code == 400 and busy.json()["object"] == "error"
    assert http.post("/flush_cache").status_code == 200
    again = _chat(client, model_name, "Name a fruit.")
    assert again.usage.prompt_tokens_details.cached_tokens == 0
    info = http.get("/get_server_info").json()
    assert 0.0 < info["cache_hit_rate"] < 1.0 and info["num_cached_tokens"] > 0


def test_cached_tokens_count_once_per_prompt_with_several_choices(client, model_name):
    _chat(client, model_name, "Name a mountain.")
    for stream in (False, True):
        kwargs = dict(model=model_name, max_tokens=3, temperature=0, n=3,
                      messages=[{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": "Name a mountain."}])
        if stream:
            chunks = list(client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **kwargs))
            usage = chunks[-1].usage
        else:
            usage = client.chat.completions.create(**kwargs).usage
        assert 0 < usage.prompt_tokens_details.cached_tokens <= usage.prompt_tokens
