"""Radix prefix cache through the engine: hits give the cold run's tokens, nothing leaks."""

from __future__ import annotations

import numpy as np
import pytest

import jaxengine as je

GREEDY = {"temperature": 0.0, "max_new_tokens": 24, "ignore_eos": True}
PAGE = 16


@pytest.fixture(scope="module")
def engines(tiny_model_dir):
    with je.Engine(skip_server_warmup=True, model_path=tiny_model_dir, page_size=PAGE) as warm, \
            je.Engine(skip_server_warmup=True,
                      model_path=tiny_model_dir, page_size=PAGE, disable_radix_cache=True) as cold:
        yield warm, cold


def _variant(base: list[int], shared: int, rng) -> list[int]:
    return base[:shared] + rng.integers(100, 40000, len(base) - shared).tolist()


@pytest.mark.parametrize("shared_fraction", [0.0, 0.5, 0.99])
def test_cache_hit_equals_cold_run(engines, shared_fraction):
    warm, cold = engines
    rng = np.random.default_rng(int(shared_fraction * 100))
    base = rng.integers(100, 40000, 150).tolist()
    shared = int(len(base) * shared_fraction)  # 0, 75 (mid-page), 148
    warm.generate(input_ids=base, sampling_params=GREEDY)
    variant = _variant(base, shared, rng)
    hit = warm.generate(input_ids=variant, sampling_params=GREEDY)
    ref = cold.generate(input_ids=variant, sampling_params=GREEDY)
    assert hit["output_ids"] == ref["output_ids"]
    assert hit["meta_info"]["cached_tokens"] == shared // PAGE * PAGE
    assert ref["meta_info"]["cached_tokens"] == 0


def test_a_long_prompt_is_reusable_while_still_being_prefilled(tiny_model_dir):
    rng = np.random.default_rng(5)
    prompt = rng.integers(100, 40000, 300).tolist()
    with je.Engine(skip_server_warmup=True,
                   model_path=tiny_model_dir, page_size=PAGE, chunked_prefill_size=64) as llm:
        outs = llm.generate(input_ids=[prompt, prompt[:200] + [7]], sampling_params=GREEDY)
        alone = llm.generate(input_ids=prompt[:200] + [7], sampling_params=GREEDY)
    assert outs[1]["output_ids"] == alone["output_ids"]
    assert alone["meta_info"]["cached_tokens"] == 192


def test_many_requests_sharing_prefixes_in_a_small_pool_finish_and_leak_nothing(tiny_model_dir):
    rng = np.random.default_rng(0)
    prefixes = [rng.integers(100, 40000, int(rng.integers(20, 120))).tolist() for _ in range(8)]
    prompts = [prefixes[int(rng.integers(8))] + rng.integers(100, 40000, int(
        rng.integers(1, 30))).tolist() for _ in range(200)]
    params = [{"temperature": 0.0, "max_new_tokens": int(rng.integers(1, 12)),
               "ignore_eos": True} for _ in prompts]
    with je.Engine(skip_server_warmup=True,
                   model_path=tiny_model_dir, page_size=8, max_total_tokens=1024,
                   max_running_requests=16) as llm:
        outs = llm.generate(input_ids=prompts, sampling_params=params)
        stats = llm.get_server_info()
        assert llm.flush_cache()
        after = llm.get_server_info()
    assert [len(o["output_ids"]) for o in outs] == [p["max_new_tokens"] for p in params]
    assert stats["num_used_tokens"] == 0 and stats["num_running_reqs"] == 0
    assert stats["cache_hit_rate"] > 0.3
    assert after["num_cached_tokens"] == 0 and after["prompt_tokens_total"] == stats[
        "prompt_tokens_total"]


def test_default_model_reports_cached_tokens(default_engine):
    prompt = "You are a helpful assistant. " * 8 + "Name a color."
    default_engine.generate(prompt, {"max_new_tokens": 4})
    again = default_engine.generate(prompt, {"max_new_tokens": 4})
    assert again["meta_info"]["cached_tokens"] >= again["meta_info"]["prompt_tokens"] - 16
