"""Cache-aware vs round-robin routing over jaxengine workers behind SGLang's router, in one run.

Starts N workers (default 2; `tools/router_fleet.py`) and two routers in front of the same
workers, one per policy. A warm-up load with other prompts goes through the round-robin
router first (both workers compile their step shapes). Then, for each policy: POST /flush_cache
(the router flushes every worker), and the generated-shared-prefix load of
`benchmarks/bench_serving.py` through that policy's router. Prompts go as text: the router
matches prefixes on request text. Prints, per policy, request and output throughput, median
TTFT, the hit rate from the responses' usage and the hit rate summed over the workers' own
counters (/get_server_info cached_tokens_total / prompt_tokens_total), and how many requests
each worker served.

    python -m benchmarks.bench_router                 # the README's configuration
    python -m benchmarks.bench_router --gsp-num-groups 4 --gsp-prompts-per-group 3

Each worker's KV pool is --max-total-tokens (default 4096 tokens, four of the 512-token system
prompts plus the requests running): round robin sends every group to every worker, so each
worker must hold all the prefixes; cache_aware splits them, which is where it pays.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import httpx

from benchmarks.bench_serving import load_tokenizer, parse_args, run_benchmark
from tools.router_fleet import Fleet, Router, free_port, wait_until


def _counters(workers: list[str]) -> dict[str, dict]:
    return {w: httpx.get(w + "/get_server_info", timeout=60).json() for w in workers}


def measure(router: Router, workers: list[str], load: list[str], tokenizer) -> dict:
    httpx.post(router.url + "/flush_cache", timeout=60).raise_for_status()
    before = _counters(workers)
    m = asyncio.run(run_benchmark(parse_args(["--base-url", router.url, *load]), tokenizer))
    after = _counters(workers)
    delta = {k: sum(after[w][k] - before[w][k] for w in workers)
             for k in ("cached_tokens_total", "prompt_tokens_total")}
    m["worker_hit_rate"] = delta["cached_tokens_total"] / max(1, delta["prompt_tokens_total"])
    m["served"] = [after[w]["num_requests_total"] - before[w]["num_requests_total"]
                   for w in workers]
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-total-tokens", type=int, default=4096, help="each worker's KV pool")
    p.add_argument("--gsp-num-groups", type=int, default=8)
    p.add_argument("--gsp-prompts-per-group", type=int, default=4)
    p.add_argument("--gsp-system-prompt-len", type=int, default=512)
    p.add_argument("--gsp-question-len", type=int, default=32)
    p.add_argument("--gsp-output-len", type=int, default=16)
    p.add_argument("--max-concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-dir", type=Path, help="worker and router logs (default: a temp dir)")
    p.add_argument("--output-file", default=None)
    args = p.parse_args()
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench_router-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    load = ["--dataset-name", "generated-shared-prefix", "--prompt-format", "text",
            "--warmup-requests", "0", "--max-concurrency", str(args.max_concurrency),
            "--gsp-prompts-per-group", str(args.gsp_prompts_per_group),
            "--gsp-system-prompt-len", str(args.gsp_system_prompt_len),
            "--gsp-question-len", str(args.gsp_question_len),
            "--gsp-output-len", str(args.gsp_output_len)]
    measured = [*load, "--gsp-num-groups", str(args.gsp_num_groups), "--seed", str(args.seed)]
    if args.output_file:
        measured += ["--output-file", args.output_file]
    flags = ["--max-total-tokens", str(args.max_total_tokens), "--skip-server-warmup",
             "--log-level", "warning"]
    fleet = Fleet(args.workers, flags, port=free_port(),
                  worker_ports=[free_port() for _ in range(args.workers)],
                  router_args=["--prometheus-port", str(free_port())], log_dir=log_dir)
    rr = Router(fleet.worker_urls, "127.0.0.1", free_port(), "round_robin",
                ["--prometheus-port", str(free_port())], log_dir, name="router-rr")
    tokenizer = load_tokenizer(None)
    print(f"logs in {log_dir}")
    try:
        fleet.start()
        rr.start()
        wait_until(lambda: rr.healthy_workers() >= set(fleet.worker_urls), [rr], 120,
                   "the round-robin router had registered every worker")
        warm = [*load, "--gsp-num-groups", "4", "--seed", str(args.seed + 1000)]
        asyncio.run(run_benchmark(parse_args(["--base-url", rr.url, *warm]), tokenizer))
        results = {}
        for name, router in (("round_robin", rr), ("cache_aware", fleet.router)):
            tagged = [*measured, "--tag", f"router-{name}"]
            results[name] = measure(router, fleet.worker_urls, tagged, tokenizer)
    finally:
        rr.stop(grace_s=5)
        fleet.stop()
    print(f"\n======= {args.workers} workers: cache_aware vs round_robin (same run) =======")
    for label, key in (("request throughput (req/s)", "request_throughput"),
                       ("output throughput (tok/s)", "output_throughput"),
                       ("median TTFT (ms)", "median_ttft_ms"),
                       ("cache hit rate (usage)", "cache_hit_rate"),
                       ("cache hit rate (workers)", "worker_hit_rate"),
                       ("requests per worker", "served"), ("failed requests", "failed")):
        ca, rr_ = results["cache_aware"][key], results["round_robin"][key]
        fmt = (lambda v: f"{v:.3f}") if isinstance(ca, float) else str
        print(f"{label:<28} cache_aware {fmt(ca):>12}   round_robin {fmt(rr_):>12}")
    ca, rr_ = results["cache_aware"], results["round_robin"]
    print(f"hit rate ratio cache_aware/round_robin: "
          f"{ca['worker_hit_rate'] / max(rr_['worker_hit_rate'], 1e-9):.2f}x")
    print(f"throughput ratio: {ca['request_throughput'] / rr_['request_throughput']:.2f}x; "
          f"median TTFT ratio round_robin/cache_aware: "
          f"{rr_['median_ttft_ms'] / ca['median_ttft_ms']:.2f}x")


if __name__ == "__main__":
    main()
