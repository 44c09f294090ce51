"""Our dequantized GGUF tensors and config against transformers' GGUF loader (torch)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxengine.models.checkpoint import Checkpoint, load_checkpoint
from jaxengine.models.default_model import default_model_path
from jaxengine.models.gguf_checkpoint import hf_tensor_name, unpermute_rotary_rows

torch = pytest.importorskip("torch")


@pytest.fixture(scope="session")
def default_checkpoint() -> Checkpoint:
    return load_checkpoint(None)


@pytest.fixture(scope="module")
def reference():
    """transformers' own reading of the default GGUF: (config, float32 state dict)."""
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = default_model_path()
    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    # `AutoModelForCausalLM.from_pretrained(gguf_file=...)` insists on `accelerate`, which is
    # not a dependency here; it dequantizes through this same function, fed a meta-device
    # model for the name mapping.
    with torch.device("meta"):
        skeleton = _causal_lm(config)
    parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=skeleton)
    return config, parsed["tensors"]


def _causal_lm(config):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def test_tensors_equal_transformers(default_checkpoint, reference):
    _, expected = reference
    ours = dict(default_checkpoint.tensors())
    # The file ties the output projection to the embedding: neither side has an lm_head.
    assert set(ours) == set(expected)
    assert "lm_head.weight" not in ours
    assert all(a.dtype == np.float32 for a in ours.values())
    for name, want in expected.items():
        np.testing.assert_allclose(ours[name], want.numpy(), rtol=0, atol=1e-6, err_msg=name)


def test_same_logits_as_transformers(default_checkpoint, reference):
    """Our config + tensors, loaded into transformers, give transformers' own GGUF logits."""
    from transformers import AutoConfig

    ref_config, ref_tensors = reference
    ours = _causal_lm(AutoConfig.for_model(**default_checkpoint.hf_config)).eval()
    ours.load_state_dict({k: torch.from_numpy(v) for k, v in default_checkpoint.tensors()},
                         strict=False)  # lm_head is tied, not loaded
    ref = _causal_lm(ref_config).eval()
    ref.load_state_dict(ref_tensors, strict=False)
    ids = torch.tensor([default_checkpoint.tokenizer("The capital of France is").input_ids])
    with torch.no_grad():
        got, want = ours(ids).logits, ref(ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert int(got[0, -1].argmax()) == int(want[0, -1].argmax())


def test_config_matches_transformers(default_checkpoint, reference):
    ours, ref = default_checkpoint.hf_config, reference[0]
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim",
                "max_position_embeddings", "tie_word_embeddings", "bos_token_id",
                "eos_token_id", "attention_bias", "mlp_bias", "hidden_act", "model_type"):
        assert ours[key] == getattr(ref, key), key
    assert ours["rope_theta"] == ref.rope_parameters["rope_theta"] == 100000.0
    assert ours["rope_scaling"] is None
    # GGUF stores eps as float32; we report the decimal the original config held.
    assert ours["rms_norm_eps"] == 1e-5
    assert ours["rms_norm_eps"] == pytest.approx(ref.rms_norm_eps, rel=1e-6)
    assert ours["architectures"] == ["LlamaForCausalLM"]
    assert default_checkpoint.name == "SmolLM2-135M-Instruct"


def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    # The permutation llama.cpp's converter applies to HF q/k rows (written from its docs).
    return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


@pytest.mark.parametrize("shape", [(3 * 8, 5), (3 * 8,)])
def test_unpermute_inverts_llama_cpp_permutation(shape):
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(unpermute_rotary_rows(_llama_cpp_permute(w, 3), 3), w)
    head = unpermute_rotary_rows(np.arange(8), 1)
    assert head.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]  # interleaved pairs -> two halves


def test_tensor_names():
    assert hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_tensor_name("blk.7.attn_output.weight") == "model.layers.7.self_attn.o_proj.weight"
    assert hf_tensor_name("blk.0.attn_q.bias") == "model.layers.0.self_attn.q_proj.bias"
    assert hf_tensor_name("blk.3.attn_k_norm.weight") == "model.layers.3.self_attn.k_norm.weight"
    assert hf_tensor_name("output.weight") == "lm_head.weight"
    with pytest.raises(ValueError, match="Unsupported GGUF tensor"):
        hf_tensor_name("rope_freqs.weight")
    # Gemma: llama's ffn_norm is Gemma's pre-feedforward norm; two more norms after.
    assert hf_tensor_name("blk.2.ffn_norm.weight") == "model.layers.2.post_attention_layernorm.weight"
    assert hf_tensor_name("blk.2.ffn_norm.weight", "gemma3") == \
        "model.layers.2.pre_feedforward_layernorm.weight"
    assert hf_tensor_name("blk.2.post_attention_norm.weight", "gemma2") == \
        "model.layers.2.post_attention_layernorm.weight"
    assert hf_tensor_name("blk.2.post_ffw_norm.weight", "gemma3") == \
        "model.layers.2.post_feedforward_layernorm.weight"
    with pytest.raises(ValueError, match="Unsupported GGUF tensor"):
        hf_tensor_name("blk.0.post_ffw_norm.weight")
