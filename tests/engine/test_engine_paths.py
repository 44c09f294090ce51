"""Different paths through the engine give the same greedy tokens (tiny random model)."""

from __future__ import annotations

import numpy as np
import pytest

import jaxengine as je

PARAMS = {"temperature": 0.0, "max_new_tokens": 40, "ignore_eos": True}


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(100, 40000, int(rng.integers(3, 90))).tolist() for _ in range(n)]


@pytest.fixture(scope="module")
def baseline(tiny_model_dir):
    """Each prompt generated alone, unchunked, with a roomy KV pool."""
    with je.Engine(skip_server_warmup=True,
                   model_path=tiny_model_dir, chunked_prefill_size=512) as llm:
        return [llm.generate(input_ids=ids, sampling_params=PARAMS)["output_ids"]
                for ids in _prompts(12)]


def test_chunked_prefill_equals_unchunked(tiny_model_dir, baseline):
    with je.Engine(skip_server_warmup=True,
                   model_path=tiny_model_dir, chunked_prefill_size=16, page_size=4) as llm:
        outs = llm.generate(input_ids=_prompts(12), sampling_params=PARAMS)
    assert [o["output_ids"] for o in outs] == baseline


def test_preemption_under_a_tiny_pool_completes_every_request(tiny_model_dir, baseline):
    # 12 requests of up to 130 tokens each, in a pool of 512 tokens: most must be preempted
    # and recomputed, and the outputs must not change.
    with je.Engine(skip_server_warmup=True,
                   model_path=tiny_model_dir, max_total_tokens=512, page_size=8) as llm:
        outs = llm.generate(input_ids=_prompts(12), sampling_params=PARAMS)
    assert [o["output_ids"] for o in outs] == baseline
    assert all(o["meta_info"]["finish_reason"]["type"] == "length" for o in outs)


def test_seeded_sampling_is_reproducible_and_batch_invariant(tiny_model_dir):
    params = {"temperature": 0.9, "top_p": 0.9, "top_k": 50, "max_new_tokens": 16,
              "ignore_eos": True, "seed": 1234}
    prompts = _prompts(4, seed=1)
    with je.Engine(skip_server_warmup=True, model_path=tiny_model_dir) as llm:
        together = [o["output_ids"] for o in llm.generate(input_ids=prompts,
                                                           sampling_params=params)]
        alone = [llm.generate(input_ids=ids, sampling_params=params)["output_ids"]
                 for ids in prompts]
        other_seed = llm.generate(input_ids=prompts[0],
                                  sampling_params={**params, "seed": 99})["output_ids"]
    assert together == alone
    assert other_seed != alone[0]


def test_pallas_attention_in_interpret_mode_gives_the_reference_tokens(tiny_model_dir, baseline):
    params = {**PARAMS, "max_new_tokens": 6}
    prompts = _prompts(12)[:3]
    with je.Engine(skip_server_warmup=True,
                   model_path=tiny_model_dir, attention_backend="pallas-interpret",
                   max_running_requests=4) as llm:
        outs = llm.generate(input_ids=prompts, sampling_params=params)
    assert [o["output_ids"] for o in outs] == [b[:6] for b in baseline[:3]]


def test_compilation_cache_goes_where_the_flag_says(tiny_model_dir, tmp_path):
    with je.Engine(skip_server_warmup=True,
                   model_path=tiny_model_dir, compilation_cache_dir=str(tmp_path)) as llm:
        llm.generate(input_ids=[5, 6, 7], sampling_params={"max_new_tokens": 2})
    assert any(tmp_path.iterdir())
