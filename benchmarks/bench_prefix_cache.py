"""Radix cache on vs --disable-radix-cache, measured in the same run with bench_serving.

Starts `python -m jaxengine.serve` twice on a free loopback port (cache on, then off), and for
each: a warm-up load of the same shapes with other prompts (so JIT compilation is not timed),
POST /flush_cache, then the measured generated-shared-prefix load. Prints both summaries and
the on/off ratios of request throughput and median TTFT, and the cache hit rates.

    python -m benchmarks.bench_prefix_cache                   # the README's configuration
    python -m benchmarks.bench_prefix_cache --gsp-num-groups 2 --gsp-prompts-per-group 4
"""

from __future__ import annotations

import argparse
import asyncio

import httpx

from benchmarks._server import serving
from benchmarks.bench_serving import parse_args, run_benchmark


def measure(flags: list[str], load: list[str], seed: int) -> dict:
    with serving(flags) as server:
        url = server.url
        common = ["--base-url", url, "--dataset-name", "generated-shared-prefix",
                  "--prompt-format", "ids", "--warmup-requests", "0", *load]
        warm = [*common, "--seed", str(seed + 1000), "--gsp-num-groups", "2"]
        asyncio.run(run_benchmark(parse_args(warm)))
        httpx.post(url + "/flush_cache", timeout=60).raise_for_status()
        return asyncio.run(run_benchmark(parse_args([*common, "--seed", str(seed)])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gsp-num-groups", type=int, default=8)
    p.add_argument("--gsp-prompts-per-group", type=int, default=16)
    p.add_argument("--gsp-system-prompt-len", type=int, default=1024)
    p.add_argument("--gsp-question-len", type=int, default=64)
    p.add_argument("--gsp-output-len", type=int, default=32)
    p.add_argument("--max-concurrency", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output-file", default=None)
    args = p.parse_args()
    load = ["--gsp-prompts-per-group", str(args.gsp_prompts_per_group),
            "--gsp-system-prompt-len", str(args.gsp_system_prompt_len),
            "--gsp-question-len", str(args.gsp_question_len),
            "--gsp-output-len", str(args.gsp_output_len),
            "--max-concurrency", str(args.max_concurrency)]
    measured_load = [*load, "--gsp-num-groups", str(args.gsp_num_groups)]
    if args.output_file:
        measured_load += ["--output-file", args.output_file]
    on = measure([], [*measured_load, "--tag", "radix-on"], args.seed)
    off = measure(["--disable-radix-cache"], [*measured_load, "--tag", "radix-off"], args.seed)
    print("\n=========== radix cache on vs off (same run) ===========")
    for name, key in (("request throughput (req/s)", "request_throughput"),
                      ("output throughput (tok/s)", "output_throughput"),
                      ("median TTFT (ms)", "median_ttft_ms"),
                      ("cache hit rate", "cache_hit_rate")):
        print(f"{name:<30} on {on.get(key)!s:>12.12}   off {off.get(key)!s:>12.12}")
    print(f"throughput ratio on/off: {on['request_throughput'] / off['request_throughput']:.2f}x")
    print(f"median TTFT ratio off/on: {off['median_ttft_ms'] / on['median_ttft_ms']:.2f}x")


if __name__ == "__main__":
    main()
