"""The blocked jnp attention (the CPU default) against the reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import ragged_paged_attention_blocked as blocked_module
from pallas_kernels.ragged_paged_attention import ragged_paged_attention_reference as reference
from pallas_kernels.ragged_paged_attention_blocked import ragged_paged_attention_blocked as blocked
from tests.pallas_kernels.cases import BATCHES, assert_close, make_case, over_layers


def check(case, dtype=jnp.float32, **kw):
    want = reference(*case.args, layer=case.layer, sm_scale=0.3, **kw)
    got = blocked(*case.args, layer=case.layer, sm_scale=0.3, **kw)
    assert_close(got, want, dtype)


@pytest.mark.parametrize("kind", sorted(BATCHES))
@pytest.mark.parametrize("heads", [(2, 2, 64), (8, 2, 128), (8, 1, 64)],
                         ids=["gqa1-h64", "gqa4-h128", "gqa8-h64"])
def test_batches_gqa_head_dims(kind, heads):
    n, k, h = heads
    q_lens, kv_lens = BATCHES[kind]
    check(make_case(q_lens, kv_lens, num_heads=n, num_kv_heads=k, head_dim=h, num_slots=5))


@pytest.mark.parametrize("page_size", [8, 16, 64])
def test_page_sizes_and_padding(page_size):
    check(make_case([1, 4, 1], [page_size + 1, page_size - 1, 2 * page_size + 3],
                    page_size=page_size, num_slots=6, extra_tokens=5))


def test_many_blocks_chunks_and_groups():
    """Prefill chunks longer than a query block over contexts of several key chunks, a
    chunk starting mid-page, and more decodes than one group holds."""
    (short, _, _), (medium, mid_rows, _), (_, bq, chunk) = blocked_module.BLOCK_TIERS
    group = blocked_module.SINGLE_GROUP
    rng = np.random.default_rng(1)
    singles = group + 7
    q_lens = [2 * bq + 5, 1, bq, 3, short, short + 1, 2, medium, mid_rows + 3, medium + 1] + \
        [1] * singles
    kv_lens = [2 * bq + 5, 3 * chunk + 17, 2 * chunk + bq + 1, 5 * chunk + 3, short,
               chunk + short + 7, 2, medium, 2 * chunk + 9, medium + 1] + \
        [int(x) for x in rng.integers(1, 3 * chunk, singles)]
    check(make_case(q_lens, kv_lens, num_heads=4, num_kv_heads=2, head_dim=64, page_size=16,
                    num_slots=len(q_lens) + 3))


def test_soft_cap():
    check(make_case(*BATCHES["mixed"], num_slots=5), soft_cap=2.0)


@pytest.mark.parametrize("window", [1, 5, 12, 300])
def test_sliding_window(window):
    check(make_case(*BATCHES["mixed"], num_slots=5), sliding_window=window)
    check(make_case([70, 1, 1], [600, 530, 9], page_size=16), sliding_window=window)


def test_bf16():
    check(make_case(*BATCHES["mixed"], num_slots=5, dtype=jnp.bfloat16), jnp.bfloat16)


def test_single_layer_cache_and_padding_tokens_are_zero():
    case = make_case(*BATCHES["mixed"], num_slots=5, extra_tokens=3)
    k1, v1 = case.k_pages[1], case.v_pages[1]
    got = blocked(case.q, k1, v1, *case.args[3:], sm_scale=0.3)
    assert_close(got, reference(case.q, k1, v1, *case.args[3:], sm_scale=0.3), jnp.float32)
    assert float(jnp.abs(got[-3:]).max()) == 0.0


def test_layer_is_traced_inside_scan():
    case = make_case(*BATCHES["mixed"], num_slots=5)

    assert_close(jax.jit(lambda: over_layers(blocked, case))(), over_layers(reference, case),
                 jnp.float32)


def test_no_live_sequence():
    case = make_case(*BATCHES["decode"], num_slots=4)
    out = blocked(*case.args[:-1], jnp.zeros(1, jnp.int32), layer=case.layer, sm_scale=0.3)
    assert float(jnp.abs(out).max()) == 0.0
