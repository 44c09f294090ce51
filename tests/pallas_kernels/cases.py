"""Tiny ragged paged-attention batches shared by the kernel tests (numpy-built, jax arrays)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Tolerances per dtype against the f32 reference.
TOL = {jnp.float32: 2e-5, jnp.bfloat16: 2e-2}


class Case(NamedTuple):
    q: jax.Array             # [T, N, H]
    k_pages: jax.Array       # [L, P, S, K, H]
    v_pages: jax.Array
    kv_lens: jax.Array       # [B]
    page_indices: jax.Array  # [B, Pb]
    cu_q_lens: jax.Array     # [B + 1]
    num_seqs: jax.Array      # [1]
    layer: jax.Array         # () int32

    @property
    def args(self) -> tuple:
        return (self.q, self.k_pages, self.v_pages, self.kv_lens, self.page_indices,
                self.cu_q_lens, self.num_seqs)


def make_case(q_lens, kv_lens, *, num_heads=4, num_kv_heads=2, head_dim=64, page_size=8,
              num_slots=None, extra_tokens=2, num_layers=2, dtype=jnp.float32, seed=0,
              layer=1) -> Case:
    """Sequences s < len(q_lens) are live (q_lens[s] query tokens, the last of kv_lens[s]);
    num_slots - len(q_lens) padding slots follow, and `extra_tokens` padding tokens end q.
    Page tables are random permutations of the pool (page 0, the dummy, is never used)."""
    rng = np.random.default_rng(seed)
    live = len(q_lens)
    B = num_slots or live
    assert all(q <= kv for q, kv in zip(q_lens, kv_lens))
    pb = max(1, max(-(-kv // page_size) for kv in kv_lens))
    num_pages = 1 + B * pb
    perm = rng.permutation(np.arange(1, num_pages)).reshape(B, pb).astype(np.int32)
    q_all = list(q_lens) + [0] * (B - live)
    kv_all = list(kv_lens) + [int(rng.integers(0, 5))] * (B - live)   # junk in padding slots
    cu = np.concatenate([[0], np.cumsum(q_all)]).astype(np.int32)
    T = int(cu[-1]) + extra_tokens
    shape = (num_layers, num_pages, page_size, num_kv_heads, head_dim)

    def rnd(*s):
        return jnp.asarray(rng.standard_normal(s), jnp.float32).astype(dtype)

    return Case(rnd(T, num_heads, head_dim), rnd(*shape), rnd(*shape),
                jnp.asarray(kv_all, jnp.int32), jnp.asarray(perm), jnp.asarray(cu),
                jnp.asarray([live], jnp.int32), jnp.asarray(layer, jnp.int32))


def assert_close(got, want, dtype, live_tokens=None):
    tol = TOL[dtype]
    got = np.asarray(jnp.asarray(got, jnp.float32))
    want = np.asarray(jnp.asarray(want, jnp.float32))
    assert got.shape == want.shape, (got.shape, want.shape)
    both_inf = np.isneginf(got) & np.isneginf(want)
    np.testing.assert_allclose(np.where(both_inf, 0, got), np.where(both_inf, 0, want),
                               atol=tol, rtol=tol)


# (q_lens, kv_lens) of the batch kinds every kernel is swept over; page size 8 puts kv lengths
# at 1, page_size +- 1, and several pages.
BATCHES = {
    "decode": ([1, 1, 1], [9, 1, 23]),
    "prefill": ([7, 16, 9], [7, 16, 9]),
    "mixed": ([1, 12, 5, 1], [7, 20, 5, 33]),
    "chunked": ([6, 3], [30, 3]),   # prefill chunks continuing a cached prefix
}


def over_layers(fn, case: Case):
    """fn on every layer of the case inside a lax.scan, the layer index traced, as the model
    calls attention: [L, T, N, H]."""
    def step(carry, layer):
        return carry, fn(*case.args, layer=layer, sm_scale=0.3)

    layers = case.k_pages.shape[0]
    return jax.lax.scan(step, 0, jnp.arange(layers, dtype=jnp.int32))[1]
