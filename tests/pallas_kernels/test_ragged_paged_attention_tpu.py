"""The Mosaic TPU ragged paged attention kernel under the TPU interpret mode (CPU), against the
reference, and its lowering for the real TPU platform."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.ragged_paged_attention import ragged_paged_attention_reference as reference
from pallas_kernels.ragged_paged_attention_tpu import ragged_paged_attention_tpu
from tests.pallas_kernels.cases import BATCHES, assert_close, make_case, over_layers


def tpu(*args, **kw):
    return ragged_paged_attention_tpu(*args, interpret=True, **kw)


def check(case, dtype=jnp.float32, **kw):
    want = reference(*case.args, layer=case.layer, sm_scale=0.3, **kw)
    got = tpu(*case.args, layer=case.layer, sm_scale=0.3, **kw)
    if kw.get("return_lse"):
        assert_close(got[1], want[1], jnp.float32)
        got, want = got[0], want[0]
    assert_close(got, want, dtype)


@pytest.mark.parametrize("kind", sorted(BATCHES))
@pytest.mark.parametrize("heads", [(2, 2, 64), (8, 2, 128), (8, 1, 64)],
                         ids=["gqa1-h64", "gqa4-h128", "gqa8-h64"])
def test_batches_gqa_head_dims(kind, heads):
    n, k, h = heads
    q_lens, kv_lens = BATCHES[kind]
    check(make_case(q_lens, kv_lens, num_heads=n, num_kv_heads=k, head_dim=h, num_slots=5))


def test_page_size_16_and_padding():
    check(make_case([1, 4, 1], [17, 15, 35], page_size=16, num_slots=6, extra_tokens=5))


def test_soft_cap_and_sliding_window():
    check(make_case(*BATCHES["mixed"], num_slots=5), soft_cap=2.0, sliding_window=5)


def test_non_causal_with_lse():
    check(make_case(*BATCHES["mixed"], num_slots=5), causal=False, return_lse=True)


def test_bf16_group_not_power_of_two():
    check(make_case(*BATCHES["mixed"], num_heads=6, num_kv_heads=2, num_slots=5,
                    dtype=jnp.bfloat16), jnp.bfloat16)


def test_single_layer_cache_and_block_q():
    case = make_case(*BATCHES["chunked"], num_heads=4, num_kv_heads=1)
    k1, v1 = case.k_pages[0], case.v_pages[0]
    want = reference(case.q, k1, v1, *case.args[3:], sm_scale=0.3)
    assert_close(tpu(case.q, k1, v1, *case.args[3:], sm_scale=0.3, block_q=2), want,
                 jnp.float32)


def test_layer_is_traced_inside_scan():
    case = make_case(*BATCHES["decode"], num_slots=4)

    assert_close(jax.jit(lambda: over_layers(tpu, case))(), over_layers(reference, case),
                 jnp.float32)


def test_lowers_for_tpu():
    """Pallas -> Mosaic lowering for the real platform on a CPU machine (Mosaic's own layout
    passes and the TPU compile run later, in XLA on a TPU)."""
    case = make_case(*BATCHES["mixed"], num_heads=8, num_kv_heads=2, head_dim=128,
                     page_size=16, dtype=jnp.bfloat16)

    def f(*args):
        *a, layer = args
        return ragged_paged_attention_tpu(*a, layer=layer, sm_scale=0.1, soft_cap=30.0,
                                          sliding_window=64, return_lse=True)

    exported = jax.export.export(jax.jit(f), platforms=["tpu"])(*case.args, case.layer)
    assert "tpu_custom_call" in exported.mlir_module()
