"""Logprobs and logit_bias through the Engine, against HF logits on the default model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import chat_ids


def test_logprobs_match_a_log_softmax_of_hf_logits(default_engine, hf_default_model):
    ids = chat_ids(default_engine, "What is the capital of France?")
    out = default_engine.generate(
        input_ids=ids, sampling_params={"temperature": 0.0, "max_new_tokens": 4},
        return_logprob=True, top_logprobs_num=5)
    meta, new = out["meta_info"], out["output_ids"]
    with torch.inference_mode():
        logits = hf_default_model(torch.tensor([ids + new])).logits[0, len(ids) - 1:-1]
    want = torch.log_softmax(logits.double(), -1).numpy()
    assert [t for _, t, _ in meta["output_token_logprobs"]] == new
    got = np.array([lp for lp, _, _ in meta["output_token_logprobs"]])
    np.testing.assert_allclose(got, want[np.arange(len(new)), new], atol=2e-3)
    for step, row in enumerate(meta["output_top_logprobs"]):
        assert [t for _, t, _ in row] == np.argsort(-want[step])[:5].tolist()
        np.testing.assert_allclose([lp for lp, _, _ in row], np.sort(want[step])[::-1][:5],
                                   atol=2e-3)
        assert row[0][1] == new[step]  # greedy: the chosen token is the best


def test_logit_bias_bans_the_greedy_token_and_forces_another(default_engine):
    ids = chat_ids(default_engine, "Name a colour.")
    greedy = {"temperature": 0.0, "max_new_tokens": 6}
    base = default_engine.generate(input_ids=ids, sampling_params=greedy)["output_ids"]
    banned = default_engine.generate(input_ids=ids, sampling_params={
        **greedy, "logit_bias": {str(base[0]): -100}})["output_ids"]
    assert base[0] not in banned and banned != base
    forced = default_engine.generate(input_ids=ids, sampling_params={
        **greedy, "temperature": 0.8, "seed": 1, "logit_bias": {"42": 100.0}},
        return_logprob=True)
    assert forced["output_ids"] == [42] * 6
    # The bias is part of the distribution the logprobs describe (as OpenAI's).
    assert all(lp > -1e-3 for lp, _, _ in forced["meta_info"]["output_token_logprobs"])


def test_bad_logprob_and_bias_options_are_value_errors(default_engine):
    for kwargs in ({"top_logprobs_num": 21}, {"logprob_start_len": -2}):
        with pytest.raises(ValueError):
            default_engine.generate("hi", {"max_new_tokens": 1}, return_logprob=True, **kwargs)
    for bias in ({"x": 1.0}, {"1": 101.0}, {str(default_engine.vocab_size): 1.0},
                 {str(i): 1.0 for i in range(65)}):
        with pytest.raises(ValueError):
            default_engine.generate("hi", {"max_new_tokens": 1, "logit_bias": bias})
