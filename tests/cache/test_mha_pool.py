"""The MHA pool: writes land in their slots, whole pages move between pools intact, and the
spec's byte count is what the pool occupies."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxengine.cache.mha_pool import MHAPoolSpec

L, K, H, PAGES, S = 2, 2, 8, 6, 4


def _spec(dtype=jnp.float32) -> MHAPoolSpec:
    return MHAPoolSpec(L, K, H, dtype)


def test_write_lands_in_its_slots_and_layer():
    pool = _spec().zeros(PAGES, S)
    rng = np.random.default_rng(0)
    k, v = (jnp.asarray(rng.standard_normal((3, K, H)), jnp.float32) for _ in range(2))
    slots = jnp.asarray([5, 6, 13], jnp.int32)   # page 1 offsets 1, 2; page 3 offset 1
    pool = pool.write(jnp.int32(1), k, v, slots)
    np.testing.assert_array_equal(pool.k[1, 1, 1], k[0])
    np.testing.assert_array_equal(pool.v[1, 3, 1], v[2])
    assert float(jnp.abs(pool.k[0]).sum()) == 0.0   # the other layer untouched
    written = np.zeros((PAGES, S), bool)
    written[1, 1] = written[1, 2] = written[3, 1] = True
    assert (np.abs(np.asarray(pool.k[1])).sum(axis=(-1, -2)) > 0).tolist() == written.tolist()


def test_pages_gathered_from_one_pool_scatter_into_another():
    rng = np.random.default_rng(1)
    src = _spec().zeros(PAGES, S)
    src = src._replace(k=jnp.asarray(rng.standard_normal(src.k.shape), jnp.float32),
                       v=jnp.asarray(rng.standard_normal(src.v.shape), jnp.float32))
    data = src.gather_pages(jnp.asarray([4, 2], jnp.int32))
    assert data.k.shape == (L, 2, S, K, H)
    dst = _spec(jnp.bfloat16).zeros(PAGES, S).scatter_pages(jnp.asarray([1, 5], jnp.int32), data)
    np.testing.assert_allclose(np.asarray(dst.k[:, 1], np.float32), np.asarray(src.k[:, 4]),
                               rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(np.asarray(dst.v[:, 5], np.float32), np.asarray(src.v[:, 2]),
                               rtol=1e-2, atol=1e-2)
    assert float(jnp.abs(dst.k[:, [0, 2, 3, 4]].astype(jnp.float32)).sum()) == 0.0


def test_spec_bytes_and_sharding():
    spec = _spec(jnp.bfloat16)
    pool = spec.zeros(PAGES, S)
    assert spec.bytes_per_token() * PAGES * S == pool.k.nbytes + pool.v.nbytes
    assert spec.device_bytes_per_token(2) * 2 == spec.bytes_per_token()
    assert spec.device_bytes_per_token(4) == spec.bytes_per_token()   # 2 KV heads: replicated
    assert spec.partition_spec(2, "tp") == P(None, None, None, "tp", None)
    assert spec.partition_spec(4, "tp") == P()
