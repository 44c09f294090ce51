"""The Pallas (Triton) ragged paged attention kernel, in interpret mode, against the reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.ragged_paged_attention import ragged_paged_attention_reference as reference
from pallas_kernels.ragged_paged_attention_gpu import abstract_gpu, ragged_paged_attention_gpu
from tests.pallas_kernels.cases import BATCHES, assert_close, make_case, over_layers


def gpu(*args, **kw):
    return ragged_paged_attention_gpu(*args, interpret=True, **kw)


def check(case, dtype=jnp.float32, **kw):
    want = reference(*case.args, layer=case.layer, sm_scale=0.3, **kw)
    got = gpu(*case.args, layer=case.layer, sm_scale=0.3, **kw)
    if kw.get("return_lse"):
        assert_close(got[1], want[1], jnp.float32 if dtype == jnp.float32 else dtype)
        got, want = got[0], want[0]
    assert_close(got, want, dtype)


@pytest.mark.parametrize("kind", sorted(BATCHES))
@pytest.mark.parametrize("heads", [(2, 2, 64), (8, 2, 128), (8, 1, 64)],
                         ids=["gqa1-h64", "gqa4-h128", "gqa8-h64"])
def test_batches_gqa_head_dims(kind, heads):
    n, k, h = heads
    q_lens, kv_lens = BATCHES[kind]
    check(make_case(q_lens, kv_lens, num_heads=n, num_kv_heads=k, head_dim=h, num_slots=5))


@pytest.mark.parametrize("page_size", [8, 16])
def test_page_sizes_and_padding(page_size):
    # kv_len % page_size != 0, padded slots (num_seqs < B), padding tokens past cu_q_lens[-1].
    check(make_case([1, 4, 1], [page_size + 1, page_size - 1, 2 * page_size + 3],
                    page_size=page_size, num_slots=6, extra_tokens=5))


def test_soft_cap():
    check(make_case(*BATCHES["mixed"], num_slots=5), soft_cap=2.0)


@pytest.mark.parametrize("window", [1, 5, 12])
def test_sliding_window(window):
    check(make_case(*BATCHES["mixed"], num_slots=5), sliding_window=window)


def test_non_causal_with_lse():
    check(make_case(*BATCHES["mixed"], num_slots=5), causal=False, return_lse=True)
    check(make_case(*BATCHES["chunked"]), return_lse=True)


def test_bf16():
    check(make_case(*BATCHES["mixed"], num_slots=5, dtype=jnp.bfloat16), jnp.bfloat16)


def test_explicit_block_q_and_single_layer_cache():
    case = make_case(*BATCHES["mixed"], num_heads=4, num_kv_heads=1, num_slots=5)
    k1, v1 = case.k_pages[1], case.v_pages[1]
    want = reference(case.q, k1, v1, *case.args[3:], sm_scale=0.3)
    for block_q in (4, 8):
        got = gpu(case.q, k1, v1, *case.args[3:], sm_scale=0.3, block_q=block_q)
        assert_close(got, want, jnp.float32)


def test_padding_tokens_are_zero():
    case = make_case(*BATCHES["decode"], num_slots=5, extra_tokens=3)
    out = gpu(*case.args, layer=case.layer, sm_scale=0.3)
    assert float(jnp.abs(out[-3:]).max()) == 0.0


def test_layer_is_traced_inside_scan():
    case = make_case(*BATCHES["mixed"], num_slots=5)

    assert_close(jax.jit(lambda: over_layers(gpu, case))(), over_layers(reference, case),
                 jnp.float32)


def test_rejects_bad_shapes():
    case = make_case(*BATCHES["decode"])
    with pytest.raises(ValueError):
        gpu(case.q[:, :3], *case.args[1:], layer=case.layer, sm_scale=0.3)
    with pytest.raises(ValueError):
        gpu(*case.args, layer=case.layer, sm_scale=0.3, block_q=3)


def test_lowers_for_cuda():
    """Pallas -> Triton IR lowering for the real platform, on a machine without a GPU.

    The Triton custom call has no export-compatibility guarantee, so that check is disabled;
    compiling the Triton IR to PTX happens in XLA on the GPU and is not covered here."""
    case = make_case(*BATCHES["mixed"], num_heads=8, num_kv_heads=2, head_dim=128,
                     page_size=16, dtype=jnp.bfloat16)

    def f(*args):
        *a, layer = args
        return ragged_paged_attention_gpu(*a, layer=layer, sm_scale=0.1, soft_cap=30.0,
                                          sliding_window=64, return_lse=True)

    with abstract_gpu():  # JAX >= 0.11 needs a (here abstract) GPU to pick the target
        exported = jax.export.export(
            jax.jit(f), platforms=["cuda"],
            disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
        )(*case.args, case.layer)
    assert "xla.gpu.triton" in exported.mlir_module()
