"""Overlap scheduling on vs --disable-overlap-schedule, measured in the same run.

Starts `python -m jaxengine.serve` twice (overlap on, then off) and runs bench_serving's
random dataset against each (SGLang's setting: input 256, output 128, 64 prompts,
concurrency 32, after uncounted warm-up requests). Prints throughput, the ratio on/off, and
the engine's own per-step timing from /get_server_info: host time (scheduling, input
preparation, output processing) and the time it waited for the device. With overlap off the
wait is the device time of a step; with it on, host time that the device did not hide shows
up as step time beyond that device time.

    python -m benchmarks.bench_overlap
    python -m benchmarks.bench_overlap --num-prompts 16 --max-concurrency 8   # quick
"""

from __future__ import annotations

import argparse
import asyncio

import httpx

from benchmarks._server import serving
from benchmarks.bench_serving import parse_args, run_benchmark


def measure(flags: list[str], load: list[str]) -> dict:
    with serving(flags) as server:
        metrics = asyncio.run(run_benchmark(parse_args(["--base-url", server.url, *load])))
        info = httpx.get(server.url + "/get_server_info", timeout=60).json()
    steps = {k: info.get(k) for k in ("step_time_ms", "host_time_ms", "device_wait_ms")}
    return {**metrics, **steps, "startup_seconds": server.startup_seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--random-input-len", type=int, default=256)
    p.add_argument("--random-output-len", type=int, default=128)
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--max-concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    load = ["--dataset-name", "random", "--prompt-format", "ids", "--random-range-ratio", "1",
            "--random-input-len", str(args.random_input_len),
            "--random-output-len", str(args.random_output_len),
            "--num-prompts", str(args.num_prompts),
            "--max-concurrency", str(args.max_concurrency), "--seed", str(args.seed)]
    on = measure([], [*load, "--tag", "overlap-on"])
    off = measure(["--disable-overlap-schedule"], [*load, "--tag", "overlap-off"])
    print("\n=========== overlap scheduling on vs off (same run) ===========")
    for name, key in (("output throughput (tok/s)", "output_throughput"),
                      ("median TPOT (ms)", "median_tpot_ms"),
                      ("step time (ms)", "step_time_ms"),
                      ("host time per step (ms)", "host_time_ms"),
                      ("device wait per step (ms)", "device_wait_ms")):
        print(f"{name:<28} on {on.get(key) or 0:>10.2f}   off {off.get(key) or 0:>10.2f}")
    print(f"throughput ratio on/off: {on['output_throughput'] / off['output_throughput']:.2f}x")
    device = off["device_wait_ms"]  # without overlap the host waits out each step's device time
    exposed = max(0.0, on["step_time_ms"] - device) / on["step_time_ms"]
    print(f"host time exposed with overlap on: {exposed:.1%} of the step "
          f"(step {on['step_time_ms']:.1f} ms vs device {device:.1f} ms)")


if __name__ == "__main__":
    main()
