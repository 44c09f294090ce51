"""100 streaming clients that hang up at random points (before the first byte, after a few
chunks, while queued): afterwards nothing runs or waits, every KV page is free, cached or
owned (the scheduler's integrity check), no page is held by a request, and the server still
answers."""

from __future__ import annotations

import asyncio
import random
import time

import httpx

CLIENTS = 100


async def _hang_up(client: httpx.AsyncClient, rng: random.Random, k: int) -> str:
    endpoint = rng.choice(["/v1/completions", "/v1/chat/completions", "/generate"])
    if endpoint == "/v1/completions":
        body = {"prompt": f"Story {k}: once upon a time", "max_tokens": 32}
    elif endpoint == "/v1/chat/completions":
        body = {"messages": [{"role": "user", "content": f"Count to {k}."}], "max_tokens": 32,
                "n": rng.choice([1, 2])}
    else:
        body = {"text": f"Story {k}:", "sampling_params": {"max_new_tokens": 32}}
    body.update(stream=True, ignore_eos=True, temperature=1.0)
    if endpoint == "/generate":
        body["sampling_params"]["ignore_eos"] = True
    chunks_to_read = rng.choice([0, 0, 1, 2, 5, 10, 20])
    try:
        if chunks_to_read == 0:  # give up before the response starts (it may be queued)
            await asyncio.wait_for(client.post(endpoint, json=body), rng.uniform(0.01, 1.0))
            return "finished"
        async with client.stream("POST", endpoint, json=body) as response:
            seen = 0
            async for line in response.aiter_lines():
                seen += line.startswith("data:")
                if seen >= chunks_to_read:
                    return "hung up"  # leaving the block closes the connection
        return "finished"
    except (asyncio.TimeoutError, httpx.TimeoutException):
        return "timed out"


async def _storm(url: str) -> list[str]:
    rng = random.Random(1234)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(_hang_up(client, rng, k) for k in range(CLIENTS)))


def test_hundred_clients_hang_up_and_nothing_leaks(server, http: httpx.Client) -> None:
    outcomes = asyncio.run(_storm(server.url))
    assert outcomes.count("hung up") > 40 and outcomes.count("timed out") > 5, outcomes
    deadline = time.monotonic() + 60
    while True:
        info = http.get("/get_server_info").json()
        if info["num_running_reqs"] == 0 and info["num_queue_reqs"] == 0:
            break
        assert time.monotonic() < deadline, info
        time.sleep(0.2)
    assert info["num_used_tokens"] == 0, info  # no page owned by a request
    assert info["kv_cache_integrity"] == "ok"
    assert info["num_aborted_requests_total"] >= outcomes.count("hung up")
    out = http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 3,
                                             "temperature": 0, "ignore_eos": True})
    assert out.status_code == 200 and out.json()["usage"]["completion_tokens"] == 3
