"""Ragged paged attention in plain jnp for CPUs: query blocks x key chunks, online softmax.

The reference (ragged_paged_attention.py) gathers, for every query token, every page of its
sequence up to the step's page bucket: a prefill chunk of C tokens at context L reads C x L
keys, so a long prompt costs the square of its length in memory traffic. Here the keys of a
sequence are read once per block of its query tokens, and only up to the last key the block
can see, in chunks merged with an online softmax, so memory stays small and the work follows
the live context, not the bucket.

Loops with trip counts known only on device (lax.while_loop), each over key chunks inside:
  - blocks of query rows of one sequence that has several tokens in the step: its keys are
    gathered once per chunk and shared by the block's rows; long sequences (prefill chunks)
    in large blocks over large chunks, short ones (short prompts, chunk tails) in small ones;
  - groups of SINGLE_GROUP sequences with one query token each (decodes): each row gathers its
    own sequence's keys, chunk by chunk, up to the longest context in the group.
Same layout and contract as the reference; tokens of padding sequences produce zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Sequences with several tokens in the step, by how many: (most tokens, query rows per block,
# keys per inner step). Small blocks over small chunks waste little on short prompts and chunk
# tails; large ones amortise the loop over prefill chunks.
BLOCK_TIERS = ((32, 32, 128), (128, 64, 128), (None, 128, 512))
SINGLE_GROUP = 8    # single-token sequences per group
DECODE_KEY_CHUNK = 64   # keys per inner step of a group of decodes: each row gathers its own


def _chunk_pages(keys: int, page_size: int) -> int:
    return max(1, keys // page_size)


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
    t_pow2 = 1 << max(T - 1, 0).bit_length()  # no sequence has more rows than this
    K = k_pages.shape[-2]
    S = k_pages.shape[-3]
    B = page_indices.shape[0]
    G = N // K
    rows = min(SINGLE_GROUP, B)  # decodes per group
    dpc = _chunk_pages(DECODE_KEY_CHUNK, S)
    dkc = dpc * S
    pad = max(_chunk_pages(keys, S) for *_, keys in BLOCK_TIERS)
    pad = max(pad, dpc)
    # Chunks may run past a sequence's last page: those slots read the dummy page 0, masked.
    pages = jnp.pad(page_indices, ((0, 0), (0, pad)))
    live = jnp.arange(B) < num_seqs[0]
    q_lens = jnp.where(live, cu_q_lens[1:] - cu_q_lens[:-1], 0)
    qg = q.reshape(T, K, G, H)
    spare = min(max(rows for _, rows, _ in BLOCK_TIERS), t_pow2)  # rows past T blocks touch
    q_padded = jnp.pad(qg, ((0, spare), (0, 0), (0, 0), (0, 0)))
    out = jnp.zeros((T + spare, K, G, H), q.dtype)

    def scores(s):
        s = s * sm_scale
        return s if soft_cap is None else soft_cap * jnp.tanh(s / soft_cap)

    def visible(pos, c, size):
        """[R, size] whether each key of chunk c is visible from each query position."""
        key_pos = c * size + jnp.arange(size)
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

    def shared_chunk(qt, pos_rows, seq_pages, pc, c, carry):
        """Rows of one sequence, batch dim K leading: qt [K, R*G, H], pos_rows [R*G]; chunks
        of pc pages."""
        kc = pc * S
        key_pages = jax.lax.dynamic_slice_in_dim(seq_pages, c * pc, pc)
        kk = k_pages[layer, key_pages].reshape(kc, K, H).transpose(1, 0, 2)   # [K, kc, H]
        vv = v_pages[layer, key_pages].reshape(kc, K, H).transpose(1, 0, 2)
        s = scores(jnp.einsum("kqh,klh->kql", qt, kk, preferred_element_type=jnp.float32))
        return online_softmax(s, visible(pos_rows, c, kc)[None], carry, vv, lambda p, v: jnp.einsum(
            "kql,klh->kqh", p, v, preferred_element_type=jnp.float32))

    def per_row_chunk(rows_q, pos, row_pages, c, carry):
        """Rows of different sequences, batch dims (R, K) leading: rows_q [R, K, G, H]."""
        key_pages = jax.lax.dynamic_slice_in_dim(row_pages, c * dpc, dpc, axis=1)
        R = rows_q.shape[0]
        kk = k_pages[layer, key_pages].reshape(R, dkc, K, H).transpose(0, 2, 1, 3)
        vv = v_pages[layer, key_pages].reshape(R, dkc, K, H).transpose(0, 2, 1, 3)
        s = scores(jnp.einsum("rkgh,rklh->rkgl", rows_q, kk,
                              preferred_element_type=jnp.float32))
        return online_softmax(s, visible(pos, c, dkc)[:, None, None, :], carry, vv,
                              lambda p, v: jnp.einsum("rkgl,rklh->rkgh", p, v,
                                                      preferred_element_type=jnp.float32))

    def first_chunk(pos_lo, size):
        if sliding_window is None:
            return jnp.int32(0)
        return jnp.maximum(pos_lo - sliding_window + 1, 0) // size

    def run_chunks(chunk, lead_shape, lo, hi):
        init = (jnp.full(lead_shape, -jnp.inf, jnp.float32), jnp.zeros(lead_shape, jnp.float32),
                jnp.zeros((*lead_shape, H), jnp.float32))
        _, denom, acc = jax.lax.fori_loop(lo, hi, chunk, init)
        return (acc / jnp.where(denom == 0.0, 1.0, denom)[..., None]).astype(q.dtype)

    def run_blocks(out, select, bq, pc):
        """Blocks of bq query rows of the `select`ed sequences (chunks of pc pages); each
        block writes its live rows only."""
        bq = min(bq, t_pow2)
        kc = pc * S
        nblk = jnp.where(select, (q_lens + bq - 1) // bq, 0)
        blk_end = jnp.cumsum(nblk)

        def block(b, out):
            s = jnp.searchsorted(blk_end, b, side="right").astype(jnp.int32)
            qstart = (b - (blk_end[s] - nblk[s])) * bq
            t0 = cu_q_lens[s] + qstart
            i = jnp.arange(bq)
            pos = jnp.where(qstart + i < q_lens[s], kv_lens[s] - q_lens[s] + qstart + i, -1)
            rows_q = jax.lax.dynamic_slice_in_dim(q_padded, t0, bq)         # [bq, K, G, H]
            qt = rows_q.transpose(1, 0, 2, 3).reshape(K, bq * G, H)
            last = kv_lens[s] - q_lens[s] + jnp.minimum(qstart + bq, q_lens[s]) - 1
            seq_pages = pages[s]
            o = run_chunks(
                lambda c, carry: shared_chunk(qt, jnp.repeat(pos, G), seq_pages, pc, c, carry),
                (K, bq * G), first_chunk(kv_lens[s] - q_lens[s] + qstart, kc), last // kc + 1)
            o = o.reshape(K, bq, G, H).transpose(1, 0, 2, 3)
            kept = jax.lax.dynamic_slice_in_dim(out, t0, bq)  # rows of the next sequence
            o = jnp.where((pos >= 0)[:, None, None, None], o, kept)
            return jax.lax.dynamic_update_slice_in_dim(out, o, t0, 0)

        return jax.lax.fori_loop(0, blk_end[-1], block, out)

    fewest = 2
    for most, bq, keys in BLOCK_TIERS:
        select = (q_lens >= fewest) if most is None else (q_lens >= fewest) & (q_lens <= most)
        if fewest <= T:  # else no sequence of the step can be in this tier
            out = run_blocks(out, select, bq, _chunk_pages(keys, S))
        fewest = (most or 0) + 1

    # Groups of single-token sequences.
    single = live & (q_lens == 1)
    single_ids = jnp.nonzero(single, size=B, fill_value=B)[0]
    num_single = jnp.sum(single)
    padded_kv = jnp.pad(kv_lens, (0, rows + 1))
    padded_cu = jnp.pad(cu_q_lens, (0, rows))
    padded_pages = jnp.pad(pages, ((0, rows + 1), (0, 0)))
    padded_ids = jnp.pad(single_ids, (0, rows), constant_values=B)

    def group(g, out):
        ids = jax.lax.dynamic_slice_in_dim(padded_ids, g * rows, rows)
        ok = ids < B
        lens = jnp.where(ok, padded_kv[ids], 0)
        pos = jnp.where(ok, lens - 1, -1)
        tokens = jnp.where(ok, padded_cu[ids], T)                       # T: a spare row
        rows_q = q_padded[tokens]
        row_pages = padded_pages[ids]                                   # [R, Pb + pc]
        lo = first_chunk(jnp.min(jnp.where(ok, pos, jnp.iinfo(jnp.int32).max)), dkc)
        o = run_chunks(lambda c, carry: per_row_chunk(rows_q, pos, row_pages, c, carry),
                       (rows, K, G), jnp.minimum(lo, jnp.max(lens) // dkc),
                       (jnp.max(lens) + dkc - 1) // dkc)
        return out.at[tokens].set(o)

    groups = (num_single + rows - 1) // rows
    out = jax.lax.fori_loop(0, groups, group, out)

    t = jnp.arange(T)
    token_live = t < cu_q_lens[num_seqs[0]]
    return jnp.where(token_live[:, None, None], out[:T].reshape(T, N, H), 0).astype(q.dtype)
