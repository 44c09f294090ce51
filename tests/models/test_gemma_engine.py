"""A tiny random Gemma 2 and Gemma 3 (HF directories with the default tokenizer) served by the
engine: greedy tokens equal HF transformers' greedy generate, through chunked prefill and
decodes that run past the sliding window in the paged cache."""

from __future__ import annotations

import pytest
import torch
import transformers

import jaxengine as je

WINDOW = 8
CONFIGS = {
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM,
               dict(num_hidden_layers=3, attn_logit_softcapping=5.0,
                    final_logit_softcapping=3.0, query_pre_attn_scalar=24)),
    "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
               dict(num_hidden_layers=4, query_pre_attn_scalar=16,
                    layer_types=["sliding_attention", "full_attention"] * 2)),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def gemma(request, tmp_path_factory, default_checkpoint):
    config_cls, model_cls, extra = CONFIGS[request.param]
    torch.manual_seed(0)
    tokenizer = default_checkpoint.tokenizer
    config = config_cls(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                        sliding_window=WINDOW, max_position_embeddings=512,
                        eos_token_id=tokenizer.eos_token_id, **extra)
    hf = model_cls(config).eval()
    with torch.no_grad():
        for name, w in hf.named_parameters():
            if "norm" in name:
                w.add_(0.2 * torch.randn_like(w))
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path), hf


def test_greedy_tokens_equal_hf_generate(gemma):
    path, hf = gemma
    prompts = [list(range(300, 321)), list(range(1000, 1040, 3)), [5, 17, 600, 42]]
    params = {"temperature": 0.0, "max_new_tokens": 16, "ignore_eos": True}
    with je.Engine(model_path=path, page_size=4, chunked_prefill_size=8, context_length=256,
                   max_total_tokens=1024, skip_server_warmup=True) as llm:
        outs = llm.generate(input_ids=prompts, sampling_params=params)
    for ids, out in zip(prompts, outs):
        with torch.inference_mode():
            ref = hf.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=16,
                              eos_token_id=None, pad_token_id=0)
        assert out["output_ids"] == ref[0, len(ids):].tolist()
