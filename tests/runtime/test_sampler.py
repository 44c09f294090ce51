"""The on-device sampler against plain numpy / HF logits processors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
import transformers

from jaxengine.runtime.sampler import PenaltyState, SamplingInputs, record_tokens, sample

V = 64


def inputs(B: int, **over) -> SamplingInputs:
    base = dict(temperature=np.zeros(B, np.float32), top_p=np.ones(B, np.float32),
                top_k=np.zeros(B, np.int32), min_p=np.zeros(B, np.float32),
                repetition_penalty=np.ones(B, np.float32),
                frequency_penalty=np.zeros(B, np.float32),
                presence_penalty=np.zeros(B, np.float32), seed=np.arange(B, dtype=np.uint32),
                sample_index=np.zeros(B, np.int32), slot=np.arange(B, dtype=np.int32),
                reset=np.zeros(B, bool), counts_output=np.zeros(B, bool),
                suppress_ids=np.full((B, 8), np.iinfo(np.int32).max, np.int32),
                bias_ids=np.full((B, 4), np.iinfo(np.int32).max, np.int32),
                bias_values=np.zeros((B, 4), np.float32), top_logprobs=np.zeros(B, bool),
                logprob_ids=np.zeros((B, 4), np.int32))
    base.update({k: np.asarray(v, base[k].dtype) for k, v in over.items()})
    return SamplingInputs(**base)


def test_greedy_picks_argmax():
    logits = np.random.default_rng(0).normal(size=(3, V)).astype(np.float32)
    tokens, logprobs, _, _ = sample(jnp.asarray(logits), PenaltyState.zeros(3, V), inputs(3))
    assert np.asarray(tokens).tolist() == logits.argmax(-1).tolist()
    want = logits.max(-1) - np.log(np.exp(logits).sum(-1))
    np.testing.assert_allclose(np.asarray(logprobs), want, rtol=1e-5, atol=1e-5)


def test_penalties_match_hf_processors():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, V)).astype(np.float32)
    prompt, outputs = [3, 5, 5, 9], [5, 11, 11, 11]
    state = PenaltyState.zeros(1, V)
    # A prefill of the prompt (reset), then the outputs as if each had been sampled.
    s = inputs(1, reset=[True])
    state = record_tokens(state, s, jnp.zeros(4, jnp.int32), jnp.asarray(prompt),
                          jnp.zeros(4, bool))
    state = record_tokens(state, inputs(1), jnp.zeros(4, jnp.int32), jnp.asarray(outputs),
                          jnp.ones(4, bool))
    s = inputs(1, repetition_penalty=[1.3], frequency_penalty=[0.5], presence_penalty=[0.25])
    ids = torch.tensor([prompt + outputs])
    ref = transformers.RepetitionPenaltyLogitsProcessor(1.3)(ids, torch.tensor(logits)).numpy()
    counts = np.bincount(outputs, minlength=V)
    ref = ref - 0.5 * counts - 0.25 * (counts > 0)
    tokens, logprobs, _, _ = sample(jnp.asarray(logits), state, s)
    assert int(tokens[0]) == int(ref.argmax())
    want = ref.max() - np.log(np.exp(ref).sum())
    np.testing.assert_allclose(float(logprobs[0]), want, rtol=1e-5)


def test_suppressed_ids_are_never_chosen():
    logits = np.zeros((1, V), np.float32)
    logits[0, 7] = 10.0
    suppress = np.full((1, 8), np.iinfo(np.int32).max, np.int32)
    suppress[0, 0] = 7
    tokens, *_ = sample(jnp.asarray(logits), PenaltyState.zeros(1, V),
                          inputs(1, suppress_ids=suppress))
    assert int(tokens[0]) != 7


def _draws(logits: np.ndarray, n: int, **over) -> np.ndarray:
    B = n
    batch = np.repeat(logits[None], B, axis=0)
    s = inputs(B, temperature=np.full(B, over.pop("temperature", 1.0)), **{
        k: np.full(B, v) for k, v in over.items()})
    tokens, *_ = sample(jnp.asarray(batch), PenaltyState.zeros(B, V), s)
    return np.asarray(tokens)


def test_top_k_top_p_min_p_restrict_the_support():
    logits = np.log(np.array([0.4, 0.3, 0.15, 0.1, 0.05] + [1e-9] * (V - 5), np.float32))
    assert set(_draws(logits, 256, top_k=2).tolist()) <= {0, 1}
    assert set(_draws(logits, 256, top_p=0.6).tolist()) <= {0, 1}
    assert set(_draws(logits, 256, top_p=0.8).tolist()) <= {0, 1, 2}
    assert set(_draws(logits, 256, min_p=0.3).tolist()) <= {0, 1, 2}


def test_temperature_sampling_follows_the_distribution():
    probs = np.array([0.5, 0.3, 0.2] + [0.0] * (V - 3))
    logits = np.log(np.maximum(probs, 1e-30)).astype(np.float32)
    draws = _draws(logits, 4000)
    freq = np.bincount(draws, minlength=V)[:3] / len(draws)
    np.testing.assert_allclose(freq, probs[:3], atol=0.04)


def _numpy_filter(logits: np.ndarray, top_k: int, top_p: float, min_p: float) -> np.ndarray:
    order = np.sort(logits)[::-1]
    probs = np.exp(order - order.max())
    probs /= probs.sum()
    cut = -np.inf
    if 0 < top_k < len(logits):
        cut = max(cut, order[top_k - 1])
    if top_p < 1.0:
        before = np.cumsum(probs) - probs
        cut = max(cut, order[max(int(np.sum(before < top_p)), 1) - 1])
    if min_p > 0:
        cut = max(cut, order[0] + np.log(min_p))
    return np.where(logits >= cut, logits, -np.inf)


def test_filter_from_the_best_candidates_equals_a_full_sort(monkeypatch):
    from jaxengine.runtime import sampler

    monkeypatch.setattr(sampler, "FILTER_CANDIDATES", 8)
    rng = np.random.default_rng(3)
    peaked = rng.normal(size=V) * 4           # the top 8 hold most of the mass
    flat = rng.normal(size=V) * 0.1           # top_p needs far more than 8 tokens
    cases = [(peaked, 3, 1.0, 0.0), (peaked, 0, 0.9, 0.0), (peaked, 0, 1.0, 0.2),
             (peaked, 5, 0.8, 0.05), (flat, 0, 0.9, 0.0), (flat, 20, 1.0, 0.0),
             (peaked, 0, 1.0, 0.0), (flat, 0, 0.5, 0.5)]
    for group in (cases[:4], cases):  # candidates only, then a batch that must sort
        logits = np.stack([c[0] for c in group]).astype(np.float32)
        s = inputs(len(group), top_k=[c[1] for c in group], top_p=[c[2] for c in group],
                   min_p=[c[3] for c in group])
        got = np.asarray(sampler._filter(jnp.asarray(logits), s))
        for i, (_, k, p, m) in enumerate(group):
            want = _numpy_filter(logits[i], k, p, m)
            assert np.array_equal(np.isfinite(got[i]), np.isfinite(want)), (group[i][1:], i)


def test_logit_bias_bans_and_forces_and_shifts_the_logprobs():
    logits = np.random.default_rng(4).normal(size=(3, V)).astype(np.float32)
    best = logits.argmax(-1)
    ids = np.full((3, 4), np.iinfo(np.int32).max, np.int32)
    values = np.zeros((3, 4), np.float32)
    ids[0, 0], values[0, 0] = best[0], -100.0   # ban the greedy token
    ids[1, 0], values[1, 0] = 5, 100.0          # force token 5
    ids[2, :2], values[2, :2] = [1, 2], [0.5, -0.25]
    tokens, logprobs, _, _ = sample(jnp.asarray(logits), PenaltyState.zeros(3, V),
                                    inputs(3, bias_ids=ids, bias_values=values))
    assert int(tokens[0]) != best[0] and int(tokens[1]) == 5
    biased = logits[2].copy()
    biased[[1, 2]] += [0.5, -0.25]
    want = biased - np.log(np.exp(biased - biased.max()).sum()) - biased.max()
    np.testing.assert_allclose(float(logprobs[2]), want[int(tokens[2])], rtol=1e-5)


def test_top_logprobs_are_the_best_tokens_and_off_unless_asked():
    logits = np.random.default_rng(5).normal(size=(2, V)).astype(np.float32)
    tokens, logprobs, top, _ = sample(jnp.asarray(logits), PenaltyState.zeros(2, V),
                                      inputs(2, top_logprobs=[True, False]))
    want = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    order = np.argsort(-want[0])[:20]
    assert np.asarray(top.ids)[0].tolist() == order.tolist()
    np.testing.assert_allclose(np.asarray(top.values)[0], want[0, order], rtol=1e-5)
    assert float(top.values[0, 0]) == float(logprobs[0])  # greedy: the chosen token is best
    _, _, off, _ = sample(jnp.asarray(logits), PenaltyState.zeros(2, V), inputs(2))
    assert not np.asarray(off.values).any()
