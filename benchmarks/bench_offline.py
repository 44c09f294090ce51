"""Offline generation throughput: jaxengine vs Hugging Face transformers, in one run.

What it measures, on the default model (SmolLM2-135M-Instruct, the engine's GGUF) or
`--model-path` (a name such as qwen2.5-coder-0.5b, a .gguf file or an HF directory), with the
same chat-templated token ids for both engines, greedy decoding, EOS ignored:

* batched: all prompts in one `generate` call, `--max-new-tokens` each; output tokens/s =
  total completion tokens / wall time of that call. A warm-up call of the same shapes runs
  first, so JIT compilation (jaxengine) is excluded from the timing.
* single stream: one prompt, `--single-stream-tokens` new tokens; end-to-end tokens/s, and
  decode tokens/s timed from the first streamed token to the last.

HF runs the same file (a GGUF through `gguf_file=`, dequantized to float32) on CPU with
`torch.set_num_threads(2)`, left padding and an attention mask for the batch, and EOS
stopping switched off (jaxengine's ignore_eos: EOS may be sampled, it just does not stop).
The first 16 greedy tokens of a few prompts are compared between the two as a check.

Run:  python -m benchmarks.bench_offline [--model-path NAME] [--num-prompts 32] [--max-new-tokens 128]
          [--single-stream-tokens 64] [--skip-hf] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import jax

import jaxengine as je

PROMPTS = [
    "What is the capital of Australia?", "How do I reverse a list in Python?",
    "Give me three tips for sleeping better.", "Why is the sky blue?",
    "Explain what a hash table is in simple terms.",
    "What should I pack for a weekend hiking trip?",
    "How many minutes should I boil an egg for a soft yolk?", "Write a haiku about autumn leaves.",
    "What is the difference between weather and climate?",
    "Can you suggest a name for a small coffee shop?", "How does compound interest work?",
    "What are the main causes of the French Revolution?",
    "Translate 'good morning, how are you?' into Spanish.",
    "How do vaccines train the immune system?", "What is a good way to start learning the guitar?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "How can I make my houseplants grow faster?", "What does HTTP status code 404 mean?",
    "Give me a simple recipe for pancakes.", "Why do cats purr?",
    "What is the Pythagorean theorem?", "How do I politely decline a meeting invitation?",
    "What are some healthy snacks for work?", "Explain recursion to a ten-year-old.",
    "How far is the Moon from the Earth?",
    "What is the best way to memorize vocabulary in a new language?",
    "Write a short birthday message for a coworker.", "How do solar panels generate electricity?",
    "What is the difference between a virus and a bacterium?",
    "How can I reduce stress before an exam?", "What are prime numbers? Give a few examples.",
    "Suggest a fun indoor activity for a rainy day.",
]
AGREE_PROMPTS, AGREE_TOKENS = 4, 16


def row(engine: str, mode: str, tokens: int, seconds: float) -> dict[str, Any]:
    return {"engine": engine, "mode": mode, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds if seconds > 0 else float("nan")}


def stream_rows(engine: str, t0: float, first: float, last: float, end: float, tokens: int,
                first_tokens: int) -> list[dict[str, Any]]:
    """Rows for one timed stream: end to end (t0..end), decode (first token..last)."""
    return [row(engine, "single e2e", tokens, end - t0),
            row(engine, "single decode", tokens - first_tokens, last - first)
            | {"ttft_s": first - t0}]


def bench_jaxengine(llm: je.Engine, ids: list[list[int]], new: int, single_new: int
                    ) -> tuple[list[dict[str, Any]], list[list[int]]]:
    params = {"temperature": 0.0, "max_new_tokens": new, "ignore_eos": True}
    llm.generate(input_ids=ids, sampling_params=params)  # warm-up: compiles these shapes
    t0 = time.perf_counter()
    outs = llm.generate(input_ids=ids, sampling_params=params)
    seconds = time.perf_counter() - t0
    rows = [row("jaxengine", "batch", sum(o["meta_info"]["completion_tokens"] for o in outs),
                seconds)]

    single = {**params, "max_new_tokens": single_new}
    for _ in llm.generate(input_ids=ids[0], sampling_params=single, stream=True):
        pass  # warm-up
    t0 = time.perf_counter()
    first = last = None
    tokens = first_tokens = 0
    for chunk in llm.generate(input_ids=ids[0], sampling_params=single, stream=True):
        now, n = time.perf_counter(), len(chunk["output_ids"])
        if n and first is None:
            first, first_tokens = now, n
        tokens, last = tokens + n, now
    rows += stream_rows("jaxengine", t0, first, last, last, tokens, first_tokens)
    return rows, [o["output_ids"] for o in outs]


def load_hf_model(path: str):
    """The model file the engine served, as a float32 transformers model."""
    import torch
    from transformers import AutoModelForCausalLM

    file = Path(path)
    where = (dict(pretrained_model_name_or_path=str(file.parent), gguf_file=file.name)
             if file.suffix == ".gguf" else dict(pretrained_model_name_or_path=str(file)))
    model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    # ignore_eos as jaxengine means it: never stop at EOS, but do not ban it either (as
    # min_new_tokens would), so greedy outputs stay comparable past an EOS.
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    return model.eval(), eos[0] if isinstance(eos, list) else eos


def bench_hf(path: str, ids: list[list[int]], new: int, single_new: int, threads: int
             ) -> tuple[list[dict[str, Any]], list[list[int]]]:
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        """Times each streamer call: the prompt first, then one call per new token."""

        def __init__(self):
            self.times: list[float] = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    torch.set_num_threads(threads)
    model, eos = load_hf_model(path)

    def generate(batch: list[list[int]], n: int, streamer=None) -> list[list[int]]:
        width = max(map(len, batch))
        tokens = torch.full((len(batch), width), eos, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, p in enumerate(batch):  # left padding
            tokens[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=tokens, attention_mask=mask, do_sample=False,
                                 max_new_tokens=n, pad_token_id=eos, streamer=streamer)
        return out[:, width:].tolist()

    generate(ids[:2], 4)  # warm-up
    t0 = time.perf_counter()
    outs = generate(ids, new)
    rows = [row("hf", "batch", sum(map(len, outs)), time.perf_counter() - t0)]
    clock = Clock()
    t0 = time.perf_counter()
    (single,) = generate(ids[:1], single_new, clock)
    rows += stream_rows("hf", t0, clock.times[1], clock.times[-1], time.perf_counter(),
                        len(single), 1)
    return rows, outs


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> list[dict[str, Any]]:
    """Per prompt: how many of the first AGREE_TOKENS greedy tokens match, and where not."""
    result = []
    for i, (a, b) in enumerate(zip(ours[:AGREE_PROMPTS], theirs[:AGREE_PROMPTS], strict=True)):
        same = [x == y for x, y in zip(a[:AGREE_TOKENS], b[:AGREE_TOKENS], strict=True)]
        result.append({"prompt": i, "match": sum(same), "of": len(same),
                       "first_divergence": same.index(False) if False in same else None})
    return result


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'engine':<10} {'mode':<14} {'tokens':>7} {'seconds':>9} {'tokens/s':>10}")
    for r in rows:
        print(f"{r['engine']:<10} {r['mode']:<14} {r['tokens']:>7} {r['seconds']:>9.2f} "
              f"{r['tokens_per_s']:>10.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-path", help="a model name, .gguf file or HF directory "
                    "(default: the default model)")
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--single-stream-tokens", type=int, default=64)
    ap.add_argument("--skip-hf", action="store_true", help="benchmark jaxengine only")
    ap.add_argument("--hf-threads", type=int, default=2, help="torch.set_num_threads for HF")
    ap.add_argument("--output", help="write the results as JSON here")
    args = ap.parse_args()

    env: dict[str, Any] = {"jax": jax.__version__, "jax_devices": str(jax.devices())}
    questions = [PROMPTS[i % len(PROMPTS)] for i in range(args.num_prompts)]
    llm = je.Engine(model_path=args.model_path)
    try:
        env["model"] = llm.model_path
        env["engine_device"] = f"{llm.core_info['device']}, {llm.core_info['dtype']}"
        ids = [llm.apply_chat_template([{"role": "user", "content": q}]) for q in questions]
        print(f"{len(ids)} prompts, {min(map(len, ids))}-{max(map(len, ids))} prompt tokens, "
              f"{args.max_new_tokens} new tokens each (greedy, ignore_eos)")
        rows, ours = bench_jaxengine(llm, ids, args.max_new_tokens, args.single_stream_tokens)
        tokenizer = llm.tokenizer
    finally:
        llm.shutdown()  # free the CPU for HF

    ratios: dict[str, float] = {}
    agree: list[dict[str, Any]] = []
    if not args.skip_hf:
        import torch
        import transformers

        env |= {"torch": torch.__version__, "transformers": transformers.__version__,
                "torch_threads": args.hf_threads}
        hf_rows, theirs = bench_hf(env["model"], ids, args.max_new_tokens, args.single_stream_tokens,
                                   args.hf_threads)
        rows += hf_rows
        by = {(r["engine"], r["mode"]): r["tokens_per_s"] for r in rows}
        ratios = {mode: by["jaxengine", mode] / by["hf", mode]
                  for mode in ("batch", "single e2e", "single decode")}
        agree = agreement(ours, theirs)

    print("\n" + "\n".join(f"{k}: {v}" for k, v in env.items()))
    print("jaxengine timings exclude JIT compilation (a warm-up of the same shapes ran first);"
          "\nbatch tokens/s = completion tokens / wall time of one generate call.")
    print_table(rows)
    for r in rows:
        if "ttft_s" in r:
            print(f"{r['engine']} single-stream time to first token: {r['ttft_s'] * 1e3:.0f} ms")
    if ratios:
        print("\njaxengine / HF tokens/s: "
              + ", ".join(f"{mode} {v:.2f}x" for mode, v in ratios.items()))
        print(f"greedy agreement, first {AGREE_TOKENS} tokens:")
        for a in agree:
            at = a["first_divergence"]
            print(f"  prompt {a['prompt']}: {a['match']}/{a['of']} tokens match"
                  + ("" if at is None else f" (first divergence at token {at})"))
    print(f"\nsample (jaxengine, prompt 0): {questions[0]!r} -> "
          f"{tokenizer.decode(ours[0][:AGREE_TOKENS * 2])!r}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "env": env, "results": rows, "ratios": ratios,
                       "agreement": agree}, f, indent=2)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
