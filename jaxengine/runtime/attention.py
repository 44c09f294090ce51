"""The one attention op the models call; it picks the implementation for the backend.

Model code never knows which kernel runs. Today every backend uses the pure-jnp reference;
the Pallas kernels plug in here.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from jaxengine.runtime.kv_cache import KVCache, write_kv
from pallas_kernels.ragged_paged_attention import ragged_paged_attention_reference


class AttentionMetadata(NamedTuple):
    """Per-step layout of the ragged batch, shared by every layer."""

    slots: jax.Array         # [T] int32 flat KV slot each new token is written to (0: dummy)
    kv_lens: jax.Array       # [B] int32
    page_indices: jax.Array  # [B, Pb] int32
    cu_q_lens: jax.Array     # [B + 1] int32
    num_seqs: jax.Array      # [1] int32


def paged_attention(q: jax.Array, k: jax.Array, v: jax.Array, cache: KVCache, layer: jax.Array,
                    meta: AttentionMetadata, *, sm_scale: float,
                    sliding_window: int | None = None) -> tuple[jax.Array, KVCache]:
    """q [T, N, H], new k/v [T, K, H] -> (attention output [T, N, H], cache with k/v stored)."""
    cache = write_kv(cache, layer, k, v, meta.slots)
    out = ragged_paged_attention_reference(
        q, cache.k, cache.v, meta.kv_lens, meta.page_indices, meta.cu_q_lens, meta.num_seqs,
        layer=layer, sm_scale=sm_scale, sliding_window=sliding_window)
    return out, cache
