"""Host overhead at a large batch: a model whose device work is tiny, so that what a step costs
is what the host does (scheduling, step inputs, output processing, detokenization, IPC).

A random 2-layer Llama (hidden 64, the default model's tokenizer, `--load-format dummy`) runs
the same workload offline (`Engine.generate` of BATCH token-id prompts, ignore_eos) and served
(`bench_serving` random ids at each --concurrency), with overlap scheduling on and then off,
all in one run. Prints output tok/s, the engine's own step time, host time per step and device
wait over exactly the run's steps (from /get_server_info before and after), and the served
runs' median ITL and TTFT.

    python -m benchmarks.bench_host                       # batch 256, concurrency 64 and 256
    python -m benchmarks.bench_host --batch 64 --concurrency 64 --no-served   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks._server import serving
from benchmarks.bench_serving import parse_args as serving_args
from benchmarks.bench_serving import run_benchmark
from jaxengine.core.stats import step_times_between

CACHE = Path.home() / ".cache" / "jaxengine" / "bench-host"


def tiny_model_dir() -> Path:
    """config.json of a 2-layer hidden-64 Llama and the default model's tokenizer (the weights
    are drawn by --load-format dummy)."""
    from jaxengine.models.checkpoint import load_checkpoint

    path = CACHE / "tiny-llama"
    if (path / "config.json").is_file():
        return path
    tokenizer = load_checkpoint(None).tokenizer
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": True, "hidden_act": "silu",
              "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    (path / "config.json").write_text(json.dumps(config, indent=1))
    return path


def engine_flags(args: argparse.Namespace, model: Path) -> dict:
    return {"model_path": str(model), "load_format": "dummy", "dtype": "float32",
            "max_running_requests": args.batch,
            "max_total_tokens": args.batch * (args.input_len + args.output_len) * 2,
            "chunked_prefill_size": max(2048, args.batch)}


def offline(args: argparse.Namespace, model: Path, overlap: bool) -> dict:
    import jaxengine as je

    rng = np.random.default_rng(args.seed)
    prompts = rng.integers(100, 40000, (args.batch, args.input_len)).tolist()
    params = {"max_new_tokens": args.output_len, "ignore_eos": True, "temperature": 0.0}
    with je.Engine(**engine_flags(args, model), disable_overlap_schedule=not overlap,
                   log_level="warning") as engine:
        before = engine.get_server_info()
        t0 = time.perf_counter()
        outs = engine.generate(input_ids=prompts, sampling_params=params)
        elapsed = time.perf_counter() - t0
        steps = step_times_between(before, engine.get_server_info())
    tokens = sum(len(o["output_ids"]) for o in outs)
    return {"output_throughput": tokens / elapsed, **steps}


def server_info(url: str) -> dict:
    return httpx.get(url + "/get_server_info", timeout=60).json()


def served(args: argparse.Namespace, model: Path, overlap: bool, concurrency: int) -> dict:
    flags = [arg for key, value in engine_flags(args, model).items()
             for arg in ("--" + key.replace("_", "-"), str(value))]
    if not overlap:
        flags.append("--disable-overlap-schedule")
    load = ["--dataset-name", "random", "--prompt-format", "ids", "--random-range-ratio", "1",
            "--random-input-len", str(args.input_len),
            "--random-output-len", str(args.output_len),
            "--num-prompts", str(max(args.batch, concurrency)),
            "--max-concurrency", str(concurrency), "--seed", str(args.seed),
            "--tokenizer", str(model), "--warmup-requests", "0"]  # start-up compiled all
    with serving(flags) as server:
        before = server_info(server.url)
        m = asyncio.run(run_benchmark(serving_args(["--base-url", server.url, *load])))
        steps = step_times_between(before, server_info(server.url))
    return {**m, **steps}


ROWS = (("output tok/s", "output_throughput"), ("step time (ms)", "step_time_ms"),
        ("host time / step (ms)", "host_time_ms"), ("device wait / step (ms)", "device_wait_ms"),
        ("median ITL (ms)", "median_itl_ms"), ("median TTFT (ms)", "median_ttft_ms"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256, help="running requests (offline prompts)")
    p.add_argument("--input-len", type=int, default=32)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--concurrency", type=int, nargs="*", default=[64, 256])
    p.add_argument("--no-served", action="store_true", help="the offline runs only")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    model = tiny_model_dir()
    runs: dict[str, dict] = {}
    for overlap in (True, False):
        tag = "on" if overlap else "off"
        runs[f"offline b{args.batch} overlap {tag}"] = offline(args, model, overlap)
        if not args.no_served:
            for c in args.concurrency:
                runs[f"served c{c} overlap {tag}"] = served(args, model, overlap, c)
    print(f"\n==== host overhead: tiny Llama, batch {args.batch}, {args.input_len} in / "
          f"{args.output_len} out (same run) ====")
    names = list(runs)
    print(f"{'':<26}" + "".join(f"{n:>26}" for n in names))
    for label, key in ROWS:
        cells = [runs[n].get(key) for n in names]
        print(f"{label:<26}" + "".join(f"{'-' if c is None else f'{c:.1f}':>26}" for c in cells))
    base = runs[f"offline b{args.batch} overlap on"]["output_throughput"]
    for n in names:
        if n.startswith("served") and n.endswith("overlap on"):
            print(f"{n}: {runs[n]['output_throughput'] / base:.2f}x the offline tok/s")


if __name__ == "__main__":
    main()
