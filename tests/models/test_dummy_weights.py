"""--load-format dummy: seeded random weights drawn for a config, no tensors read."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxengine.models.checkpoint import load_checkpoint
from jaxengine.models.dummy import DummySource
from jaxengine.models.registry import load_model

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
          "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "vocab_size": 49152,
          "max_position_embeddings": 512, "tie_word_embeddings": False}


@pytest.fixture
def config_only_dir(tmp_path, default_checkpoint):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    default_checkpoint.tokenizer.save_pretrained(tmp_path)
    return tmp_path


def _params(checkpoint) -> dict[str, np.ndarray]:
    from flax import nnx

    _, state = nnx.split(load_model(checkpoint, jnp.float32))
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(state)}


def test_a_directory_with_only_a_config_loads_the_same_weights_twice(config_only_dir):
    checkpoint = load_checkpoint(str(config_only_dir), load_format="dummy")
    assert isinstance(checkpoint.source, DummySource)
    assert checkpoint.hf_config["tie_word_embeddings"] is False
    first, second = _params(checkpoint), _params(checkpoint)
    assert first.keys() == second.keys() and any("lm_head" in k for k in first)
    for name, x in first.items():
        np.testing.assert_array_equal(x, second[name], err_msg=name)
        if "norm" in name:
            assert (x == 1).all(), name
        elif "embed" in name:
            assert abs(x.std() - 1) < 0.05, name
        else:  # N(0, 1 / fan_in), fan_in the input dimension of our x @ w layout
            assert abs(x.std() * x.shape[-2] ** 0.5 - 1) < 0.1, (name, x.std())
    # Different parameters of one shape are different draws.
    gate = [x for k, x in first.items() if "gate_proj" in k][0]
    up = [x for k, x in first.items() if "up_proj" in k][0]
    assert not np.allclose(gate, up)


def test_dummy_ignores_the_weights_of_a_real_checkpoint(tiny_model_dir):
    real = load_checkpoint(tiny_model_dir)
    dummy = load_checkpoint(tiny_model_dir, load_format="dummy")
    assert isinstance(dummy.source, DummySource) and dummy.hf_config == real.hf_config
    embed_real = dict(real.tensors())["model.embed_tokens.weight"]
    embed_dummy = [x for k, x in _params(dummy).items() if "embed" in k][0]
    assert embed_real.shape == embed_dummy.shape and not np.allclose(embed_real, embed_dummy)


def test_an_unknown_load_format_and_a_config_only_dir_without_dummy_are_refused(
        config_only_dir):
    with pytest.raises(ValueError, match="load format"):
        load_checkpoint(str(config_only_dir), load_format="pt")
    with pytest.raises(ValueError):
        load_checkpoint(str(config_only_dir))
