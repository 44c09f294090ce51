"""Shared-prefix (cascade) attention over the paged KV cache.

When many sequences of a batch share a radix prefix, their queries attend to it in one pass:
all their query tokens are packed into one non-causal "sequence" whose keys are the prefix
pages, so a query block reads each prefix page once for all the sequences in it instead of once
per sequence. Each sequence's own suffix (keys past the prefix, causal) is attended separately
with its page table shifted past the prefix, and the two partial results are merged with their
log-sum-exps. The plain ragged attention is the reference: cascade == plain attention.

The prefix is page-aligned: `prefix_len` is rounded down to a multiple of page_size (a radix
prefix shares whole pages; a partially shared tail page is attended as suffix). A sequence
uses the prefix only if it is marked in `prefix_seq_mask`, its first pages are the prefix
pages (the caller's promise), and its queries all lie past the prefix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from pallas_kernels.ragged_paged_attention import (
    ragged_paged_attention_reference,
    token_sequence_ids,
)


def merge_attention(o1: jax.Array, lse1: jax.Array, o2: jax.Array,
                    lse2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Merge two partial attentions over disjoint key sets: o [T, N, H], lse [T, N] f32."""
    lse = jnp.logaddexp(lse1, lse2)
    finite = jnp.isfinite(lse)
    safe = jnp.where(finite, lse, 0.0)
    w1 = jnp.where(finite, jnp.exp(lse1 - safe), 0.0)[..., None]
    w2 = jnp.where(finite, jnp.exp(lse2 - safe), 0.0)[..., None]
    out = w1 * o1.astype(jnp.float32) + w2 * o2.astype(jnp.float32)
    return out.astype(o1.dtype), lse


def _impl(name: str, interpret: bool) -> Callable:
    if name == "reference":
        return ragged_paged_attention_reference
    if name == "gpu":
        from pallas_kernels.ragged_paged_attention_gpu import ragged_paged_attention_gpu
        return functools.partial(ragged_paged_attention_gpu, interpret=interpret)
    if name == "tpu":
        from pallas_kernels.ragged_paged_attention_tpu import ragged_paged_attention_tpu
        return functools.partial(ragged_paged_attention_tpu, interpret=interpret)
    raise ValueError(f"unknown attention implementation {name!r}")


@functools.partial(jax.jit, static_argnames=("sm_scale", "soft_cap", "return_lse", "impl",
                                             "interpret", "prefix_block_q"))
def cascade_attention(
    q: jax.Array,               # [T, N, H]
    k_pages: jax.Array,         # [L, P, S, K, H] (or [P, S, K, H] without layer)
    v_pages: jax.Array,
    kv_lens: jax.Array,         # [B] int32
    page_indices: jax.Array,    # [B, Pb] int32
    cu_q_lens: jax.Array,       # [B + 1] int32
    num_seqs: jax.Array,        # [1] int32
    prefix_pages: jax.Array,    # [Pp] int32 pages of the shared prefix
    prefix_len: jax.Array,      # [] or [1] int32 tokens of the shared prefix
    prefix_seq_mask: jax.Array,  # [B] bool sequences that share it
    *,
    layer: jax.Array | None = None,
    sm_scale: float,
    soft_cap: float | None = None,
    return_lse: bool = False,
    impl: str = "reference",
    interpret: bool = False,
    prefix_block_q: int | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Causal ragged paged attention computed as shared prefix + per-sequence suffix."""
    T, N, H = q.shape
    B, Pb = page_indices.shape
    S = k_pages.shape[-3]
    Pp = prefix_pages.shape[0]
    if prefix_seq_mask.shape != (B,) or prefix_pages.ndim != 1:
        raise ValueError("prefix_pages [Pp] and prefix_seq_mask [B] expected")
    attn = _impl(impl, interpret)
    kw = dict(layer=layer, sm_scale=sm_scale, soft_cap=soft_cap, return_lse=True)

    q_lens = cu_q_lens[1:] - cu_q_lens[:-1]
    plen = jnp.minimum(jnp.reshape(prefix_len, ()).astype(jnp.int32), Pp * S) // S * S
    live = jnp.arange(B) < num_seqs[0]
    shares = live & prefix_seq_mask & (kv_lens - q_lens >= plen) & (plen > 0)
    shared_len = jnp.where(shares, plen, 0).astype(jnp.int32)               # [B]

    # Prefix pass: every query token of a sharing sequence, packed first, one non-causal
    # sequence over the prefix pages.
    seq_t = jnp.clip(token_sequence_ids(cu_q_lens, T), 0, B - 1)
    t = jnp.arange(T)
    tok_shares = shares[seq_t] & (t >= cu_q_lens[0]) & (t < cu_q_lens[num_seqs[0]])
    order = jnp.argsort(~tok_shares, stable=True)                          # sharing first
    n_shared = jnp.sum(tok_shares).astype(jnp.int32)
    pre_cu = jnp.stack([jnp.int32(0), n_shared])
    pre_out, pre_lse = attn(
        q[order], k_pages, v_pages, jnp.reshape(plen, (1,)), prefix_pages[None].astype(jnp.int32),
        pre_cu, jnp.ones((1,), jnp.int32), causal=False,
        **({} if impl == "reference" or prefix_block_q is None
           else {"block_q": prefix_block_q}), **kw)
    inv = jnp.argsort(order)
    pre_out, pre_lse = pre_out[inv], pre_lse[inv]
    pre_lse = jnp.where(tok_shares[:, None], pre_lse, -jnp.inf)

    # Suffix pass: each sequence's keys past its shared prefix, causal as usual.
    skip = shared_len // S
    cols = jnp.clip(jnp.arange(Pb)[None, :] + skip[:, None], 0, Pb - 1)
    suf_pages = jnp.take_along_axis(page_indices, cols, axis=1)
    suf_out, suf_lse = attn(q, k_pages, v_pages, kv_lens - shared_len, suf_pages, cu_q_lens,
                            num_seqs, causal=True, **kw)
    out, lse = merge_attention(pre_out, pre_lse, suf_out, suf_lse)
    return (out, lse) if return_lse else out
