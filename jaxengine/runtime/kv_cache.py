"""The paged KV pool on device: one stacked array per K and V, [L, P, S, K, H].

Page 0 is a reserved dummy: writes of padding tokens land there and nothing reads it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class KVCache(NamedTuple):
    k: jax.Array  # [L, P, S, K, H]
    v: jax.Array  # [L, P, S, K, H]

    @property
    def num_pages(self) -> int:
        return self.k.shape[1]

    @staticmethod
    def zeros(num_layers: int, num_pages: int, page_size: int, num_kv_heads: int,
              head_dim: int, dtype: jnp.dtype, sharding=None) -> KVCache:
        """`sharding`: where the pool lives (created in place, shard by shard); None: the
        default device."""
        shape = (num_layers, num_pages, page_size, num_kv_heads, head_dim)
        return KVCache(jnp.zeros(shape, dtype, device=sharding),
                       jnp.zeros(shape, dtype, device=sharding))


def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: jnp.dtype) -> int:
    return 2 * num_layers * num_kv_heads * head_dim * jnp.dtype(dtype).itemsize


def write_kv(cache: KVCache, layer: jax.Array, k: jax.Array, v: jax.Array,
             slots: jax.Array) -> KVCache:
    """Store k, v [T, K, H] at flat slots [T] (page * S + offset) of `layer`, in place."""
    page_size = cache.k.shape[2]
    page, offset = slots // page_size, slots % page_size
    return KVCache(cache.k.at[layer, page, offset].set(k.astype(cache.k.dtype)),
                   cache.v.at[layer, page, offset].set(v.astype(cache.v.dtype)))
