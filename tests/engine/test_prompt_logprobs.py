"""Prompt logprobs (logprob_start_len) against a full-sequence log-softmax of HF logits, across
chunked prefill, radix hits and mixed batches; max_new_tokens 0; stop_regex."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import jaxengine as je

RNG = np.random.default_rng(7)
PROMPT = RNG.integers(100, 40000, 41).tolist()  # three 16-token chunks


@pytest.fixture(scope="module")
def hf_tiny(tiny_model_dir):
    import transformers

    return transformers.LlamaForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    with je.Engine(model_path=tiny_model_dir, skip_server_warmup=True, chunked_prefill_size=16,
                   page_size=4) as llm:
        yield llm


def log_softmax(hf, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        return torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1).numpy()


def check(meta: dict, ids: list[int], start: int, want: np.ndarray, k: int = 0) -> None:
    """want[q]: the log-softmax at position q, which predicts token q + 1."""
    first = min(start, len(ids) - 1)
    entries = meta["input_token_logprobs"]
    assert [t for _, t, _ in entries] == ids[first:]
    for p, (lp, t, _) in enumerate(entries, first):
        if p == 0:
            assert lp is None
        else:
            assert abs(lp - want[p - 1, t]) < 1e-4, (p, lp, want[p - 1, t])
    if k:
        for p, row in enumerate(meta["input_top_logprobs"], first):
            if p == 0:
                assert row is None
                continue
            np.testing.assert_allclose([lp for lp, _, _ in row],
                                       np.sort(want[p - 1])[::-1][:k], atol=1e-4)
            np.testing.assert_allclose([want[p - 1, t] for _, t, _ in row],
                                       [lp for lp, _, _ in row], atol=1e-4)


def score(engine, ids: list[int], start: int, **params):
    return engine.generate(input_ids=ids, sampling_params={"temperature": 0.0, **params},
                           return_logprob=True, logprob_start_len=start, top_logprobs_num=3)


@pytest.mark.parametrize("start", [0, 1, 17, len(PROMPT) - 1, 10_000])
def test_prompt_logprobs_equal_a_full_forward_across_chunks(engine, hf_tiny, start):
    want = log_softmax(hf_tiny, PROMPT)
    out = score(engine, PROMPT, start, max_new_tokens=0)
    check(out["meta_info"], PROMPT, start, want, k=3)
    # max_new_tokens 0: prefill only, no output token.
    assert out["output_ids"] == [] and out["meta_info"]["completion_tokens"] == 0
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 0}


def test_prompt_logprobs_with_outputs_keep_the_outputs(engine, hf_tiny):
    plain = engine.generate(input_ids=PROMPT, sampling_params={"temperature": 0.0,
                                                               "max_new_tokens": 4})
    out = score(engine, PROMPT, 5, max_new_tokens=4)
    assert out["output_ids"] == plain["output_ids"]
    check(out["meta_info"], PROMPT, 5, log_softmax(hf_tiny, PROMPT), k=3)
    assert len(out["meta_info"]["output_token_logprobs"]) == 4


def test_a_radix_hit_before_the_start_still_recomputes_from_it(engine, hf_tiny):
    ids = RNG.integers(100, 40000, 37).tolist()
    engine.generate(input_ids=ids, sampling_params={"max_new_tokens": 1})  # now cached
    want = log_softmax(hf_tiny, ids)
    for start in (30, 0):
        out = score(engine, ids, start, max_new_tokens=0)
        check(out["meta_info"], ids, start, want, k=3)
        cached = out["meta_info"]["cached_tokens"]
        assert cached <= max(start - 1, 0)
        assert (cached > 0) == (start > 4)  # the prefix before it is served from the cache


def test_mixed_in_a_batch_plain_requests_are_unchanged(engine, hf_tiny):
    others = [RNG.integers(100, 40000, n).tolist() for n in (9, 23, 40)]
    greedy = {"temperature": 0.0, "max_new_tokens": 6}
    alone = engine.generate(input_ids=others, sampling_params=greedy)
    asks = {**greedy, "return_logprob": True, "logprob_start_len": 0, "top_logprobs_num": 2}
    mixed = engine.generate(input_ids=[others[0], PROMPT, others[1], others[2]],
                            sampling_params=[greedy, asks, greedy, greedy])
    assert [o["output_ids"] for o in mixed[:1] + mixed[2:]] == [o["output_ids"] for o in alone]
    assert all("input_token_logprobs" not in o["meta_info"] for o in mixed[:1] + mixed[2:])
    check(mixed[1]["meta_info"], PROMPT, 0, log_softmax(hf_tiny, PROMPT), k=2)


def test_prompt_logprobs_of_the_default_model_match_hf(default_engine, hf_default_model):
    ids = default_engine.encode_prompt("The capital of France is Paris, and the capital of")
    out = score(default_engine, ids, 0, max_new_tokens=0)
    with torch.inference_mode():
        logits = hf_default_model(torch.tensor([ids])).logits[0]
    want = torch.log_softmax(logits.double(), -1).numpy()
    got = [lp for lp, _, _ in out["meta_info"]["input_token_logprobs"][1:]]
    np.testing.assert_allclose(got, want[np.arange(len(ids) - 1), ids[1:]], atol=2e-3)


def test_stop_regex_cuts_the_output_at_its_first_match(engine):
    greedy = {"temperature": 0.0, "max_new_tokens": 24, "ignore_eos": True}
    full = engine.generate(input_ids=PROMPT, sampling_params=greedy)
    pieces = [engine.tokenizer.decode(full["output_ids"][:n]) for n in (10, 12)]
    target = pieces[1][len(pieces[0]):]  # the text of output tokens 10 and 11
    out = engine.generate(input_ids=PROMPT, sampling_params={
        **greedy, "stop_regex": ["(?!x)x", re.escape(target)]})
    assert out["text"] == full["text"][:full["text"].find(target)]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": target}
    assert len(out["output_ids"]) <= 12
    with pytest.raises(ValueError, match="stop_regex"):
        engine.generate(input_ids=PROMPT, sampling_params={"stop_regex": "(unclosed"})


def test_token_ids_logprob_at_prompt_and_output_positions(engine, hf_tiny):
    asked = [5, 1000, PROMPT[3]]
    out = engine.generate(input_ids=PROMPT, sampling_params={"temperature": 0.0,
                                                             "max_new_tokens": 3},
                          return_logprob=True, logprob_start_len=2, token_ids_logprob=asked)
    want = log_softmax(hf_tiny, PROMPT + out["output_ids"])
    meta = out["meta_info"]
    rows = meta["input_token_ids_logprobs"] + meta["output_token_ids_logprobs"]
    assert len(rows) == len(PROMPT) - 2 + 3
    for q, row in enumerate(rows, 1):  # position 2's row is predicted at position 1
        assert [t for _, t, _ in row] == asked
        np.testing.assert_allclose([lp for lp, _, _ in row], want[q, asked], atol=1e-4)
    with pytest.raises(ValueError, match="token_ids_logprob"):
        engine.generate(input_ids=PROMPT, return_logprob=True,
                        token_ids_logprob=[engine.vocab_size])
