"""Ragged paged attention in plain jnp for CPUs: query blocks x key chunks, online softmax.

The reference (ragged_paged_attention.py) gathers, for every query token, every page of its
sequence up to the step's page bucket: a prefill chunk of C tokens at context L reads C x L
keys, so a long prompt costs the square of its length in memory traffic. Here the keys of a
sequence are read once per block of BLOCK_Q of its query tokens, and only up to the last key
a block can see, in chunks of KEY_CHUNK keys merged with an online softmax, so memory stays
small and the work follows the live context, not the bucket.

Two loops, each with a trip count known only on device (lax.while_loop):
  - blocks of BLOCK_Q query rows of one sequence that has several tokens in the step (prefill
    chunks): its keys are gathered once per chunk and shared by the block's rows;
  - groups of SINGLE_GROUP sequences with one query token each (decodes): each row gathers its
    own sequence's keys, chunk by chunk, up to the longest context in the group.
Same layout and contract as the reference; tokens of padding sequences produce zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BLOCK_Q = 128       # query rows per block of one multi-token sequence
SINGLE_GROUP = 8    # single-token sequences per group
KEY_CHUNK = 512     # keys per inner step (a multiple of the page size)


def _chunk_pages(page_size: int) -> int:
    return max(1, KEY_CHUNK // page_size)


def ragged_paged_attention_blocked(
    q: jax.Array,             # [T, N, H]
    k_pages: jax.Array,       # [L, P, S, K, H] (with `layer`) or [P, S, K, H]
    v_pages: jax.Array,       # like k_pages
    kv_lens: jax.Array,       # [B] int32
    page_indices: jax.Array,  # [B, Pb] int32
    cu_q_lens: jax.Array,     # [B + 1] int32
    num_seqs: jax.Array,      # [1] int32
    *,
    layer: jax.Array | int | None = None,
    sm_scale: float,
    soft_cap: float | None = None,
    sliding_window: int | None = None,
) -> jax.Array:               # [T, N, H]
    if k_pages.ndim == 4:
        k_pages, v_pages, layer = k_pages[None], v_pages[None], 0
    T, N, H = q.shape
    bq = min(BLOCK_Q, 1 << max(T - 1, 0).bit_length())  # no sequence has more than T rows
    K = k_pages.shape[-2]
    S = k_pages.shape[-3]
    B = page_indices.shape[0]
    G = N // K
    pc = _chunk_pages(S)
    kc = pc * S
    # Chunks may run past a sequence's last page: those slots read the dummy page 0, masked.
    pages = jnp.pad(page_indices, ((0, 0), (0, pc)))
    live = jnp.arange(B) < num_seqs[0]
    q_lens = jnp.where(live, cu_q_lens[1:] - cu_q_lens[:-1], 0)
    qg = q.reshape(T, K, G, H)
    q_padded = jnp.pad(qg, ((0, bq), (0, 0), (0, 0), (0, 0)))  # blocks and spare rows
    out = jnp.zeros((T + bq, K, G, H), q.dtype)

    def scores(s):
        s = s * sm_scale
        return s if soft_cap is None else soft_cap * jnp.tanh(s / soft_cap)

    def visible(pos, c):
        """[R, kc] whether each key of chunk c is visible from each query position."""
        key_pos = c * kc + jnp.arange(kc)
        seen = key_pos[None, :] <= pos[:, None]
        if sliding_window is not None:
            seen &= key_pos[None, :] > pos[:, None] - sliding_window
        return seen

    def online_softmax(s, mask, carry, values, contract):
        """Fold one chunk of scores s [..., kc] into carry (running max, denominator [...],
        numerator [..., H], f32); `contract(p, values)` is p @ values for the layout."""
        m, denom, acc = carry
        s = jnp.where(mask, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - m_safe[..., None])
        scale = jnp.exp(jnp.where(jnp.isfinite(m), m - m_safe, -jnp.inf))
        pv = contract(p.astype(values.dtype), values)
        return m_new, denom * scale + jnp.sum(p, axis=-1), acc * scale[..., None] + pv

    def shared_chunk(qt, pos_rows, seq_pages, c, carry):
        """Rows of one sequence, batch dim K leading: qt [K, R*G, H], pos_rows [R*G]."""
        key_pages = jax.lax.dynamic_slice_in_dim(seq_pages, c * pc, pc)
        kk = k_pages[layer, key_pages].reshape(kc, K, H).transpose(1, 0, 2)   # [K, kc, H]
        vv = v_pages[layer, key_pages].reshape(kc, K, H).transpose(1, 0, 2)
        s = scores(jnp.einsum("kqh,klh->kql", qt, kk, preferred_element_type=jnp.float32))
        return online_softmax(s, visible(pos_rows, c)[None], carry, vv, lambda p, v: jnp.einsum(
            "kql,klh->kqh", p, v, preferred_element_type=jnp.float32))

    def per_row_chunk(rows_q, pos, row_pages, c, carry):
        """Rows of different sequences, batch dims (R, K) leading: rows_q [R, K, G, H]."""
        key_pages = jax.lax.dynamic_slice_in_dim(row_pages, c * pc, pc, axis=1)
        R = rows_q.shape[0]
        kk = k_pages[layer, key_pages].reshape(R, kc, K, H).transpose(0, 2, 1, 3)
        vv = v_pages[layer, key_pages].reshape(R, kc, K, H).transpose(0, 2, 1, 3)
        s = scores(jnp.einsum("rkgh,rklh->rkgl", rows_q, kk,
                              preferred_element_type=jnp.float32))
        return online_softmax(s, visible(pos, c)[:, None, None, :], carry, vv,
                              lambda p, v: jnp.einsum("rkgl,rklh->rkgh", p, v,
                                                      preferred_element_type=jnp.float32))

    def first_chunk(pos_lo):
        if sliding_window is None:
            return jnp.int32(0)
        return jnp.maximum(pos_lo - sliding_window + 1, 0) // kc

    def run_chunks(chunk, lead_shape, lo, hi):
        init = (jnp.full(lead_shape, -jnp.inf, jnp.float32), jnp.zeros(lead_shape, jnp.float32),
                jnp.zeros((*lead_shape, H), jnp.float32))
        _, denom, acc = jax.lax.fori_loop(lo, hi, chunk, init)
        return (acc / jnp.where(denom == 0.0, 1.0, denom)[..., None]).astype(q.dtype)

    # Blocks of multi-token sequences, in token order (a block's dead tail rows spill into
    # the next sequence's rows, which later blocks and the single groups overwrite).
    multi = q_lens > 1
    nblk = jnp.where(multi, (q_lens + bq - 1) // bq, 0)
    blk_end = jnp.cumsum(nblk)
    num_blocks = blk_end[-1]

    def block(b, out):
        s = jnp.searchsorted(blk_end, b, side="right").astype(jnp.int32)
        qstart = (b - (blk_end[s] - nblk[s])) * bq
        t0 = cu_q_lens[s] + qstart
        i = jnp.arange(bq)
        pos = jnp.where(qstart + i < q_lens[s], kv_lens[s] - q_lens[s] + qstart + i, -1)
        rows_q = jax.lax.dynamic_slice_in_dim(q_padded, t0, bq)             # [bq, K, G, H]
        qt = rows_q.transpose(1, 0, 2, 3).reshape(K, bq * G, H)
        pos_rows = jnp.repeat(pos, G)
        last = kv_lens[s] - q_lens[s] + jnp.minimum(qstart + bq, q_lens[s]) - 1
        seq_pages = pages[s]
        o = run_chunks(lambda c, carry: shared_chunk(qt, pos_rows, seq_pages, c, carry),
                       (K, bq * G), first_chunk(kv_lens[s] - q_lens[s] + qstart),
                       last // kc + 1)
        o = o.reshape(K, bq, G, H).transpose(1, 0, 2, 3)
        return jax.lax.dynamic_update_slice_in_dim(out, o, t0, 0)

    out = jax.lax.fori_loop(0, num_blocks, block, out)

    # Groups of single-token sequences.
    single = live & (q_lens == 1)
    single_ids = jnp.nonzero(single, size=B, fill_value=B)[0]
    num_single = jnp.sum(single)
    padded_kv = jnp.pad(kv_lens, (0, SINGLE_GROUP + 1))
    padded_cu = jnp.pad(cu_q_lens, (0, SINGLE_GROUP))
    padded_pages = jnp.pad(pages, ((0, SINGLE_GROUP + 1), (0, 0)))
    padded_ids = jnp.pad(single_ids, (0, SINGLE_GROUP), constant_values=B)

    def group(g, out):
        ids = jax.lax.dynamic_slice_in_dim(padded_ids, g * SINGLE_GROUP, SINGLE_GROUP)
        ok = ids < B
        lens = jnp.where(ok, padded_kv[ids], 0)
        pos = jnp.where(ok, lens - 1, -1)
        tokens = jnp.where(ok, padded_cu[ids], T)                       # T: a spare row
        rows_q = q_padded[tokens]
        row_pages = padded_pages[ids]                                   # [R, Pb + pc]
        lo = first_chunk(jnp.min(jnp.where(ok, pos, jnp.iinfo(jnp.int32).max)))
        o = run_chunks(lambda c, carry: per_row_chunk(rows_q, pos, row_pages, c, carry),
                       (SINGLE_GROUP, K, G), jnp.minimum(lo, jnp.max(lens) // kc),
                       (jnp.max(lens) + kc - 1) // kc)
        return out.at[tokens].set(o)

    groups = (num_single + SINGLE_GROUP - 1) // SINGLE_GROUP
    out = jax.lax.fori_loop(0, groups, group, out)

    t = jnp.arange(T)
    token_live = t < cu_q_lens[num_seqs[0]]
    return jnp.where(token_live[:, None, None], out[:T].reshape(T, N, H), 0).astype(q.dtype)
