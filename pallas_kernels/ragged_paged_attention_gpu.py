"""Ragged paged attention as a Pallas kernel for NVIDIA GPUs (Triton lowering).

Same contract as `ragged_paged_attention_reference` (the pure-jnp oracle in
ragged_paged_attention.py): q [T, N, H] packs the query tokens of a ragged batch that mixes
prefill chunks and decodes, keys/values live in the engine's paged cache.

Blocking: the wrapper re-blocks q (see _qblocks.py) into blocks of `block_q` tokens of one
sequence x the Gp query heads of one KV head (GQA: K/V are read once per group, never
repeated). The grid is (query block, KV head); each program walks its sequence's pages one
page per step with an f32 online softmax, skipping pages that are fully outside the causal /
sliding-window range. The layer index of the stacked cache [L, P, S, K, H] is a kernel input
(a traced scalar inside the engine's scan over layers), so no per-layer slice is materialised.

Triton needs power-of-two tensor sizes: page_size and head_dim must be powers of two, the
row count block_q * Gp is made one (and >= 16 for the tensor-core dots).
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels._qblocks import check_inputs, from_blocks, next_pow2, plan_q_blocks, to_blocks
from pallas_kernels.ragged_paged_attention import ragged_paged_attention_reference

__all__ = ["abstract_gpu", "ragged_paged_attention_gpu", "ragged_paged_attention_reference"]

try:  # the Triton compiler params moved around between JAX releases
    from jax.experimental.pallas import triton as _pl_triton

    _TritonParams = getattr(_pl_triton, "CompilerParams", None) or getattr(
        _pl_triton, "TritonCompilerParams", None)
except ImportError:  # pragma: no cover
    _TritonParams = None

# Finite "minus infinity" for the running max: keeps exp() of masked entries at exactly 0
# without inf - inf = nan.
_NEG = -1e30


def _kernel(
    # metadata (whole arrays, int32)
    layer_ref,         # [1] layer of the stacked cache
    blk_seq_ref,       # [NB] sequence of each query block (B: unused block)
    blk_qstart_ref,    # [NB] first query token (within the sequence) of each block
    q_lens_ref,        # [B] query tokens per sequence (0 for padding slots)
    kv_lens_ref,       # [B] tokens in the cache per sequence (queries included)
    page_indices_ref,  # [B, Pb] page table
    # data
    q_ref,             # [R, H] this block's rows (R = block_q * Gp), row r = token r // Gp
    k_ref,             # [L, P, S, K, H] whole stacked cache (stays in HBM)
    v_ref,             # [L, P, S, K, H]
    # outputs
    o_ref,             # [R, H]
    *lse_refs,         # ([R] f32,) when return_lse
    group: int, group_pad: int, block_q: int, num_seq_slots: int, pages_per_seq: int,
    sm_scale: float, soft_cap: float | None, sliding_window: int | None, causal: bool,
):
    b = pl.program_id(0)
    kvh = pl.program_id(1)
    R, H = q_ref.shape
    S = k_ref.shape[2]
    seq_raw = blk_seq_ref[b]
    valid = seq_raw < num_seq_slots
    seq = jnp.minimum(seq_raw, num_seq_slots - 1)
    q_len = jnp.where(valid, q_lens_ref[seq], 0)
    kv_len = jnp.where(valid, kv_lens_ref[seq], 0)
    q_start = blk_qstart_ref[b]
    layer = layer_ref[0]

    rows = lax.broadcasted_iota(jnp.int32, (R,), 0)
    tok = q_start + rows // group_pad
    row_live = (tok < q_len) & (rows % group_pad < group)
    # Keys [lo, hi) are visible to a row.
    if causal:
        hi = kv_len - q_len + tok + 1
        blk_hi = kv_len - q_len + jnp.minimum(q_start + block_q, q_len)
    else:
        hi = jnp.zeros_like(tok) + kv_len
        blk_hi = kv_len
    hi = jnp.where(row_live, hi, 0)
    if sliding_window is not None:
        lo = hi - sliding_window
        blk_lo = jnp.maximum((kv_len - q_len + q_start + 1 if causal else kv_len)
                             - sliding_window, 0)
    else:
        lo = jnp.zeros_like(hi)
        blk_lo = 0
    first_page = blk_lo // S
    last_page = jnp.where(q_len > 0, (blk_hi + S - 1) // S, first_page)

    q = q_ref[...]                                                     # [R, H]

    def body(p, carry):
        acc, m, l_sum = carry                                          # [R, H], [R], [R] f32
        page = page_indices_ref[seq, jnp.minimum(p, pages_per_seq - 1)]
        k = k_ref[layer, page, :, kvh, :]                              # [S, H]
        v = v_ref[layer, page, :, kvh, :]                              # [S, H]
        s = jnp.dot(q, k.T, preferred_element_type=jnp.float32) * sm_scale   # [R, S]
        if soft_cap is not None:
            s = soft_cap * jnp.tanh(s / soft_cap)
        pos = p * S + lax.broadcasted_iota(jnp.int32, (R, S), 1)
        mask = (pos < hi[:, None]) & (pos >= lo[:, None])
        m_new = jnp.maximum(m, jnp.max(jnp.where(mask, s, _NEG), axis=1))
        e = jnp.where(mask, jnp.exp(s - m_new[:, None]), 0.0)
        corr = jnp.exp(m - m_new)
        l_new = corr * l_sum + jnp.sum(e, axis=1)
        acc = corr[:, None] * acc + jnp.dot(e.astype(v.dtype), v,
                                            preferred_element_type=jnp.float32)
        return acc, m_new, l_new

    init = (jnp.zeros((R, H), jnp.float32), jnp.full((R,), _NEG, jnp.float32),
            jnp.zeros((R,), jnp.float32))
    acc, m, l_sum = lax.fori_loop(first_page, last_page, body, init)
    has = l_sum > 0.0
    o_ref[...] = (acc / jnp.where(has, l_sum, 1.0)[:, None]).astype(o_ref.dtype)
    if lse_refs:
        lse_refs[0][...] = jnp.where(has, m + jnp.log(jnp.where(has, l_sum, 1.0)), -jnp.inf)


@contextlib.contextmanager
def abstract_gpu(device_kind: str = "NVIDIA H100 80GB HBM3", num_cores: int = 132):
    """Lower for a GPU that this machine does not have (jax.export on a CPU host).

    JAX >= 0.11 reads the target's compute capability while lowering a Triton kernel and
    raises "No supported GPU devices found" without a GPU, unless an abstract GPU device is
    in scope; JAX 0.10 does not need it, and accepts it."""
    sharding = jax.sharding
    if not hasattr(sharding, "AbstractDevice"):  # pragma: no cover - older JAX
        yield
        return
    device = sharding.AbstractDevice(device_kind=device_kind, num_cores=num_cores,
                                     platform="gpu")
    with sharding.use_abstract_mesh(sharding.AbstractMesh((1,), ("_",),
                                                          abstract_device=device)):
        yield


def default_block_q(num_tokens: int, num_seqs_max: int, group: int) -> int:
    """Tokens per query block: fill >= 16 rows for the dots; bigger blocks when prefill-heavy."""
    gp = next_pow2(group)
    rows = 16 if num_tokens <= num_seqs_max else 64
    return max(1, next_pow2(max(rows, gp)) // gp)


@functools.partial(
    jax.jit,
    static_argnames=("sm_scale", "soft_cap", "sliding_window", "causal", "return_lse",
                     "block_q", "num_warps", "num_stages", "interpret"))
def ragged_paged_attention_gpu(
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
    num_warps: int = 4,
    num_stages: int = 2,
    interpret: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:  # [T, N, H] (, lse [T, N] f32)
    """Pallas (Triton) ragged paged attention; semantics of ragged_paged_attention_reference."""
    k_pages, v_pages, layer = check_inputs(q, k_pages, v_pages, kv_lens, page_indices,
                                           cu_q_lens, num_seqs, layer, sliding_window)
    T, N, H = q.shape
    _, _, S, K, _ = k_pages.shape
    B = kv_lens.shape[0]
    if S & (S - 1) or H & (H - 1):
        raise ValueError(f"page_size ({S}) and head_dim ({H}) must be powers of two (Triton)")
    G = N // K
    gp = next_pow2(G)
    bq = block_q or default_block_q(T, B, G)
    if bq & (bq - 1):
        raise ValueError(f"block_q must be a power of two, got {bq}")
    R = bq * gp
    if R < 16:
        raise ValueError(f"block_q * padded group ({R}) must be >= 16 for the Triton dots")

    plan = plan_q_blocks(cu_q_lens.astype(jnp.int32), num_seqs.astype(jnp.int32), T, bq)
    qb = to_blocks(q, plan, K, bq, gp)                                 # [NB, K, R, H]
    nb = qb.shape[0]
    layer_arr = jnp.asarray(layer, jnp.int32).reshape(1)

    kernel = functools.partial(
        _kernel, group=G, group_pad=gp, block_q=bq, num_seq_slots=B,
        pages_per_seq=page_indices.shape[1], sm_scale=sm_scale,
        soft_cap=soft_cap, sliding_window=sliding_window, causal=causal)
    def whole(x):  # the whole array as one block (a plain pointer to Triton)
        return pl.BlockSpec(x.shape, lambda b, h: (0,) * x.ndim)

    metadata = (layer_arr, plan.blk_seq, plan.blk_qstart, plan.q_lens,
                kv_lens.astype(jnp.int32), page_indices.astype(jnp.int32))
    in_specs = [whole(x) for x in metadata] + [
        pl.BlockSpec((None, None, R, H), lambda b, h: (b, h, 0, 0)),
        whole(k_pages), whole(v_pages)]
    out_shape = [jax.ShapeDtypeStruct((nb, K, R, H), q.dtype)]
    out_specs = [pl.BlockSpec((None, None, R, H), lambda b, h: (b, h, 0, 0))]
    if return_lse:
        out_shape.append(jax.ShapeDtypeStruct((nb, K, R), jnp.float32))
        out_specs.append(pl.BlockSpec((None, None, R), lambda b, h: (b, h, 0)))
    params = {}
    if _TritonParams is not None:
        params["compiler_params"] = _TritonParams(num_warps=num_warps, num_stages=num_stages)
    outs = pl.pallas_call(
        kernel,
        grid=(nb, K),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        interpret=interpret,
        name="ragged_paged_attention_gpu",
        **params,
    )(*metadata, qb, k_pages, v_pages)
    out = from_blocks(outs[0], plan, N, bq)
    if not return_lse:
        return out
    return out, from_blocks(outs[1], plan, N, bq, fill=-jnp.inf)
