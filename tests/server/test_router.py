"""jaxengine as a worker of SGLang's real router (PyPI `sglang-router`): two workers on the
default model and two routers in front of them (cache_aware and round_robin), started once
for the module with `tools/router_fleet.py`. The kill-and-restart tests come last.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

pytest.importorskip("sglang_router")

from tools.procs import children  # noqa: E402
from tools.router_fleet import Fleet, Router, free_port, wait_until  # noqa: E402

WORKER_FLAGS = ["--skip-server-warmup", "--context-length", "2048", "--max-total-tokens", "8192",
                "--log-level", "info"]
# Health checks every second, so a dead or returning worker is noticed within seconds.
FAST_HEALTH = ["--health-check-interval-secs", "1"]
GREEDY = {"temperature": 0.0}


@dataclass
class Setup:
    fleet: Fleet
    rr: Router  # round_robin, same workers

    @property
    def ca(self) -> Router:  # cache_aware
        return self.fleet.router


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    log_dir: Path = tmp_path_factory.mktemp("router")
    fleet = Fleet(2, WORKER_FLAGS, port=free_port(), worker_ports=[free_port(), free_port()],
                  router_args=["--prometheus-port", str(free_port()), *FAST_HEALTH],
                  log_dir=log_dir)
    fleet.start(timeout=float(os.environ.get("JAXENGINE_TEST_SERVER_TIMEOUT", "840")))
    rr = Router(fleet.worker_urls, "127.0.0.1", free_port(), "round_robin",
                ["--prometheus-port", str(free_port()), *FAST_HEALTH], log_dir, name="router-rr")
    try:
        rr.start()
        wait_until(lambda: rr.healthy_workers() >= set(fleet.worker_urls), [rr], 120,
                   "the round-robin router had registered both workers")
        yield Setup(fleet, rr)
    finally:
        rr.stop(grace_s=5)
        fleet.stop()


def _openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="EMPTY", timeout=180, max_retries=0)


def _info(url: str) -> dict:
    return httpx.get(url + "/get_server_info", timeout=60).json()


# -- what the router reads from a worker ------------------------------------------------------

def test_router_registers_workers_by_model_name(setup: Setup) -> None:
    worker = setup.fleet.workers[0].url
    name = httpx.get(worker + "/get_model_info").json()["served_model_name"]
    assert httpx.get(worker + "/server_info").json()["served_model_name"] == name
    assert httpx.get(worker + "/model_info").json() == httpx.get(worker + "/get_model_info").json()
    workers = httpx.get(setup.ca.url + "/workers").json()["workers"]
    assert {w["model_id"] for w in workers} == {name}
    assert [m["id"] for m in httpx.get(setup.ca.url + "/v1/models").json()["data"]] == [name]


def test_get_load_is_sglangs_shape(setup: Setup) -> None:
    load = httpx.get(setup.fleet.workers[0].url + "/get_load").json()
    assert load == [{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]
    loads = httpx.get(setup.ca.url + "/get_loads").json()["workers"]
    assert sorted(w["worker"] for w in loads) == sorted(setup.fleet.worker_urls)
    assert all(w["load"] == 0 for w in loads)  # -1 would mean the router could not read it


# -- same answers through the router ----------------------------------------------------------

def test_chat_and_completions_match_one_worker(setup: Setup) -> None:
    direct, routed = _openai(setup.fleet.workers[0].url), _openai(setup.ca.url)
    model = direct.models.list().data[0].id
    chat = dict(model=model, max_tokens=12, messages=[
        {"role": "user", "content": "Name three colours."}], **GREEDY)
    want = direct.chat.completions.create(**chat).choices[0].message.content
    assert want
    assert routed.chat.completions.create(**chat).choices[0].message.content == want
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       routed.chat.completions.create(**chat, stream=True) if c.choices)
    assert streamed == want

    comp = dict(model=model, prompt="The capital of France is", max_tokens=10, **GREEDY)
    want = direct.completions.create(**comp).choices[0].text
    assert routed.completions.create(**comp).choices[0].text == want
    streamed = "".join(c.choices[0].text for c in
                       routed.completions.create(**comp, stream=True) if c.choices)
    assert streamed == want


def test_native_generate_matches_one_worker(setup: Setup) -> None:
    body = {"text": "One, two, three,", "sampling_params": {"max_new_tokens": 8, **GREEDY}}
    want = httpx.post(setup.fleet.workers[0].url + "/generate", json=body, timeout=120).json()
    got = httpx.post(setup.ca.url + "/generate", json=body, timeout=120).json()
    assert got["text"] == want["text"] and got["output_ids"] == want["output_ids"]
    with httpx.stream("POST", setup.ca.url + "/generate", json={**body, "stream": True},
                      timeout=120) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert httpx.Response(200, content=events[-2]).json()["text"] == want["text"]


def test_flush_cache_through_router(setup: Setup) -> None:
    httpx.post(setup.ca.url + "/generate", timeout=120,
               json={"text": "Flush me " * 40, "sampling_params": {"max_new_tokens": 1}})
    assert sum(_info(w)["num_cached_tokens"] for w in setup.fleet.worker_urls) > 0
    response = httpx.post(setup.ca.url + "/flush_cache", timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["workers_flushed"] == 2
    assert [_info(w)["num_cached_tokens"] for w in setup.fleet.worker_urls] == [0, 0]


# -- cache affinity ---------------------------------------------------------------------------

def _system_prompt(seed: int) -> str:
    rng = random.Random(seed)
    words = ["river", "copper", "lantern", "orbit", "meadow", "cipher", "harbor", "quartz",
             "violet", "tundra", "falcon", "ember", "glacier", "mosaic", "saffron", "willow"]
    return f"Rulebook {seed}: " + " ".join(rng.choice(words) for _ in range(200))


def _ask(client: openai.OpenAI, system: str, question: str) -> int:
    """One chat request; the number of its prompt tokens the worker found in its cache."""
    out = client.chat.completions.create(model="default", max_tokens=1, **GREEDY, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": question}])
    return out.usage.prompt_tokens_details.cached_tokens


def _run_groups(router: Router, workers: list[str], seed: int, groups: int = 4,
                rounds: int = 3) -> tuple[list[int], list[int], float]:
    """Each round sends one request of every group at once, 0.1 s apart, in an order rotated
    by one group per round (so round robin moves every group to the other worker each round).
    Returns, per group, how many of its requests found no prefix cached (one per worker that
    served the group), the requests each worker served, and the hit rate summed over the
    workers' counters."""
    client = _openai(router.url)
    httpx.post(router.url + "/flush_cache", timeout=60).raise_for_status()
    before = {w: _info(w) for w in workers}
    systems = [_system_prompt(seed + g) for g in range(groups)]
    cached: dict[int, list[int]] = {g: [] for g in range(groups)}
    for k in range(rounds):
        threads = []
        for g in [(k + i) % groups for i in range(groups)]:
            def ask(g: int = g, k: int = k) -> None:
                cached[g].append(_ask(client, systems[g], f"Question {k}: what is {k} + {g}?"))
            threads.append(threading.Thread(target=ask))
            threads[-1].start()
            time.sleep(0.1)  # a fixed arrival order at the router
        for t in threads:
            t.join(timeout=300)
    after = {w: _info(w) for w in workers}
    served = [after[w]["num_requests_total"] - before[w]["num_requests_total"] for w in workers]
    hits, total = ([sum(after[w][key] - before[w][key] for w in workers)]
                   for key in ("cached_tokens_total", "prompt_tokens_total"))
    assert all(len(c) == rounds for c in cached.values()), cached
    cold = [sum(1 for n in cached[g] if n < 100) for g in range(groups)]
    return cold, served, hits[0] / total[0]


def test_cache_aware_keeps_each_group_on_one_worker(setup: Setup) -> None:
    workers = setup.fleet.worker_urls
    ca_cold, ca_served, ca_rate = _run_groups(setup.ca, workers, seed=100)
    rr_cold, rr_served, rr_rate = _run_groups(setup.rr, workers, seed=200)
    # cache_aware: one cold prefill per group (a cache miss goes to the less loaded worker,
    # so the groups spread over both); round robin: each group is computed on both workers.
    assert ca_cold == [1, 1, 1, 1] and min(ca_served) > 0, (ca_cold, ca_served)
    assert rr_cold == [2, 2, 2, 2] and rr_served == [6, 6], (rr_cold, rr_served)
    assert ca_rate > 1.5 * rr_rate, (ca_rate, rr_rate)


# -- a worker dies (these run last: they kill and restart workers) ---------------------------

def _long_request(url: str, k: int, outcomes: dict) -> None:
    """Stream a long chat answer (even k) or wait for a long completion (odd k)."""
    client = _openai(url)
    model = "default"  # the router does not filter by model in its single-model mode
    try:
        if k % 2 == 0:
            stream = client.chat.completions.create(
                model=model, max_tokens=120, stream=True, extra_body={"ignore_eos": True},
                messages=[{"role": "user", "content": f"Story {k}, please."}], **GREEDY)
            n = sum(1 for _ in stream)
        else:
            n = client.completions.create(model=model, prompt=f"Story {k}:", max_tokens=120,
                                          extra_body={"ignore_eos": True}, **GREEDY
                                          ).usage.completion_tokens
        outcomes[k] = ("ok", n)
    except Exception as e:  # what a client sees when its worker dies under it
        outcomes[k] = ("error", f"{type(e).__name__}: {e}")


def test_worker_killed_mid_run(setup: Setup) -> None:
    victim, survivor = setup.fleet.workers[1], setup.fleet.workers[0]
    outcomes: dict[int, tuple[str, object]] = {}
    threads = [threading.Thread(target=_long_request, args=(setup.rr.url, k, outcomes))
               for k in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: _info(victim.url)["num_running_reqs"] > 0, [victim], 120,
               "the victim was generating")
    victim.kill()
    t0 = time.monotonic()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), f"requests hung: {outcomes}"
    assert time.monotonic() - t0 < 120
    # The survivor's requests finish; the victim's fail (or the router retried them).
    assert sum(1 for kind, _ in outcomes.values() if kind == "ok") >= 2, outcomes

    for router in (setup.ca, setup.rr):
        client = _openai(router.url)
        for k in range(3):
            t = time.monotonic()
            out = client.completions.create(model="default", prompt=f"After {k}:", max_tokens=2)
            assert out.choices[0].text is not None
            assert time.monotonic() - t < 30
    wait_until(lambda: victim.url not in setup.rr.healthy_workers(), [setup.rr], 30,
               "the router had marked the dead worker unhealthy")
    assert _info(survivor.url)["kv_cache_integrity"] == "ok"


def test_restarted_worker_rejoins(setup: Setup) -> None:
    victim = setup.fleet.workers[1]
    setup.fleet.restart_worker(1)
    wait_until(victim.healthy, [victim], 600, "the restarted worker was ready")
    wait_until(lambda: victim.url in setup.rr.healthy_workers(), [setup.rr], 60,
               "the router took the worker back")
    client = _openai(setup.rr.url)
    deadline = time.monotonic() + 60  # its circuit breaker may wait before trying it again
    while _info(victim.url)["num_requests_total"] == 0:
        assert time.monotonic() < deadline, "round robin sent nothing to the restarted worker"
        client.completions.create(model="default", prompt="Back?", max_tokens=1)


def test_dead_engine_core_ends_the_worker_and_router_moves_on(setup: Setup) -> None:
    """A worker whose engine core dies exits with status 1 within seconds (for its
    supervisor to restart it), and the router stops sending it work."""
    broken, other = setup.fleet.workers[0], setup.fleet.workers[1]
    for pid in children(broken.proc.pid):
        os.kill(pid, signal.SIGKILL)
    assert broken.proc.wait(timeout=30) == 1, broken.log_tail()
    assert "the engine core died (killed by SIGKILL)" in broken.log_tail()
    wait_until(lambda: broken.url not in setup.ca.healthy_workers(), [setup.ca], 30,
               "the router had dropped the broken worker")
    served = _info(other.url)["num_requests_total"]
    client = _openai(setup.ca.url)
    for k in range(3):
        assert client.completions.create(model="default", prompt=f"Still {k}?",
                                         max_tokens=1).choices
    assert _info(other.url)["num_requests_total"] == served + 3
