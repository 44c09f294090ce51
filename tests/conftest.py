"""Fixtures shared across test packages: the default-model Engine and HF reference models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def default_checkpoint():
    from jaxengine.models.checkpoint import load_checkpoint

    return load_checkpoint(None)


@pytest.fixture(scope="session")
def default_engine() -> Iterator:
    """One Engine on the default model (fp32) for every test that only reads from it."""
    import jaxengine as je

    with je.Engine(skip_server_warmup=True, dtype="float32", max_running_requests=16) as engine:
        yield engine


@pytest.fixture(scope="session")
def hf_default_model(default_checkpoint):
    """HF transformers' LlamaForCausalLM holding the default model's weights (fp32, CPU)."""
    import torch
    import transformers

    config = transformers.LlamaConfig(**default_checkpoint.hf_config)
    model = transformers.LlamaForCausalLM(config).eval()
    state = {name: torch.from_numpy(array) for name, array in default_checkpoint.tensors()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    return model


def chat_ids(engine, question: str) -> list[int]:
    return engine.apply_chat_template([{"role": "user", "content": question}])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_checkpoint) -> str:
    """A tiny random Llama (2 layers, hidden 64) with the default model's tokenizer, saved as
    an HF directory: fast to compile, for tests of engine paths rather than of quality."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(default_checkpoint.tokenizer), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True,
        eos_token_id=default_checkpoint.tokenizer.eos_token_id)
    model = transformers.LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    default_checkpoint.tokenizer.save_pretrained(path)
    return str(path)
