"""Overlap scheduling (step N+1 dispatched before step N's tokens are read) changes nothing."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import jaxengine as je


def _workload() -> list[tuple[float, list[int], dict]]:
    """32 requests: mixed prompt and output lengths, stop strings / ids, staggered arrivals."""
    rng = np.random.default_rng(3)
    work = []
    for i in range(32):
        prompt = rng.integers(100, 40000, int(rng.integers(2, 120))).tolist()
        params = {"temperature": 0.0, "max_new_tokens": int(rng.integers(1, 40))}
        if i % 4 == 1:
            params["stop_token_ids"] = [int(t) for t in rng.integers(100, 40000, 300)]
        if i % 4 == 2:
            params["stop"] = ["e", "a"]
        if i % 4 == 3:
            params["min_new_tokens"] = 3
        work.append((float(rng.uniform(0, 0.5)), prompt, params))
    return work


def _run(model_dir: str, overlap: bool) -> list[dict]:
    with je.Engine(skip_server_warmup=True,
                   model_path=model_dir, disable_overlap_schedule=not overlap,
                   max_running_requests=8, chunked_prefill_size=64) as llm:
        work = _workload()

        async def one(delay, prompt, params):
            await asyncio.sleep(delay)
            return await llm.async_generate(input_ids=prompt, sampling_params=params)

        async def main():
            return await asyncio.gather(*(one(*w) for w in work))

        outs = asyncio.run(main())
        info = llm.get_server_info()
    assert info["num_steps_measured"] > 0 and info["step_time_ms"] > 0
    return outs


@pytest.fixture(scope="module")
def both(tiny_model_dir):
    return _run(tiny_model_dir, overlap=True), _run(tiny_model_dir, overlap=False)


def test_overlap_on_equals_off(both):
    on, off = both
    assert [o["output_ids"] for o in on] == [o["output_ids"] for o in off]
    assert [o["meta_info"]["finish_reason"] for o in on] == \
        [o["meta_info"]["finish_reason"] for o in off]
    reasons = {o["meta_info"]["finish_reason"]["type"] for o in on}
    assert reasons == {"stop", "length"}


def test_a_stop_with_the_next_step_in_flight_emits_nothing_past_it(both, default_checkpoint):
    on, _ = both
    decode = default_checkpoint.tokenizer.decode
    stopped = 0
    for out in on:
        ids, finish = out["output_ids"], out["meta_info"]["finish_reason"]
        assert out["meta_info"]["completion_tokens"] == len(ids)
        if finish["type"] != "stop":
            continue
        stopped += 1
        if isinstance(finish["matched"], int):
            assert ids[-1] == finish["matched"] and finish["matched"] not in ids[:-1]
        else:  # the stop string appears with the last token, not before
            assert finish["matched"] in decode(ids) and finish["matched"] not in decode(ids[:-1])
            assert finish["matched"] not in out["text"]
    assert stopped >= 4
