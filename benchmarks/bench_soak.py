"""Soak: a long mix of real client behaviour against one server, then the books are checked.

Chat and completions, streamed and not, n=2, batched prompts, /generate, regex and JSON
grammars, stop strings, clients that hang up after the first chunk, and bad requests, sent at
a fixed concurrency to a server with a small KV pool (so requests are preempted). Afterwards
nothing may be left: no request running or queued, every KV page accounted for. Printed: the
outcomes (any 5xx or broken stream is a failure), requests per second, and the resident
memory of the server and its engine core after the soak against the same after a warm-up
round, in the same run.

    python -m benchmarks.bench_soak                     # 1,000 requests
    python -m benchmarks.bench_soak --requests 200 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tools.procs import tree_rss_mb

# The model's context is 8192; the pool caps requests at 2048 tokens.
SOAK_FLAGS = ["--skip-server-warmup", "--max-total-tokens", "2048", "--max-running-requests",
              "8"]
WORDS = ("the quick brown fox jumps over a lazy dog while seven wise owls count stars above "
         "quiet hills and rivers run to the sea").split()


@dataclass
class Call:
    path: str
    body: dict
    stream: bool = False
    hang_up: bool = False    # read the first chunk, then close the connection
    expect: int = 200


@dataclass
class Outcomes:
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def fail(self, call: Call, why: str) -> None:
        self.failures.append(f"{call.path} {json.dumps(call.body)[:120]}: {why}")


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def soak_calls(n: int, seed: int = 0) -> list[Call]:
    """n requests of the mix, reproducible from the seed."""
    rng = random.Random(seed)
    calls = []
    for _ in range(n):
        roll = rng.random()
        tokens = rng.randint(4, 24)
        sampling = {"temperature": rng.choice([0.0, 0.7]), "seed": rng.randrange(1000)}
        # Some prompts are long (about 300 tokens): with 8 running they need preemption.
        words = (60, 90) if rng.random() < 0.25 else (3, 20)
        chat = {"messages": [{"role": "user", "content": _text(rng, *words)}],
                "max_tokens": tokens, **sampling}
        if roll < 0.25:
            calls.append(Call("/v1/chat/completions", chat))
        elif roll < 0.40:
            calls.append(Call("/v1/chat/completions", {**chat, "stream": True,
                                                       "stream_options": {"include_usage": True}},
                              stream=True))
        elif roll < 0.52:
            prompt = [_text(rng, *words) for _ in range(rng.choice([1, 2]))]
            calls.append(Call("/v1/completions", {"prompt": prompt, "max_tokens": tokens,
                                                  "n": rng.choice([1, 2]), **sampling}))
        elif roll < 0.60:
            calls.append(Call("/v1/completions", {"prompt": _text(rng, *words), "n": 2,
                                                  "max_tokens": tokens, "stream": True,
                                                  **sampling}, stream=True))
        elif roll < 0.70:
            body = {"text": _text(rng, *words), "sampling_params": {
                "max_new_tokens": tokens, **sampling}}
            stream = rng.random() < 0.5
            calls.append(Call("/generate", {**body, "stream": stream}, stream=stream))
        elif roll < 0.78:
            grammar = rng.choice([{"regex": r"\(\d{3}\) \d{3}-\d{4}"},
                                  {"response_format": {"type": "json_object"}}])
            calls.append(Call("/v1/chat/completions", {**chat, **grammar, "max_tokens": 48}))
        elif roll < 0.86:
            calls.append(Call("/v1/chat/completions", {**chat, "stream": True, "max_tokens": 64},
                              stream=True, hang_up=True))
        elif roll < 0.92:
            calls.append(Call("/v1/completions", {"prompt": _text(rng, *words),
                                                  "max_tokens": tokens, "stop": ["the", "."],
                                                  **sampling}))
        else:
            bad = rng.choice([{"temperature": -1}, {"n": "2"}, {"max_tokens": 10**9},
                              {"messages": []}, {"logit_bias": {"x": 1}},
                              {"messages": [{"role": "user", "content": "\ud800"}]}])
            calls.append(Call("/v1/chat/completions", {**chat, **bad}, expect=400))
    return calls


async def _one(client: httpx.AsyncClient, call: Call, out: Outcomes) -> None:
    # As a hostile client sends them: a lone surrogate is an escape, not a UTF-8 error here.
    body = json.dumps(call.body)
    headers = {"content-type": "application/json"}
    try:
        if not call.stream:
            response = await client.post(call.path, content=body, headers=headers)
            out.counts[response.status_code] += 1
            if response.status_code != call.expect:
                out.fail(call, f"HTTP {response.status_code}: {response.text[:200]}")
            return
        async with client.stream("POST", call.path, content=body, headers=headers) as response:
            out.counts[response.status_code] += 1
            if response.status_code != call.expect:
                out.fail(call, f"HTTP {response.status_code}")
                return
            events = []
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                events.append(line)
                if call.hang_up:
                    return  # leaving the context manager closes the connection
            if not events or events[-1] != "data: [DONE]":
                out.fail(call, f"the stream did not end with [DONE]: {events[-1:]}")
            elif any('"error"' in e for e in events):
                out.fail(call, f"error event: {[e for e in events if 'error' in e][:1]}")
    except httpx.HTTPError as e:
        out.counts["transport error"] += 1
        out.fail(call, f"{type(e).__name__}: {e}")


async def run_soak(url: str, calls: list[Call], concurrency: int) -> Outcomes:
    out = Outcomes()
    queue: asyncio.Queue = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def worker() -> None:
            while not queue.empty():
                await _one(client, queue.get_nowait(), out)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def books(url: str) -> dict:
    """What must be empty after a soak."""
    info = httpx.get(url + "/get_server_info", timeout=60).json()
    return {k: info[k] for k in ("num_running_reqs", "num_queue_reqs", "kv_cache_integrity",
                                 "num_preemptions_total", "num_requests_total")}


def main() -> None:
    from benchmarks._server import serving

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with serving(SOAK_FLAGS) as server:
        pid = server.pid
        warm = asyncio.run(run_soak(server.url, soak_calls(64, seed=10**6), args.concurrency))
        rss_warm = tree_rss_mb(pid)
        t0 = time.monotonic()
        out = asyncio.run(run_soak(server.url, soak_calls(args.requests, args.seed),
                                   args.concurrency))
        elapsed = time.monotonic() - t0
        rss_after = tree_rss_mb(pid)
        state = books(server.url)
    print(f"\n=========== soak: {args.requests} requests, concurrency {args.concurrency} "
          "===========")
    print(f"outcomes: {dict(out.counts)} (warm-up: {dict(warm.counts)})")
    print(f"failures (5xx, broken streams, unexpected status): {len(out.failures)}")
    for line in out.failures[:10]:
        print("  ", line)
    print(f"requests/s: {args.requests / elapsed:.2f} ({elapsed:.0f} s)")
    print(f"after the soak: {state}")
    print(f"RSS (server + engine core): {rss_warm:.0f} MB after warm-up, {rss_after:.0f} MB "
          f"after the soak ({rss_after / rss_warm:.2f}x)")


if __name__ == "__main__":
    main()
