"""Re-blocking of a ragged query batch for the Pallas kernels (plain jnp, outside the kernels).

The kernels grid over query blocks of `block_q` tokens x `group` heads of one KV head. A block
never straddles two sequences, so a program's rows all share one page table and no two
programs write the same output rows (no masked or racing stores). The wrapper gathers q into
that padded layout and gathers the output back; both are cheap next to the K/V reads.

Layout: q_blocks [NB, K, block_q * Gp, H], row r = token (r // Gp) of the block, head r % Gp
of the KV head's group (Gp = group padded to a power of two; padded heads are zeros).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pallas_kernels.ragged_paged_attention import token_sequence_ids


def next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def num_q_blocks(num_tokens: int, num_seqs_max: int, block_q: int) -> int:
    """Static upper bound on sum_s ceil(q_len_s / block_q) for sum_s q_len_s <= num_tokens."""
    nonempty = min(num_seqs_max, num_tokens)
    return max(1, min(num_tokens, (num_tokens + nonempty * (block_q - 1)) // block_q))


class QBlocks(NamedTuple):
    blk_seq: jax.Array     # [NB] int32 sequence of each block; B for unused blocks
    blk_qstart: jax.Array  # [NB] int32 index (within its sequence's queries) of the first row token
    q_lens: jax.Array      # [B] int32 query tokens per sequence (0 for padding slots)
    row_of_token: jax.Array  # [T] int32 padded row (block * block_q + i) of each packed token
    token_live: jax.Array  # [T] bool token belongs to a live sequence
    token_of_row: jax.Array  # [NB * block_q] int32 packed token of each padded row (clipped)
    row_live: jax.Array    # [NB * block_q] bool


def plan_q_blocks(cu_q_lens: jax.Array, num_seqs: jax.Array, num_tokens: int,
                  block_q: int) -> QBlocks:
    B = cu_q_lens.shape[0] - 1
    T = num_tokens
    nb = num_q_blocks(T, B, block_q)
    seq_ids = jnp.arange(B, dtype=jnp.int32)
    q_lens = jnp.where(seq_ids < num_seqs[0], cu_q_lens[1:] - cu_q_lens[:-1], 0)
    q_lens = q_lens.astype(jnp.int32)
    nblk = (q_lens + block_q - 1) // block_q
    blk_end = jnp.cumsum(nblk).astype(jnp.int32)
    blk_begin = blk_end - nblk
    b = jnp.arange(nb, dtype=jnp.int32)
    blk_seq = jnp.searchsorted(blk_end, b, side="right").astype(jnp.int32)   # B when unused
    seq_c = jnp.minimum(blk_seq, B - 1)
    blk_qstart = jnp.where(blk_seq < B, (b - blk_begin[seq_c]) * block_q, 0).astype(jnp.int32)

    t = jnp.arange(T, dtype=jnp.int32)
    seq_t = jnp.clip(token_sequence_ids(cu_q_lens, T), 0, B - 1)
    token_live = (seq_t < num_seqs[0]) & (t < cu_q_lens[num_seqs[0]]) & (t >= cu_q_lens[0])
    row_of_token = jnp.where(token_live, blk_begin[seq_t] * block_q + t - cu_q_lens[seq_t], 0)

    r = jnp.arange(nb * block_q, dtype=jnp.int32)
    rb, ri = r // block_q, r % block_q
    rs = seq_c[rb]
    row_live = (blk_seq[rb] < B) & (blk_qstart[rb] + ri < q_lens[rs])
    token_of_row = jnp.clip(cu_q_lens[rs] + blk_qstart[rb] + ri, 0, T - 1)
    return QBlocks(blk_seq, blk_qstart, q_lens, row_of_token.astype(jnp.int32), token_live,
                   token_of_row.astype(jnp.int32), row_live)


def to_blocks(q: jax.Array, plan: QBlocks, num_kv_heads: int, block_q: int,
              group_pad: int) -> jax.Array:
    """q [T, N, H] -> [NB, K, block_q * Gp, H] (dead rows and padded heads are zero)."""
    _, N, H = q.shape
    K = num_kv_heads
    G = N // K
    qr = jnp.where(plan.row_live[:, None, None], q[plan.token_of_row], 0)   # [NB*bq, N, H]
    qr = qr.reshape(-1, block_q, K, G, H)
    if group_pad != G:
        qr = jnp.pad(qr, ((0, 0), (0, 0), (0, 0), (0, group_pad - G), (0, 0)))
    nb = qr.shape[0]
    return qr.transpose(0, 2, 1, 3, 4).reshape(nb, K, block_q * group_pad, H)


def from_blocks(o: jax.Array, plan: QBlocks, num_heads: int, block_q: int,
                fill: float = 0.0) -> jax.Array:
    """[NB, K, block_q * Gp, *rest] -> [T, N, *rest]; tokens of padding sequences get `fill`."""
    nb, K, R = o.shape[:3]
    rest = o.shape[3:]
    gp = R // block_q
    G = num_heads // K
    o = o.reshape(nb, K, block_q, gp, *rest)[:, :, :, :G]
    o = jnp.moveaxis(o, 2, 1).reshape(nb * block_q, num_heads, *rest)
    out = o[plan.row_of_token]
    mask = plan.token_live.reshape((-1,) + (1,) * (out.ndim - 1))
    return jnp.where(mask, out, jnp.asarray(fill, out.dtype))


def check_inputs(q: jax.Array, k_pages: jax.Array, v_pages: jax.Array, kv_lens: jax.Array,
                 page_indices: jax.Array, cu_q_lens: jax.Array, num_seqs: jax.Array,
                 layer: jax.Array | None, sliding_window: int | None
                 ) -> tuple[jax.Array, jax.Array, jax.Array | int]:
    """The kernels' shared ValueError checks; a single-layer cache [P, S, K, H] comes back
    as a stacked one [1, P, S, K, H] with layer 0."""
    if q.ndim != 3:
        raise ValueError(f"q must be [T, N, H], got {q.shape}")
    if k_pages.ndim == 4:
        if layer is not None:
            raise ValueError("layer given but k_pages is a single layer [P, S, K, H]")
        k_pages, v_pages, layer = k_pages[None], v_pages[None], 0
    elif k_pages.ndim != 5 or layer is None:
        raise ValueError("k_pages must be [P, S, K, H], or [L, P, S, K, H] with layer")
    if k_pages.shape != v_pages.shape:
        raise ValueError(f"k/v pages differ: {k_pages.shape} vs {v_pages.shape}")
    _, N, H = q.shape
    K, Hk = k_pages.shape[-2:]
    B = page_indices.shape[0]
    if Hk != H:
        raise ValueError(f"head_dim of q ({H}) and cache ({Hk}) differ")
    if N % K:
        raise ValueError(f"num_heads {N} is not a multiple of num_kv_heads {K}")
    if kv_lens.shape != (B,) or cu_q_lens.shape != (B + 1,) or num_seqs.shape != (1,):
        raise ValueError("kv_lens [B], page_indices [B, Pb], cu_q_lens [B+1], num_seqs [1]")
    if sliding_window is not None and sliding_window <= 0:
        raise ValueError("sliding_window must be positive")
    return k_pages, v_pages, layer
