"""The tiny random model the parallel tests share."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory, default_checkpoint) -> str:
    """A tiny Llama (4 heads, 2 KV heads) with weights large enough that greedy decoding
    varies from token to token: a sharding bug then changes the output."""
    from safetensors.numpy import save_file

    path = tmp_path_factory.mktemp("tp-llama")
    V, D, F, L, N, K, H = len(default_checkpoint.tokenizer), 64, 128, 2, 4, 2, 16
    rng = np.random.default_rng(0)
    tensors = {"model.embed_tokens.weight": rng.normal(0, 1.0, (V, D)),
               "model.norm.weight": np.ones(D)}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes = {"self_attn.q_proj": (N * H, D), "self_attn.k_proj": (K * H, D),
                  "self_attn.v_proj": (K * H, D), "self_attn.o_proj": (D, N * H),
                  "mlp.gate_proj": (F, D), "mlp.up_proj": (F, D), "mlp.down_proj": (D, F)}
        for name, shape in shapes.items():
            tensors[p + name + ".weight"] = rng.normal(0, 0.3, shape)
        tensors[p + "input_layernorm.weight"] = np.ones(D)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(D)
    save_file({k: v.astype(np.float32) for k, v in tensors.items()},
              str(path / "model.safetensors"))
    config = {"architectures": ["LlamaForCausalLM"], "vocab_size": V, "hidden_size": D,
              "intermediate_size": F, "num_hidden_layers": L, "num_attention_heads": N,
              "num_key_value_heads": K, "max_position_embeddings": 1024,
              "tie_word_embeddings": True, "rms_norm_eps": 1e-6,
              "eos_token_id": default_checkpoint.tokenizer.eos_token_id}
    (path / "config.json").write_text(json.dumps(config))
    default_checkpoint.tokenizer.save_pretrained(path)
    return str(path)
