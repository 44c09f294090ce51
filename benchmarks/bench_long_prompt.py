"""A long prompt beside a streaming request: how long the prompt takes, and how long the
stream waits between tokens meanwhile, for the CPU attention backends in the same run.

Each backend gets its own server (`--attention-backend reference`, the jnp oracle that gathers
whole contexts per token, then `blocked`, the CPU default). A chat stream decodes; once it has
run for a few seconds, one completion of `--prompt-len` token ids with max_tokens 1 is sent.
Printed per backend: the prompt's latency, and the stream's median and largest gap between
tokens before and while the prompt prefills.

    python -m benchmarks.bench_long_prompt                     # 4,095-token prompt
    python -m benchmarks.bench_long_prompt --prompt-len 8191 --backends blocked
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx

from benchmarks._server import serving


def measure(backend: str, prompt_len: int) -> dict:
    flags = ["--attention-backend", backend, "--context-length", str(max(prompt_len + 1, 4096))]
    with serving(flags) as server:
        gaps: list[tuple[float, float]] = []   # (time, gap)
        stop = threading.Event()

        def stream() -> None:
            body = {"messages": [{"role": "user", "content": "Tell me a very long story."}],
                    "max_tokens": 4000, "ignore_eos": True, "temperature": 0.0, "stream": True}
            with httpx.Client(base_url=server.url, timeout=None) as c, \
                    c.stream("POST", "/v1/chat/completions", json=body) as response:
                last = None
                for line in response.iter_lines():
                    now = time.monotonic()
                    if line.startswith("data:") and '"content"' in line:
                        if last is not None:
                            gaps.append((now, now - last))
                        last = now
                    if stop.is_set():
                        return

        reader = threading.Thread(target=stream, daemon=True)
        reader.start()
        time.sleep(5.0)
        ids = [(i * 7919) % 40000 + 100 for i in range(prompt_len)]
        t0 = time.monotonic()
        response = httpx.post(server.url + "/v1/completions", timeout=None,
                              json={"prompt": ids, "max_tokens": 1, "temperature": 0.0})
        t1 = time.monotonic()
        response.raise_for_status()
        stop.set()
        reader.join(30)
    before = [g for t, g in gaps if t < t0]
    during = [g for t, g in gaps if t0 <= t <= t1]
    return {"prompt_s": t1 - t0, "before_median": statistics.median(before),
            "during_median": statistics.median(during) if during else float("nan"),
            "during_max": max(during, default=float("nan"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt-len", type=int, default=4095)
    p.add_argument("--backends", default="reference,blocked")
    args = p.parse_args()
    results = {b: measure(b, args.prompt_len) for b in args.backends.split(",")}
    print(f"\n=========== a {args.prompt_len}-token prompt beside a stream (same run) "
          "===========")
    print(f"{'backend':<10} {'prompt (s)':>11} {'ITL before (ms)':>16} "
          f"{'ITL during, median (ms)':>24} {'max (ms)':>9}")
    for b, r in results.items():
        print(f"{b:<10} {r['prompt_s']:>11.1f} {r['before_median'] * 1e3:>16.0f} "
              f"{r['during_median'] * 1e3:>24.0f} {r['during_max'] * 1e3:>9.0f}")
    if "reference" in results and "blocked" in results:
        ref, new = results["reference"], results["blocked"]
        print(f"blocked vs reference: prompt {ref['prompt_s'] / new['prompt_s']:.2f}x faster, "
              f"median ITL during it {ref['during_median'] / new['during_median']:.2f}x lower")


if __name__ == "__main__":
    main()
