"""Prompt scoring (prompt logprobs, what evaluation harnesses and sgl.select ask for) against a
plain prefill of the same prompts, in one run on the default model (radix cache off, so every
run computes every prompt).

    python -m benchmarks.bench_scoring                    # 16 prompts of 256 tokens
    python -m benchmarks.bench_scoring --prompts 8 --prompt-len 128
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import jaxengine as je

    rng = np.random.default_rng(args.seed)
    prompts = rng.integers(100, 40000, (args.prompts, args.prompt_len)).tolist()
    prefill = {"max_new_tokens": 0}
    score = {**prefill, "return_logprob": True, "logprob_start_len": 0}
    with je.Engine(log_level="warning", disable_radix_cache=True) as engine:
        engine.generate(input_ids=prompts[:2], sampling_params=score)  # first calls
        rows = {}
        for name, params in (("prefill only", prefill), ("scored from token 0", score),
                             ("scored, top-5 each", {**score, "top_logprobs_num": 5})):
            t0 = time.perf_counter()
            engine.generate(input_ids=prompts, sampling_params=params)
            rows[name] = args.prompts * args.prompt_len / (time.perf_counter() - t0)
    base = rows["prefill only"]
    print(f"\n==== prompt scoring: {args.prompts} prompts x {args.prompt_len} tokens, default "
          "model (same run) ====")
    for name, rate in rows.items():
        print(f"{name:<24} {rate:9.1f} prompt tok/s  {rate / base:.2f}x")


if __name__ == "__main__":
    main()
