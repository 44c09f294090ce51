"""After warm-up, serving compiles nothing: every shape a step can take was compiled up front."""

from __future__ import annotations

import random

import jax.monitoring

from jaxengine.config import EngineConfig
from jaxengine.core.engine_core import EngineCore
from jaxengine.core.messages import AddRequest
from jaxengine.sampling_params import SamplingParams

COMPILE_EVENTS = ("/jax/core/compile/", "/jax/compilation_cache/")
_events: list[str] = []


def _record(event: str, *args, **kwargs) -> None:
    if event.startswith(COMPILE_EVENTS):
        _events.append(event)


jax.monitoring.register_event_listener(_record)
jax.monitoring.register_event_duration_secs_listener(_record)


def _params(rng: random.Random, room: int) -> SamplingParams:
    # Filtered sampling sorts the vocabulary, which is slow on XLA:CPU: few requests use it.
    kinds = ["greedy", "sampled", "filtered", "penalized", "stops", "regex", "json"]
    kind = rng.choices(kinds, [4, 3, 1, 2, 2, 1, 1])[0]
    kw = dict(max_new_tokens=rng.randint(1, min(24, room)))
    if kind == "regex":    # a grammar bitmask, and jump-forward over the dash
        kw.update(temperature=0, regex=r"[0-9]{3}-[0-9]{4}")
    elif kind == "json":
        kw.update(temperature=0.7, json_schema='{"type": "object", "properties": '
                  '{"ok": {"type": "boolean"}}, "required": ["ok"]}')
    elif kind == "sampled":
        kw.update(temperature=0.8)
    elif kind == "filtered":
        kw.update(temperature=0.8, top_p=0.9, top_k=rng.choice([-1, 20]), min_p=0.05)
    elif kind == "penalized":
        kw.update(temperature=0.5, repetition_penalty=1.2, frequency_penalty=0.3)
    elif kind == "stops":
        kw.update(temperature=0, stop_token_ids=[rng.randrange(100, 200)], min_new_tokens=2)
    else:
        kw.update(temperature=0)
    if rng.random() < 0.3:  # top alternatives and a logit bias take no program of their own
        kw.update(return_logprob=True, top_logprobs_num=rng.randint(0, 20),
                  logit_bias={rng.randrange(100, 200): rng.choice([-100.0, 5.0])})
        if rng.random() < 0.5:  # nor do prompt logprobs, some prompts only (prefill only)
            kw.update(logprob_start_len=rng.choice([0, 7, 90, 1000]))
            kw["max_new_tokens"] = rng.choice([0, kw["max_new_tokens"]])
    return SamplingParams(**kw)


def test_a_mixed_workload_compiles_nothing_after_warmup(tiny_model_dir):
    config = EngineConfig.from_kwargs(model_path=tiny_model_dir, context_length=256,
                                      max_running_requests=8, chunked_prefill_size=64,
                                      max_total_tokens=1536)
    core = EngineCore(config)   # warms up
    _events.clear()
    rng = random.Random(0)
    shared = [rng.randrange(1000, 5000) for _ in range(96)]  # prefixes hit the radix cache
    pending = []
    for i in range(100):
        n = rng.choice([1, 2, 15, 16, 17, 33, 64, 100, 150, 200, rng.randint(1, 220)])
        prompt = (shared[:rng.randint(0, 96)] + [rng.randrange(1000, 5000) for _ in range(n)])
        prompt = prompt[:230]
        pending.append(AddRequest(f"r{i}", prompt, _params(rng, 255 - len(prompt)), seed=i))
    finished, steps = set(), 0
    while pending or core.has_work:
        if steps % 3 == 0:  # requests keep arriving while others run and finish
            k = rng.randint(0, 6)
            for add in pending[:k]:
                out = core.add_request(add)  # a grammar's forced start comes back at once
                if out is not None and out.finish_reason is not None:
                    finished.add(out.rid)
            del pending[:k]
        for out in core.step():
            if out.finish_reason is not None:
                finished.add(out.rid)
        steps += 1
        assert steps < 5000
    assert finished == {f"r{i}" for i in range(100)}
    core.scheduler.check_integrity()
    assert _events == [], f"{len(_events)} compilation events after warm-up: {_events[:4]}"
