"""Overlap scheduling (step N+1 dispatched before step N's tokens are read) changes nothing."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest

import jaxengine as je

# Grammar requests: the bitmask of step N+1 is built after step N's tokens are read, and
# jump-forward drops a sample in flight; neither may change what overlap produces.
SCHEMA = json.dumps({"type": "object", "properties": {
    "kind": {"enum": ["cat", "dog", "hamster"]}, "name": {"type": "string", "maxLength": 6},
    "ok": {"type": "boolean"}}, "required": ["kind", "name", "ok"]})
REGEX = r"[a-z]{1,6}(-[0-9]{2,3}){1,3}"


def _workload() -> list[tuple[float, list[int], dict]]:
    """32 requests: mixed prompt and output lengths, stop strings / ids, grammars, staggered
    arrivals."""
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
        if i % 8 == 0:
            params["regex"] = REGEX
        if i % 8 == 4:
            params["json_schema"] = SCHEMA
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
    matched = [re.fullmatch(REGEX, out["text"]) for (_, _, params), out in zip(_workload(), on)
               if out["meta_info"]["finish_reason"]["type"] == "stop" and "regex" in params]
    assert matched and all(matched)


def test_a_stop_with_the_next_step_in_flight_emits_nothing_past_it(both, default_checkpoint):
    on, _ = both
    decode = default_checkpoint.tokenizer.decode
    stopped = 0
    for out in on:
        ids, finish = out["output_ids"], out["meta_info"]["finish_reason"]
        assert out["meta_info"]["completion_tokens"] == len(ids)
        if finish["type"] != "stop" or finish["matched"] is None:  # None: a grammar ended
            continue
        stopped += 1
        if isinstance(finish["matched"], int):
            assert ids[-1] == finish["matched"] and finish["matched"] not in ids[:-1]
        else:  # the stop string appears with the last token, not before
            assert finish["matched"] in decode(ids) and finish["matched"] not in decode(ids[:-1])
            assert finish["matched"] not in out["text"]
    assert stopped >= 4
