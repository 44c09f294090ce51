"""Ragged paged attention: one call for a batch that mixes prefill chunks and decodes.

Layout (vLLM-v1 / RPA style): the query tokens of all sequences are packed along T; sequence s
owns q[cu_q_lens[s]:cu_q_lens[s+1]], which are the last q_len tokens of its kv_lens[s] tokens
(causal). Its keys live in pages page_indices[s, :]. Sequences at or past num_seqs are padding.
This file holds the pure-jnp reference, the oracle the Pallas kernels are checked against and
the CPU implementation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_sequence_ids(cu_q_lens: jax.Array, num_tokens: int) -> jax.Array:
    """[T] index of the sequence each packed query token belongs to."""
    t = jnp.arange(num_tokens, dtype=jnp.int32)
    return (jnp.searchsorted(cu_q_lens, t, side="right") - 1).astype(jnp.int32)


def ragged_paged_attention_reference(
    q: jax.Array,             # [T, N, H]
    k_pages: jax.Array,       # [P, S, K, H], or [L, P, S, K, H] with `layer`
    v_pages: jax.Array,       # like k_pages
    kv_lens: jax.Array,       # [B] int32, tokens in the cache per sequence (query included)
    page_indices: jax.Array,  # [B, Pb] int32
    cu_q_lens: jax.Array,     # [B + 1] int32
    num_seqs: jax.Array,      # [1] int32
    *,
    layer: jax.Array | None = None,
    sm_scale: float,
    soft_cap: float | None = None,
    sliding_window: int | None = None,
    causal: bool = True,
    return_lse: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:  # [T, N, H] (, lse [T, N] f32)
    """Each query token attends, over its own sequence's pages, to keys at positions <= its own.

    Every token gathers its sequence's pages, so the cost is T x Pb x S: callers keep Pb at the
    live context bucket. Tokens of padding sequences produce zeros (and lse -inf).
    causal=False: every query token of a sequence sees all kv_lens[s] keys (the sliding window,
    if any, then counts back from the end of the sequence). return_lse: also return the f32
    log-sum-exp of the (scaled, capped) scores per token and head, -inf where no key is visible.
    """
    T, N, H = q.shape
    K = k_pages.shape[-2]
    B, Pb = page_indices.shape
    S = k_pages.shape[-3]
    seq = jnp.clip(token_sequence_ids(cu_q_lens, T), 0, B - 1)            # [T]
    live = (seq < num_seqs[0]) & (jnp.arange(T) < cu_q_lens[num_seqs[0]])
    # Causal: a token's kv length counts the tokens up to and including itself.
    tokens_after = cu_q_lens[seq + 1] - 1 - jnp.arange(T) if causal else 0
    q_kv_len = jnp.where(live, kv_lens[seq] - tokens_after, 0)            # [T]
    pages = page_indices[seq]                                             # [T, Pb]
    if layer is None:
        k, v = k_pages[pages], v_pages[pages]                             # [T, Pb, S, K, H]
    else:
        k, v = k_pages[layer, pages], v_pages[layer, pages]
    k = k.reshape(T, Pb * S, K, H)
    v = v.reshape(T, Pb * S, K, H)
    qg = q.reshape(T, K, N // K, H)
    scores = jnp.einsum("tkgh,tlkh->tkgl", qg, k, preferred_element_type=jnp.float32) * sm_scale
    if soft_cap is not None:
        scores = soft_cap * jnp.tanh(scores / soft_cap)
    key_pos = jnp.arange(Pb * S)[None, :]
    mask = key_pos < q_kv_len[:, None]                                    # [T, L]
    if sliding_window is not None:
        mask &= key_pos >= q_kv_len[:, None] - sliding_window
    scores = jnp.where(mask[:, None, None, :], scores, -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    p = jnp.exp(scores - row_max)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    p = p / jnp.where(denom == 0.0, 1.0, denom)
    out = jnp.einsum("tkgl,tlkh->tkgh", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    out = out.reshape(T, N, H).astype(q.dtype)
    if not return_lse:
        return out
    lse = jnp.where(denom[..., 0] > 0.0, row_max[..., 0] + jnp.log(denom[..., 0]), -jnp.inf)
    return out, lse.reshape(T, N)
