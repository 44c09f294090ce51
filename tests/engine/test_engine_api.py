"""The offline Engine API on the default model: shapes of outputs, streaming, errors."""

from __future__ import annotations

import asyncio

import pytest

import jaxengine as je

GREEDY = {"temperature": 0.0, "max_new_tokens": 12}


def test_single_prompt_returns_text_ids_and_meta(default_engine):
    out = default_engine.generate("The capital of France is", je.SamplingParams(**GREEDY))
    meta = out["meta_info"]
    assert "Paris" in out["text"]
    assert meta["completion_tokens"] == len(out["output_ids"]) <= 12
    assert meta["prompt_tokens"] == 5 and meta["cached_tokens"] == 0
    assert meta["finish_reason"]["type"] in ("stop", "length") and meta["e2e_latency"] > 0


def test_batch_of_prompts_and_of_token_ids(default_engine):
    outs = default_engine.generate(["Hello", "One, two, three,"], GREEDY)
    assert len(outs) == 2 and all(o["text"] for o in outs)
    by_ids = default_engine.generate(input_ids=[[1, 2, 3], [504, 3575]],
                                     sampling_params={"max_new_tokens": 4, "temperature": 0})
    assert [len(o["output_ids"]) for o in by_ids] == [4, 4]
    single = default_engine.generate(input_ids=[1, 2, 3], sampling_params={"max_new_tokens": 8})
    assert isinstance(single, dict) and len(single["output_ids"]) <= 8


def test_stream_chunks_add_up_to_the_whole_output(default_engine):
    whole = default_engine.generate("Count to five:", GREEDY)
    chunks = list(default_engine.generate("Count to five:", GREEDY, stream=True))
    assert "".join(c["text"] for c in chunks) == whole["text"]
    assert sum((c["output_ids"] for c in chunks), []) == whole["output_ids"]
    assert all(c["meta_info"]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["meta_info"]["finish_reason"] == whole["meta_info"]["finish_reason"]


def test_a_reader_that_falls_behind_gets_the_tokens_piled_up_as_one_chunk(default_engine):
    params = {"temperature": 0.0, "max_new_tokens": 24, "ignore_eos": True,
              "return_logprob": True}
    whole = default_engine.generate("Count to five:", params)

    async def slow_reader():
        stream = await default_engine.async_generate("Count to five:", params, stream=True)
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            await asyncio.sleep(0.5)  # several steps go by before the next read
        return chunks

    chunks = asyncio.run(slow_reader())
    assert len(chunks) < 24 and max(len(c["output_ids"]) for c in chunks) > 1
    assert sum((c["output_ids"] for c in chunks), []) == whole["output_ids"]
    assert "".join(c["text"] for c in chunks) == whole["text"]
    logprobs = chunks[-1]["meta_info"]["output_token_logprobs"]
    assert [t for _, t, _ in logprobs] == whole["output_ids"]


def test_n_gives_n_outputs_and_seeds_make_them_differ(default_engine):
    params = {"temperature": 1.0, "max_new_tokens": 8, "n": 3, "seed": 7, "ignore_eos": True}
    outs = default_engine.generate("Tell me a word:", params)
    assert len(outs) == 3
    assert len({tuple(o["output_ids"]) for o in outs}) > 1
    again = default_engine.generate("Tell me a word:", params)
    assert [o["output_ids"] for o in again] == [o["output_ids"] for o in outs]


def test_stop_string_is_trimmed_unless_no_stop_trim(default_engine):
    base = default_engine.generate("Count: 1, 2, 3, 4, 5,", {"temperature": 0, "max_new_tokens": 16})
    assert " 7" in base["text"]
    stop = {"temperature": 0, "max_new_tokens": 16, "stop": " 7"}
    out = default_engine.generate("Count: 1, 2, 3, 4, 5,", stop)
    assert out["text"] == base["text"][:base["text"].index(" 7")]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": " 7"}
    kept = default_engine.generate("Count: 1, 2, 3, 4, 5,", {**stop, "no_stop_trim": True})
    assert kept["text"].endswith(" 7")


def test_async_generate_runs_on_the_callers_loop(default_engine):
    async def main():
        one = await default_engine.async_generate("Hi", GREEDY)
        stream = await default_engine.async_generate("Hi", GREEDY, stream=True)
        chunks = [c async for c in stream]
        return one, chunks

    one, chunks = asyncio.run(main())
    assert "".join(c["text"] for c in chunks) == one["text"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt="hi", sampling_params={"temperature": -1}), "temperature"),
    (dict(prompt="hi", sampling_params={"top_p": 0}), "top_p"),
    (dict(prompt="hi", sampling_params={"bogus": 1}), "unknown"),
    (dict(prompt=""), "at least one token"),
    (dict(input_ids=[1, 2, 10**9]), "token ids"),
    (dict(input_ids=[1] * 9000), "context length"),
    (dict(prompt="a", input_ids=[1]), "exactly one"),
    (dict(prompt=["a", "b"], stream=True), "one prompt"),
])
def test_bad_input_is_a_value_error_and_the_engine_keeps_working(default_engine, kwargs, match):
    with pytest.raises(ValueError, match=match):
        default_engine.generate(**kwargs)
    assert default_engine.generate("ok", {"max_new_tokens": 2})["output_ids"]


def test_one_call_helper_reuses_its_engine():
    outs = je.generate(["hi", "hello"], max_new_tokens=4, temperature=0)
    assert len(outs) == 2
    first = je._cached
    je.generate("again", max_new_tokens=2)
    assert je._cached is first


@pytest.mark.parametrize("params, match", [
    ({"temperature": "hot"}, "temperature must be a number"),
    ({"stop_token_ids": 5}, "stop_token_ids"),
    ({"stop": 5}, "stop must be"),
    ({"n": True}, "n must be"),
    ({"stop_token_ids": [2**40], "min_new_tokens": 2}, "vocabulary"),
    ({"stop_token_ids": list(range(100, 200)), "min_new_tokens": 2}, "at most 64"),
])
def test_wrongly_typed_or_huge_params_are_value_errors(default_engine, params, match):
    with pytest.raises(ValueError, match=match):
        default_engine.generate("hi", params)


def test_min_new_tokens_holds_back_every_stop_id_up_to_the_limit(default_engine):
    """63 stop ids plus EOS, the limit, including the tokens greedy decoding picks first:
    none of them may come out before min_new_tokens (no id is dropped for room)."""
    free = default_engine.generate("Hello", {"max_new_tokens": 6, "temperature": 0,
                                             "ignore_eos": True})["output_ids"]
    eos = set(default_engine.eos_ids)
    stops = list(dict.fromkeys(t for t in free if t not in eos))
    stops += [t for t in range(1000, 1100) if t not in stops and t not in eos]
    stops = stops[:64 - len(eos)]
    out = default_engine.generate("Hello", {"max_new_tokens": 6, "temperature": 0,
                                            "min_new_tokens": 6, "stop_token_ids": stops})
    assert len(out["output_ids"]) == 6
    assert not set(out["output_ids"]) & (set(stops) | eos), out["output_ids"]
