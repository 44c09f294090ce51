"""Shared-prefix (cascade) attention == plain ragged paged attention."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.cascade_attention import cascade_attention, merge_attention
from pallas_kernels.ragged_paged_attention import ragged_paged_attention_reference as reference
from tests.pallas_kernels.cases import assert_close, make_case

PAGE = 8


def shared_prefix_case(prefix_pages=2, dtype=jnp.float32, num_heads=4, num_kv_heads=2):
    """Sequences 0, 1, 3 share `prefix_pages` pages (their first pages are the same ids);
    sequence 2 does not; slot 4 is padding. Suffixes mix decode and a prefill chunk, and
    sequence 3's kv_len leaves a partial page."""
    q_lens = [1, 6, 3, 1]
    kv_lens = [prefix_pages * PAGE + 1, prefix_pages * PAGE + 6, 13,
               prefix_pages * PAGE + 11]
    case = make_case(q_lens, kv_lens, num_heads=num_heads, num_kv_heads=num_kv_heads,
                     page_size=PAGE, num_slots=5, dtype=dtype, seed=3)
    pages = np.asarray(case.page_indices).copy()
    prefix = pages[0, :prefix_pages].copy()
    for s in (1, 3):
        pages[s, :prefix_pages] = prefix
    case = case._replace(page_indices=jnp.asarray(pages))
    mask = jnp.asarray([True, True, False, True, False])
    return case, jnp.asarray(prefix, jnp.int32), jnp.int32(prefix_pages * PAGE), mask


def test_merge_of_disjoint_halves_is_softmax_over_all():
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.standard_normal((3, 2, 10)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((10, 4)), jnp.float32)

    def part(sl):
        lse = jax_lse(s[..., sl])
        return jnp.einsum("tnl,lh->tnh", jnp.exp(s[..., sl] - lse[..., None]), v[sl]), lse

    out, lse = merge_attention(*part(slice(0, 4)), *part(slice(4, 10)))
    want, want_lse = part(slice(0, 10))
    assert_close(out, want, jnp.float32)
    assert_close(lse, want_lse, jnp.float32)
    # Both halves empty: zeros and -inf, no NaN.
    ninf = jnp.full((3, 2), -jnp.inf)
    out, lse = merge_attention(out, ninf, out, ninf)
    assert not np.isnan(np.asarray(out)).any() and np.isneginf(np.asarray(lse)).all()


def jax_lse(x):
    return jnp.log(jnp.sum(jnp.exp(x), axis=-1))


@pytest.mark.parametrize("impl,interpret", [("reference", False), ("gpu", True),
                                            ("tpu", True)])
def test_cascade_equals_plain_attention(impl, interpret):
    case, prefix, plen, mask = shared_prefix_case()
    want, want_lse = reference(*case.args, layer=case.layer, sm_scale=0.3, return_lse=True)
    got, lse = cascade_attention(*case.args, prefix, plen, mask, layer=case.layer,
                                 sm_scale=0.3, return_lse=True, impl=impl,
                                 interpret=interpret)
    assert_close(got, want, jnp.float32)
    assert_close(lse, want_lse, jnp.float32)


def test_cascade_unaligned_prefix_and_soft_cap_bf16():
    # A prefix of 2.5 pages is used as 2 shared pages + suffix; bf16, GQA 4.
    case, prefix, _, mask = shared_prefix_case(prefix_pages=3, dtype=jnp.bfloat16,
                                               num_heads=8)
    want = reference(*case.args, layer=case.layer, sm_scale=0.3, soft_cap=3.0)
    got = cascade_attention(*case.args, prefix, jnp.int32(20), mask, layer=case.layer,
                            sm_scale=0.3, soft_cap=3.0, impl="gpu", interpret=True)
    assert_close(got, want, jnp.bfloat16)


def test_queries_inside_the_prefix_fall_back_to_plain():
    # Sequence 1 is still prefilling the prefix itself: it must not use the prefix pass.
    case, prefix, plen, mask = shared_prefix_case()
    kv = np.asarray(case.kv_lens).copy()
    kv[1] = int(plen) - 2
    case = case._replace(kv_lens=jnp.asarray(kv))
    want = reference(*case.args, layer=case.layer, sm_scale=0.3)
    got = cascade_attention(*case.args, prefix, plen, mask, layer=case.layer, sm_scale=0.3)
    assert_close(got, want, jnp.float32)
