"""Per architecture: a tiny random HF model, loaded by jaxengine, gives the same fp32 logits."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxengine.cache.mha_pool import MHAPoolSpec
from jaxengine.layers.attention import AttentionMetadata
from jaxengine.models.registry import build_model

TINY = dict(vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            rms_norm_eps=1e-5, rope_theta=10000.0)

VARIANTS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "llama-tied-gqa1": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                        dict(tie_word_embeddings=True, num_key_value_heads=4)),
    "llama3-rope": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                    dict(rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0,
                                           original_max_position_embeddings=32))),
    "llama-linear-rope": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                          dict(rope_scaling=dict(rope_type="linear", factor=2.0))),
    "qwen2-yarn-rope": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                        dict(rope_scaling=dict(rope_type="yarn", factor=4.0,
                                               original_max_position_embeddings=16))),
    "llama-yarn-mscale-rope": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                               dict(rope_scaling=dict(rope_type="yarn", factor=8.0, mscale=1.0,
                                                      mscale_all_dim=0.5, beta_fast=16,
                                                      original_max_position_embeddings=16))),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM,
                dict(sliding_window=None)),
    # 37 tokens through a window of 8: most keys are outside it.
    "mistral-sliding-window": (transformers.MistralConfig, transformers.MistralForCausalLM,
                               dict(sliding_window=8)),
    # Gemma 2: alternating local / global layers (3 layers: one pattern block and one
    # layer past it), attention and final soft-caps, query_pre_attn_scalar.
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM,
               dict(num_hidden_layers=3, sliding_window=8, head_dim=16,
                    query_pre_attn_scalar=24, attn_logit_softcapping=5.0,
                    final_logit_softcapping=3.0)),
    # Gemma 3: q/k norms, local layers with their own rope base, linear scaling on the global
    # ones, a pattern of 3 over 5 layers.
    "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
               dict(num_hidden_layers=5, sliding_window=8, head_dim=16, query_pre_attn_scalar=16,
                    layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                 "sliding_attention", "sliding_attention"],
                    rope_parameters={
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                        "full_attention": {"rope_type": "linear", "factor": 2.0,
                                           "rope_theta": 1e6}})),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(head_dim=16)),
}


def jax_prefill_logits(model, tokens: list[int], page_size: int = 4) -> np.ndarray:
    """Logits at every position of one prompt, through the paged-attention path."""
    a = model.arch
    T = len(tokens)
    pages = -(-T // page_size)
    # Pages in reverse order, so a correct result needs the page table to be honoured.
    page_table = np.arange(pages, 0, -1, dtype=np.int32)
    slots = page_table[np.arange(T) // page_size] * page_size + np.arange(T) % page_size
    cache = MHAPoolSpec(a.num_layers, a.num_kv_heads, a.head_dim, jnp.float32).zeros(
        pages + 1, page_size)
    meta = AttentionMetadata(slots=jnp.asarray(slots, jnp.int32),
                             kv_lens=jnp.asarray([T], jnp.int32),
                             page_indices=jnp.asarray(page_table[None]),
                             cu_q_lens=jnp.asarray([0, T], jnp.int32),
                             num_seqs=jnp.asarray([1], jnp.int32))
    hidden, _ = model(jnp.asarray(tokens, jnp.int32), jnp.arange(T, dtype=jnp.int32), cache, meta)
    return np.asarray(model.logits(hidden))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_hf(variant):
    config_cls, model_cls, extra = VARIANTS[variant]
    torch.manual_seed(0)
    config = config_cls(**{**TINY, **extra})
    hf = model_cls(config).eval()
    with torch.no_grad():  # norms start as the identity: make each one tell itself apart
        for name, w in hf.named_parameters():
            if "norm" in name:
                w.add_(0.2 * torch.randn_like(w))
    tokens = np.random.default_rng(1).integers(0, TINY["vocab_size"], 37).tolist()
    with torch.no_grad():
        want = hf(torch.tensor([tokens])).logits[0].numpy()
    hf_config = config.to_dict()
    hf_config["architectures"] = [model_cls.__name__]
    tensors = ((k, v.numpy()) for k, v in hf.state_dict().items())
    model = build_model(hf_config, tensors, jnp.float32)
    got = jax_prefill_logits(model, tokens)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="supported"):
        build_model({"architectures": ["GPT2LMHeadModel"]}, [], jnp.float32)
