"""Qwen2.5-Coder-0.5B-Instruct from its real GGUF file (Q4_K / Q6_K / Q5_0 / Q8_0 tensors,
q/k/v biases, GQA 7:1, untied head, ChatML template): the engine's greedy tokens for chat
prompts equal HF transformers' greedy generate on the same file (`gguf_file=`)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

import jaxengine as je
from jaxengine.models.known_models import known_model_path

QUESTIONS = ["Write a Python function that reverses a string.", "What does `git rebase` do?"]
NEW_TOKENS = 16


def test_qwen25_coder_05b_greedy_equals_hf():
    with je.Engine(model_path="qwen2.5-coder-0.5b", context_length=512, max_total_tokens=4096,
                   skip_server_warmup=True) as llm:
        info = llm.get_model_info()
        prompts = [llm.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
        outs = llm.generate(input_ids=prompts, sampling_params={
            "temperature": 0.0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True})
        eos = set(llm.eos_ids)
        text = llm.tokenizer.decode(prompts[0])
    assert "<|im_start|>user" in text and "<|im_end|>" in text   # the file's ChatML template
    assert llm.tokenizer.convert_tokens_to_ids("<|im_end|>") in eos, (eos, info)
    path = known_model_path("qwen2.5-coder-0.5b")
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              dtype=torch.float32).eval()
    for ids, out in zip(prompts, outs):
        with torch.inference_mode():
            ref = hf.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=NEW_TOKENS,
                              eos_token_id=None, pad_token_id=0)
        assert out["output_ids"] == ref[0, len(ids):].tolist()
