"""Ragged paged attention as a Pallas Mosaic kernel for TPUs.

Same contract as `ragged_paged_attention_reference` (ragged_paged_attention.py). The wrapper
re-blocks q like the GPU kernel (_qblocks.py): blocks of `block_q` tokens of one sequence, all
KV heads, rows = block_q x Gp query heads per KV head. The grid runs over query blocks.

Scalar prefetch (SMEM): the layer index, the block -> (sequence, first query) tables, q_lens,
kv_lens and the flattened page table. The cache stays in HBM (memory_space ANY) as the stacked
[L, P, S, K, H] array; each page [S, K, H] (every KV head at once, so one page is fetched once
per query block) is DMA'd into a two-slot VMEM buffer: page i+1 is in flight while page i is
used. Accumulators (f32 online softmax) live in VMEM scratch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels._qblocks import check_inputs, from_blocks, next_pow2, plan_q_blocks, to_blocks
from pallas_kernels.ragged_paged_attention import ragged_paged_attention_reference

__all__ = ["ragged_paged_attention_tpu", "ragged_paged_attention_reference"]

_NEG = -1e30


def _kernel(
    # scalar prefetch (SMEM, int32)
    layer_ref,         # [1]
    blk_seq_ref,       # [NB] sequence of each query block (B: unused block)
    blk_qstart_ref,    # [NB] first query token (within its sequence) of each block
    q_lens_ref,        # [B]
    kv_lens_ref,       # [B]
    pages_ref,         # [B * Pb] flattened page table
    # inputs
    q_ref,             # [K, R, H] VMEM block: R = block_q * Gp rows per KV head
    k_hbm,             # [L, P, S, K, H] HBM
    v_hbm,             # [L, P, S, K, H] HBM
    # outputs
    o_ref,             # [K, R, H] VMEM block
    *rest,             # (lse_ref [K, R, 1] f32,) then scratch:
    group: int, group_pad: int, block_q: int, num_seq_slots: int, pages_per_seq: int,
    sm_scale: float, soft_cap: float | None, sliding_window: int | None, causal: bool,
    return_lse: bool,
):
    if return_lse:
        lse_ref, k_buf, v_buf, sem, acc_ref, m_ref, l_ref = rest
    else:
        lse_ref = None
        k_buf, v_buf, sem, acc_ref, m_ref, l_ref = rest
    # k_buf, v_buf: [2, S, K, H] VMEM double buffer; sem: DMA semaphores [2 (k/v), 2 (slot)]
    # acc_ref [K, R, H] f32, m_ref / l_ref [K, R, 1] f32
    b = pl.program_id(0)
    K, R, H = q_ref.shape
    S = k_buf.shape[1]
    shift = group_pad.bit_length() - 1
    seq_raw = blk_seq_ref[b]
    valid = seq_raw < num_seq_slots
    seq = jnp.minimum(seq_raw, num_seq_slots - 1)
    q_len = jnp.where(valid, q_lens_ref[seq], 0)
    kv_len = jnp.where(valid, kv_lens_ref[seq], 0)
    q_start = blk_qstart_ref[b]
    layer = layer_ref[0]

    if causal:
        blk_hi = kv_len - q_len + jnp.minimum(q_start + block_q, q_len)
    else:
        blk_hi = kv_len
    if sliding_window is not None:
        first_row_hi = kv_len - q_len + q_start + 1 if causal else kv_len
        blk_lo = jnp.maximum(first_row_hi - sliding_window, 0)
    else:
        blk_lo = 0
    # lax.div, not //: the operands are >= 0 and floor-division lowers through sign(), which
    # queries the TPU generation while lowering.
    first_page = lax.div(blk_lo, S)
    last_page = jnp.where(q_len > 0, lax.div(blk_hi + S - 1, S), first_page)

    # Visible keys [lo, hi) per row, as [R, S] planes (2-D iotas only on TPU).
    rows = lax.broadcasted_iota(jnp.int32, (R, S), 0)
    tok = q_start + lax.shift_right_logical(rows, shift)
    row_live = (tok < q_len) & (lax.bitwise_and(rows, group_pad - 1) < group)
    hi = (kv_len - q_len + tok + 1) if causal else jnp.zeros_like(tok) + kv_len
    hi = jnp.where(row_live, hi, 0)
    lo = hi - sliding_window if sliding_window is not None else None

    def copies(p, slot):
        page = pages_ref[seq * pages_per_seq + jnp.minimum(p, pages_per_seq - 1)]
        return (pltpu.make_async_copy(k_hbm.at[layer, page], k_buf.at[slot], sem.at[0, slot]),
                pltpu.make_async_copy(v_hbm.at[layer, page], v_buf.at[slot], sem.at[1, slot]))

    acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)
    m_ref[...] = jnp.full(m_ref.shape, _NEG, jnp.float32)
    l_ref[...] = jnp.zeros(l_ref.shape, jnp.float32)

    @pl.when(first_page < last_page)
    def _():
        for c in copies(first_page, 0):
            c.start()

    def body(p, carry):
        slot = lax.rem(p - first_page, 2)

        @pl.when(p + 1 < last_page)
        def _():
            for c in copies(p + 1, 1 - slot):
                c.start()

        for c in copies(p, slot):
            c.wait()
        pos = p * S + lax.broadcasted_iota(jnp.int32, (R, S), 1)
        mask = (pos < hi) if lo is None else (pos < hi) & (pos >= lo)
        for h in range(K):
            q = q_ref[h]                                               # [R, H]
            k = k_buf[slot, :, h, :]                                   # [S, H]
            v = v_buf[slot, :, h, :]                                   # [S, H]
            s = lax.dot_general(q, k, (((1,), (1,)), ((), ())),
                                preferred_element_type=jnp.float32) * sm_scale   # [R, S]
            if soft_cap is not None:
                s = soft_cap * jnp.tanh(s / soft_cap)
            m_prev = m_ref[h]                                          # [R, 1]
            m_new = jnp.maximum(m_prev, jnp.max(jnp.where(mask, s, _NEG), axis=1,
                                                keepdims=True))
            e = jnp.where(mask, jnp.exp(s - m_new), 0.0)
            corr = jnp.exp(m_prev - m_new)
            l_ref[h] = corr * l_ref[h] + jnp.sum(e, axis=1, keepdims=True)
            acc_ref[h] = corr * acc_ref[h] + jnp.dot(e.astype(v.dtype), v,
                                                     preferred_element_type=jnp.float32)
            m_ref[h] = m_new
        return carry

    lax.fori_loop(first_page, last_page, body, 0)
    for h in range(K):
        l_sum = l_ref[h]
        has = l_sum > 0.0
        o_ref[h] = (acc_ref[h] / jnp.where(has, l_sum, 1.0)).astype(o_ref.dtype)
        if lse_ref is not None:
            lse_ref[h] = jnp.where(has, m_ref[h] + jnp.log(jnp.where(has, l_sum, 1.0)),
                                   -jnp.inf)


def default_block_q(num_tokens: int, num_seqs_max: int, group: int) -> int:
    gp = next_pow2(group)
    rows = 16 if num_tokens <= num_seqs_max else 128
    return max(1, max(rows, gp) // gp)


def _interpret_arg(interpret):
    if interpret is True:
        return pltpu.InterpretParams()
    return interpret or False


@functools.partial(
    jax.jit,
    static_argnames=("sm_scale", "soft_cap", "sliding_window", "causal", "return_lse",
                     "block_q", "vmem_limit_bytes", "interpret"))
def ragged_paged_attention_tpu(
    q: jax.Array,             # [T, N, H]
    k_pages: jax.Array,       # [P, S, K, H], or [L, P, S, K, H] with `layer`
    v_pages: jax.Array,       # like k_pages
    kv_lens: jax.Array,       # [B] int32
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
    block_q: int | None = None,
    vmem_limit_bytes: int | None = None,
    interpret=False,          # False, True (TPU interpret mode on CPU) or pltpu.InterpretParams
) -> jax.Array | tuple[jax.Array, jax.Array]:  # [T, N, H] (, lse [T, N] f32)
    """Pallas (Mosaic TPU) ragged paged attention; semantics of the reference."""
    k_pages, v_pages, layer = check_inputs(q, k_pages, v_pages, kv_lens, page_indices,
                                           cu_q_lens, num_seqs, layer, sliding_window)
    T, N, H = q.shape
    _, _, S, K, _ = k_pages.shape
    B, Pb = page_indices.shape
    G = N // K
    gp = next_pow2(G)
    bq = block_q or default_block_q(T, B, G)
    if bq <= 0:
        raise ValueError(f"block_q must be positive, got {bq}")
    R = bq * gp

    plan = plan_q_blocks(cu_q_lens.astype(jnp.int32), num_seqs.astype(jnp.int32), T, bq)
    qb = to_blocks(q, plan, K, bq, gp)                                 # [NB, K, R, H]
    nb = qb.shape[0]
    scalars = (jnp.asarray(layer, jnp.int32).reshape(1), plan.blk_seq, plan.blk_qstart,
               plan.q_lens, kv_lens.astype(jnp.int32),
               page_indices.astype(jnp.int32).reshape(-1))

    kernel = functools.partial(
        _kernel, group=G, group_pad=gp, block_q=bq, num_seq_slots=B, pages_per_seq=Pb,
        sm_scale=sm_scale, soft_cap=soft_cap, sliding_window=sliding_window, causal=causal,
        return_lse=return_lse)
    block = pl.BlockSpec((None, K, R, H), lambda b, *_: (b, 0, 0, 0))
    out_shape = [jax.ShapeDtypeStruct((nb, K, R, H), q.dtype)]
    out_specs = [block]
    if return_lse:
        out_shape.append(jax.ShapeDtypeStruct((nb, K, R, 1), jnp.float32))
        out_specs.append(pl.BlockSpec((None, K, R, 1), lambda b, *_: (b, 0, 0, 0)))
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=len(scalars),
        grid=(nb,),
        in_specs=[block, pl.BlockSpec(memory_space=pl.ANY),
                  pl.BlockSpec(memory_space=pl.ANY)],
        out_specs=out_specs,
        scratch_shapes=[
            pltpu.VMEM((2, S, K, H), k_pages.dtype),
            pltpu.VMEM((2, S, K, H), v_pages.dtype),
            pltpu.SemaphoreType.DMA((2, 2)),
            pltpu.VMEM((K, R, H), jnp.float32),
            pltpu.VMEM((K, R, 1), jnp.float32),
            pltpu.VMEM((K, R, 1), jnp.float32),
        ],
    )
    outs = pl.pallas_call(
        kernel,
        grid_spec=grid_spec,
        out_shape=out_shape,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",),
                                             vmem_limit_bytes=vmem_limit_bytes),
        interpret=_interpret_arg(interpret),
        name="ragged_paged_attention_tpu",
    )(*scalars, qb, k_pages, v_pages)
    out = from_blocks(outs[0], plan, N, bq)
    if not return_lse:
        return out
    return out, from_blocks(outs[1][..., 0], plan, N, bq, fill=-jnp.inf)
