"""The engine's greedy output on the default model equals HF transformers' greedy generate."""

from __future__ import annotations

import torch

from tests.conftest import chat_ids

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a hash map is in one paragraph.",
    "List three prime numbers greater than 100.",
    "How do I reverse a list in Python?",
]


def test_greedy_matches_hf_generate(default_engine, hf_default_model):
    prompts = [chat_ids(default_engine, q) for q in QUESTIONS]
    params = {"temperature": 0.0, "max_new_tokens": 32, "ignore_eos": True}
    outs = default_engine.generate(input_ids=prompts, sampling_params=params)
    for ids, out in zip(prompts, outs):
        with torch.inference_mode():
            # eos_token_id=None: run on past EOS without banning it (min_new_tokens would).
            ref = hf_default_model.generate(torch.tensor([ids]), do_sample=False,
                                            max_new_tokens=32, eos_token_id=None,
                                            pad_token_id=0)
        assert out["output_ids"] == ref[0, len(ids):].tolist()


def test_batch_of_eight_equals_each_alone(default_engine):
    questions = QUESTIONS + ["Name a famous painter.", "What is 17 times 3?", "Say hello in Spanish."]
    prompts = [chat_ids(default_engine, q) for q in questions]
    params = {"temperature": 0.0, "max_new_tokens": 24}
    together = default_engine.generate(input_ids=prompts, sampling_params=params)
    for ids, out in zip(prompts, together):
        alone = default_engine.generate(input_ids=ids, sampling_params=params)
        assert alone["output_ids"] == out["output_ids"]
