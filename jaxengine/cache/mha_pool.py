"""The KV pool of models with per-head keys and values (MHA, GQA, MQA): one stacked array per
K and V, [L, P, S, K, H] (layers, pages, slots per page, KV heads, head dim).

A model declares its pool as a spec (`kv_pool_spec()`); the runtime sizes and creates it from
the spec alone and hands the pool to the model's forward, which writes it through `write`.
Whole pages can be gathered and scattered (export and import of a prefix's KV). Page 0 is a
reserved dummy: writes of padding tokens land there and nothing reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P


class MHAPool(NamedTuple):
    k: jax.Array  # [L, P, S, K, H]
    v: jax.Array  # [L, P, S, K, H]

    @property
    def num_pages(self) -> int:
        return self.k.shape[1]

    @property
    def page_size(self) -> int:
        return self.k.shape[2]

    def write(self, layer: jax.Array, k: jax.Array, v: jax.Array, slots: jax.Array) -> MHAPool:
        """Store k, v [T, K, H] at flat slots [T] (page * S + offset) of `layer`, in place."""
        page, offset = slots // self.page_size, slots % self.page_size
        return MHAPool(self.k.at[layer, page, offset].set(k.astype(self.k.dtype)),
                       self.v.at[layer, page, offset].set(v.astype(self.v.dtype)))

    def gather_pages(self, pages: jax.Array) -> MHAPool:
        """The whole pages `pages` [n] of every layer: K and V [L, n, S, K, H]."""
        return MHAPool(self.k[:, pages], self.v[:, pages])

    def scatter_pages(self, pages: jax.Array, data: MHAPool) -> MHAPool:
        """Write `data` (as gather_pages returns it) into the pages `pages` [n]."""
        return MHAPool(self.k.at[:, pages].set(data.k.astype(self.k.dtype)),
                       self.v.at[:, pages].set(data.v.astype(self.v.dtype)))


@dataclass(frozen=True)
class MHAPoolSpec:
    """What a model declares about its pool; everything the runtime needs to size, create and
    shard it."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: Any

    @classmethod
    def for_arch(cls, a, dtype) -> MHAPoolSpec:
        """The pool of a model arch with num_layers, num_kv_heads and head_dim."""
        return cls(a.num_layers, a.num_kv_heads, a.head_dim, jnp.dtype(dtype))

    def bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * \
            jnp.dtype(self.dtype).itemsize

    def splits(self, tp: int) -> bool:
        """Whether `tp` devices split the pool by KV head (else each holds all of it)."""
        return self.num_kv_heads % tp == 0

    def device_bytes_per_token(self, tp: int = 1) -> int:
        return self.bytes_per_token() // (tp if self.splits(tp) else 1)

    def partition_spec(self, tp: int, axis: str) -> P:
        return P(None, None, None, axis, None) if self.splits(tp) else P()

    def zeros(self, num_pages: int, page_size: int, sharding=None) -> MHAPool:
        """An empty pool; `sharding`: where it lives (created in place, shard by shard);
        None: the default device."""
        shape = (self.num_layers, num_pages, page_size, self.num_kv_heads, self.head_dim)
        return MHAPool(jnp.zeros(shape, self.dtype, device=sharding),
                       jnp.zeros(shape, self.dtype, device=sharding))
