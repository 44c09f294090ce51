"""Rope frequencies against HF's own (ROPE_INIT_FUNCTIONS) for each rope type, and the two
rotation layouts against each other."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from jaxengine.layers.rope import Rope, apply_rope, rope_frequencies

HEAD_DIM, THETA, MAX_POS = 64, 500000.0, 4096
SCALINGS = {
    "linear": dict(rope_type="linear", factor=4.0),
    "llama3": dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=1024),
    "yarn": dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=1024),
    "yarn-betas-untruncated": dict(rope_type="yarn", factor=8.0, beta_fast=16, beta_slow=2,
                                   original_max_position_embeddings=512, truncate=False),
    "yarn-mscale": dict(rope_type="yarn", factor=40.0, mscale=1.0, mscale_all_dim=0.707,
                        original_max_position_embeddings=4096),
    "yarn-attention-factor": dict(rope_type="yarn", factor=2.0, attention_factor=1.25,
                                  original_max_position_embeddings=2048),
}


def _hf(scaling: dict | None):
    config = transformers.LlamaConfig(hidden_size=HEAD_DIM * 4, num_attention_heads=4,
                                      head_dim=HEAD_DIM, max_position_embeddings=MAX_POS,
                                      rope_theta=THETA, rope_scaling=scaling)
    kind = (scaling or {}).get("rope_type", "default")
    inv_freq, factor = ROPE_INIT_FUNCTIONS[kind](config, "cpu") if kind != "default" else \
        (1.0 / THETA ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM), 1.0)
    return np.asarray(inv_freq, np.float32), float(factor)


@pytest.mark.parametrize("name", [None, *SCALINGS])
def test_frequencies_and_attention_factor_match_hf(name):
    scaling = SCALINGS.get(name)
    want_freq, want_factor = _hf(dict(scaling) if scaling else None)
    got = rope_frequencies(HEAD_DIM, THETA, scaling, MAX_POS)
    np.testing.assert_allclose(got.inv_freq, want_freq, rtol=1e-6)
    assert got.attention_factor == pytest.approx(want_factor, rel=1e-6)


def test_yarn_interpolates_low_frequencies_only():
    plain = rope_frequencies(HEAD_DIM, THETA, None)
    yarn = rope_frequencies(HEAD_DIM, THETA, SCALINGS["yarn"], MAX_POS)
    assert yarn.inv_freq[0] == pytest.approx(plain.inv_freq[0])   # fast dims kept
    assert yarn.inv_freq[-1] == pytest.approx(plain.inv_freq[-1] / 4.0, rel=1e-5)
    assert yarn.attention_factor > 1.0


def test_interleaved_is_rotate_half_on_permuted_dims():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((5, 3, HEAD_DIM)), jnp.float32)
    positions = jnp.asarray([0, 1, 7, 100, 3000], jnp.int32)
    rope = Rope(rope_frequencies(HEAD_DIM, THETA, None).inv_freq, 1.3)
    # Interleaved pairs (2i, 2i+1) are rotate-half's pairs (i, i + H/2) after this permutation.
    perm = np.concatenate([np.arange(0, HEAD_DIM, 2), np.arange(1, HEAD_DIM, 2)])
    inter = apply_rope(x, positions, rope, interleaved=True)
    half = apply_rope(x[..., perm], positions, rope)
    np.testing.assert_allclose(np.asarray(inter)[..., perm], np.asarray(half), atol=1e-5)
    # Position 0 is the identity up to the attention factor; norms scale by it everywhere.
    np.testing.assert_allclose(np.asarray(inter[0]), 1.3 * np.asarray(x[0]), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(inter), axis=-1),
                               1.3 * np.linalg.norm(np.asarray(x), axis=-1), rtol=1e-5)


def test_unknown_rope_type_is_a_clear_error():
    with pytest.raises(ValueError, match="supported"):
        rope_frequencies(HEAD_DIM, THETA, dict(rope_type="longrope", factor=2.0))
