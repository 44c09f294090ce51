"""On-device sampling: logit bias, penalties, temperature, top-k / top-p / min-p, per-request
seeds, and the logprobs requests ask for.

Reported logprobs are those of the distribution the request samples from before temperature
and truncation: log-softmax of the logits after the grammar mask, logit_bias and penalties
(OpenAI adds the bias before the softmax; temperature and top-k/top-p/min-p shape how a token
is drawn, not the model's distribution).

Penalty state lives on device, one row per running-request slot (the last row is a dummy for
padding): which tokens a request has seen (prompt and output, for the repetition penalty) and
how often it produced each (for the frequency and presence penalties).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxengine.sampling_params import MAX_TOP_LOGPROBS


class PenaltyState(NamedTuple):
    seen: jax.Array        # [R + 1, V] bool
    out_counts: jax.Array  # [R + 1, V] int32

    @staticmethod
    def zeros(num_slots: int, vocab_size: int) -> PenaltyState:
        return PenaltyState(jnp.zeros((num_slots + 1, vocab_size), jnp.bool_),
                            jnp.zeros((num_slots + 1, vocab_size), jnp.int32))


class SamplingInputs(NamedTuple):
    """Per sequence [B]; padding rows use the dummy slot and greedy defaults."""

    temperature: jax.Array         # f32; 0 = greedy
    top_p: jax.Array               # f32
    top_k: jax.Array               # i32; 0 = off
    min_p: jax.Array               # f32
    repetition_penalty: jax.Array  # f32
    frequency_penalty: jax.Array   # f32
    presence_penalty: jax.Array    # f32
    seed: jax.Array                # u32
    sample_index: jax.Array        # i32, which output token this is (folds into the key)
    slot: jax.Array                # i32 penalty-state row
    reset: jax.Array               # bool, clear the row before this step's tokens
    counts_output: jax.Array       # bool, the sampled token is a real new output token
    suppress_ids: jax.Array        # [B, E] i32 tokens banned this step (min_new_tokens); V = none
    bias_ids: jax.Array            # [B, W] i32 logit_bias tokens; V or more = none
    bias_values: jax.Array         # [B, W] f32 added to those tokens' logits
    top_logprobs: jax.Array        # bool, the request wants its top alternatives (or logprob_ids)
    logprob_ids: jax.Array         # [B, M] i32 tokens whose logprobs the request wants; 0 pads


class TopLogprobs(NamedTuple):
    """The MAX_TOP_LOGPROBS best tokens of every row; a request keeps the prefix it asked for."""

    ids: jax.Array     # [B, MAX_TOP_LOGPROBS] i32, most likely first
    values: jax.Array  # [B, MAX_TOP_LOGPROBS] f32
    id_values: jax.Array  # [B, M] f32 the logprobs of SamplingInputs.logprob_ids


def record_tokens(state: PenaltyState, sampling: SamplingInputs, token_slot: jax.Array,
                  tokens: jax.Array, token_is_output: jax.Array) -> PenaltyState:
    """Clear rows of newly admitted requests, then record the step's input tokens [T]."""
    dummy = state.seen.shape[0] - 1
    reset_rows = jnp.where(sampling.reset, sampling.slot, dummy)
    seen = state.seen.at[reset_rows].set(False)
    counts = state.out_counts.at[reset_rows].set(0)
    seen = seen.at[token_slot, tokens].set(True)
    counts = counts.at[token_slot, tokens].add(token_is_output.astype(jnp.int32))
    return PenaltyState(seen.at[dummy].set(False), counts.at[dummy].set(0))


def _apply_penalties(logits: jax.Array, state: PenaltyState, s: SamplingInputs) -> jax.Array:
    seen = state.seen[s.slot]                               # [B, V]
    counts = state.out_counts[s.slot].astype(jnp.float32)   # [B, V]
    rep = s.repetition_penalty[:, None]
    penalized = jnp.where(logits > 0, logits / rep, logits * rep)
    logits = jnp.where(seen, penalized, logits)
    logits = logits - s.frequency_penalty[:, None] * counts
    logits = logits - s.presence_penalty[:, None] * (counts > 0)
    rows = jnp.arange(logits.shape[0])[:, None]
    return logits.at[rows, s.suppress_ids].set(-jnp.inf, mode="drop")


# Top-k / top-p cuts are looked for among this many best tokens first: XLA:CPU sorts a
# [B, V] array in ~100 ms but finds its top 256 in ~1 ms. Rows whose cut lies deeper (top_k
# above it, or top_p above the candidates' mass) make the step sort the whole vocabulary.
FILTER_CANDIDATES = 256


def _cut(best: jax.Array, lse: jax.Array, s: SamplingInputs, vocab: int) -> jax.Array:
    """The lowest logit each row keeps [B, 1] under top-k, top-p and min-p, from `best` [B, W]
    (its W highest logits, descending) and the log-sum-exp over the whole row `lse` [B]."""
    W = best.shape[-1]
    k = jnp.where(s.top_k > 0, jnp.minimum(s.top_k, vocab), vocab)
    kth = jnp.take_along_axis(best, (jnp.minimum(k, W) - 1)[:, None], axis=-1)
    kth = jnp.where((k < vocab)[:, None], kth, -jnp.inf)
    probs = jnp.exp(best - lse[:, None])
    # Keep the smallest prefix whose mass reaches top_p (the token crossing it included).
    before = jnp.cumsum(probs, axis=-1) - probs
    n_keep = jnp.maximum(jnp.sum(before < s.top_p[:, None], axis=-1), 1)
    pth = jnp.take_along_axis(best, (n_keep - 1)[:, None], axis=-1)
    pth = jnp.where((s.top_p < 1.0)[:, None], pth, -jnp.inf)
    min_logit = best[:, :1] + jnp.log(jnp.maximum(s.min_p, 1e-30))[:, None]
    return jnp.maximum(jnp.maximum(kth, pth), jnp.where(s.min_p[:, None] > 0, min_logit,
                                                         -jnp.inf))


def _filter(logits: jax.Array, s: SamplingInputs) -> jax.Array:
    """Mask tokens outside top-k, top-p and min-p (logits already temperature-scaled)."""
    V = logits.shape[-1]
    lse = jax.nn.logsumexp(logits, axis=-1)
    best = jax.lax.top_k(logits, min(FILTER_CANDIDATES, V))[0]
    mass = jnp.sum(jnp.exp(best - lse[:, None]), axis=-1)
    deeper = jnp.any((s.top_k > best.shape[-1]) & (s.top_k < V)
                     | (s.top_p < 1.0) & (mass < s.top_p))
    threshold = jax.lax.cond(
        deeper, lambda: _cut(jnp.sort(logits, axis=-1)[:, ::-1], lse, s, V),
        lambda: _cut(best, lse, s, V))
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def apply_token_bitmask(logits: jax.Array, bitmask: jax.Array) -> jax.Array:
    """logits [B, V]; bitmask [B, ceil(V/32)] i32 whose bit j of word w allows token 32w + j."""
    bits = (bitmask[:, :, None] >> jnp.arange(32, dtype=jnp.int32)) & 1     # [B, W, 32]
    allowed = bits.reshape(bitmask.shape[0], -1)[:, :logits.shape[-1]] != 0   # [B, V]
    return jnp.where(allowed, logits, -jnp.inf)


def _top_logprobs(logprobs: jax.Array, s: SamplingInputs) -> TopLogprobs:
    """Zeros unless a row asks: most steps skip the top-k over the vocabulary."""
    B, K = logprobs.shape[0], min(MAX_TOP_LOGPROBS, logprobs.shape[-1])

    M = s.logprob_ids.shape[-1]

    def top(x):
        values, ids = jax.lax.top_k(x, K)
        return TopLogprobs(ids.astype(jnp.int32), values,
                           jnp.take_along_axis(x, s.logprob_ids, axis=-1))

    return jax.lax.cond(jnp.any(s.top_logprobs), top,
                        lambda x: TopLogprobs(jnp.zeros((B, K), jnp.int32),
                                              jnp.zeros((B, K), jnp.float32),
                                              jnp.zeros((B, M), jnp.float32)), logprobs)


def sample(logits: jax.Array, state: PenaltyState, s: SamplingInputs,
           bitmask: jax.Array | None = None
           ) -> tuple[jax.Array, jax.Array, TopLogprobs, PenaltyState]:
    """logits [B, V] f32 -> (tokens [B] i32, their logprobs [B] f32, the top alternatives,
    state with outputs counted). A grammar `bitmask` ([B, ceil(V/32)] i32) bans tokens before
    anything else; steps without one compile without it."""
    if bitmask is not None:
        logits = apply_token_bitmask(logits, bitmask)
    # Most batches use no penalty: skip the [B, V] gathers of the penalty state then.
    penalized = (jnp.any((s.repetition_penalty != 1.0) | (s.frequency_penalty != 0.0)
                         | (s.presence_penalty != 0.0))
                 | jnp.any(s.suppress_ids < logits.shape[-1]))
    logits = jax.lax.cond(penalized, lambda x: _apply_penalties(x, state, s), lambda x: x,
                          logits)
    # Added last, so that -100 bans a token whatever the penalties did; a grammar's -inf stays.
    batch_rows = jnp.arange(logits.shape[0])[:, None]
    logits = jax.lax.cond(
        jnp.any(s.bias_ids < logits.shape[-1]),
        lambda x: x.at[batch_rows, s.bias_ids].add(s.bias_values, mode="drop"), lambda x: x,
        logits)
    logprobs_all = jax.nn.log_softmax(logits, axis=-1)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    is_greedy = (s.temperature <= 0.0) | (s.top_k == 1)

    def stochastic(logits):
        scaled = logits / jnp.where(is_greedy, 1.0, s.temperature)[:, None]
        needs_filter = jnp.any((s.top_k > 0) | (s.top_p < 1.0) | (s.min_p > 0.0))
        scaled = jax.lax.cond(needs_filter, lambda x: _filter(x, s), lambda x: x, scaled)

        def gumbel(seed, index):
            key = jax.random.fold_in(jax.random.key(seed), index)
            return jax.random.gumbel(key, (logits.shape[-1],), jnp.float32)

        noise = jax.vmap(gumbel)(s.seed, s.sample_index)
        drawn = jnp.argmax(scaled + noise, axis=-1).astype(jnp.int32)
        return jnp.where(is_greedy, greedy, drawn)

    tokens = jax.lax.cond(jnp.all(is_greedy), lambda x: greedy, stochastic, logits)
    logprobs = jnp.take_along_axis(logprobs_all, tokens[:, None], axis=-1)[:, 0]
    dummy = state.seen.shape[0] - 1
    rows = jnp.where(s.counts_output, s.slot, dummy)
    counts = state.out_counts.at[rows, tokens].add(1).at[dummy].set(0)
    seen = state.seen.at[rows, tokens].set(True).at[dummy].set(False)
    return tokens, logprobs, _top_logprobs(logprobs_all, s), PenaltyState(seen, counts)
