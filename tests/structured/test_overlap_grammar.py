"""Grammar requests under overlap scheduling: the bitmask of step N+1 is built after step N's
tokens are read, so outputs match overlap off exactly, jump-forward included."""

from __future__ import annotations

import asyncio
import json

import numpy as np

import jaxengine as je

SCHEMA = json.dumps({"type": "object", "properties": {
    "kind": {"enum": ["cat", "dog", "hamster"]},
    "name": {"type": "string", "maxLength": 6},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
    "ok": {"type": "boolean"}}, "required": ["kind", "name", "tags", "ok"]})
GRAMMARS = [{"json_schema": SCHEMA}, {"regex": r"[a-z]{1,6}(-[0-9]{2,3}){1,3}"},
            {"ebnf": 'root ::= "id:" [0-9] [0-9]? " name:" ("alpha" | "beta" | "gamma")'},
            {}]  # and plain requests in the same batches


def _run(model_dir: str, overlap: bool) -> list[dict]:
    rng = np.random.default_rng(5)
    work = []
    for i in range(8):
        prompt = rng.integers(100, 40000, int(rng.integers(2, 30))).tolist()
        params = {"temperature": 0.0, "max_new_tokens": 32, **GRAMMARS[i % 4]}
        work.append((float(rng.uniform(0, 0.3)), prompt, params))
    with je.Engine(model_path=model_dir, skip_server_warmup=True, max_running_requests=8,
                   chunked_prefill_size=64, disable_overlap_schedule=not overlap) as llm:
        async def one(delay, prompt, params):
            await asyncio.sleep(delay)
            return await llm.async_generate(input_ids=prompt, sampling_params=params)

        async def main():
            return await asyncio.gather(*(one(*w) for w in work))

        return asyncio.run(main())


def test_grammar_outputs_with_overlap_equal_without(tiny_model_dir):
    on, off = _run(tiny_model_dir, overlap=True), _run(tiny_model_dir, overlap=False)
    assert [o["output_ids"] for o in on] == [o["output_ids"] for o in off]
    assert [o["meta_info"]["finish_reason"] for o in on] == \
        [o["meta_info"]["finish_reason"] for o in off]
    for k, out in enumerate(on):
        if k % 4 == 0 and out["meta_info"]["finish_reason"]["type"] == "stop":
            assert json.loads(out["text"])["kind"] in ("cat", "dog", "hamster")
