"""The building blocks against the HF modules they replace (float32, random weights)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from transformers.models.gemma.modeling_gemma import GemmaMLP, GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from jaxengine.layers.embedding import embed, lm_head
from jaxengine.layers.mlp import activation, gated_mlp
from jaxengine.layers.norms import rms_norm

D, F = 32, 48


def _x(shape=(7, D), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("gemma", [False, True])
def test_rms_norm_matches_hf(gemma):
    torch.manual_seed(0)
    hf = (GemmaRMSNorm if gemma else LlamaRMSNorm)(D, eps=1e-6)
    with torch.no_grad():
        hf.weight.copy_(torch.randn(D) * 0.5)
        x = _x()
        want = hf(torch.from_numpy(x)).numpy()
    got = rms_norm(jnp.asarray(x), jnp.asarray(hf.weight.detach().numpy()), 1e-6,
                   offset=1.0 if gemma else 0.0)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act", ["silu", "gelu_pytorch_tanh"])
def test_gated_mlp_matches_hf(act):
    torch.manual_seed(0)
    cls, config_cls = (GemmaMLP, transformers.GemmaConfig) if act != "silu" else \
        (LlamaMLP, transformers.LlamaConfig)
    hf = cls(config_cls(hidden_size=D, intermediate_size=F, hidden_act=act)).eval()
    x = _x()
    with torch.no_grad():
        want = hf(torch.from_numpy(x)).numpy()
    w = {k: jnp.asarray(v.detach().numpy().T) for k, v in hf.state_dict().items()}
    got = gated_mlp(jnp.asarray(x), w["gate_proj.weight"], w["up_proj.weight"],
                    w["down_proj.weight"], act)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="supported"):
        activation("relu6")


def test_lm_head_soft_cap_bounds_and_keeps_order():
    hidden, weight = jnp.asarray(_x((3, D))), jnp.asarray(_x((D, 50), seed=1) * 4)
    plain = np.asarray(lm_head(hidden, weight))
    capped = np.asarray(lm_head(hidden, weight, soft_cap=30.0))
    assert np.abs(plain).max() > 30.0 and np.abs(capped).max() < 30.0
    np.testing.assert_array_equal(np.argsort(plain, axis=-1), np.argsort(capped, axis=-1))
    small = np.abs(plain) < 1.0   # tanh is the identity near 0
    np.testing.assert_allclose(capped[small], plain[small], atol=1e-3)


def test_embed_scale_in_table_dtype():
    table = jnp.asarray(_x((11, D)), jnp.bfloat16)
    tokens = jnp.asarray([3, 0, 10], jnp.int32)
    got = embed(tokens, table, scale=D ** 0.5)
    assert got.dtype == jnp.bfloat16
    want = table[tokens] * jnp.asarray(D ** 0.5, jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
