"""Running one HTTP request as one or more engine requests (n choices, batched prompts).

`n > 1` is done here: n concurrent `async_generate` calls with n=1 each (seed + i). Every
engine request has its own id, so a client that goes away gets all of its requests aborted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from jaxengine.sampling_params import SamplingParams

from .errors import APIError
from .protocol import UsageInfo

logger = logging.getLogger(__name__)

_OPENAI_NAMES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"}
RETRY_AFTER_S = "1"
# Engine requests one HTTP request may make (prompts x n): a batch beyond it is a client bug,
# or an attempt to fill the queue in one call.
MAX_BATCH_REQUESTS = 1024


def check_batch_size(count: int, param: str) -> None:
    if count > MAX_BATCH_REQUESTS:
        raise APIError(f"This request asks for {count} generations (prompts x n); at most "
                       f"{MAX_BATCH_REQUESTS} are allowed per request", param=param)


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


@dataclass
class Job:
    """One engine request: `index` is the choice index it answers."""

    index: int
    rid: str
    sampling: dict[str, Any]
    input_ids: list[int] | None = None
    prompt: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "input_ids": self.input_ids,
                "sampling_params": self.sampling, "request_id": self.rid}


def check_sampling(params: dict[str, Any], vocab_size: int,
                   openai_names: bool = True) -> dict[str, Any]:
    """Validate with the engine's own rules (a ValueError becomes a 400 naming the field) and
    return the params the engine gets: top_k past the vocabulary means "no top-k", and token
    ids must be real ids, so that no request can put out-of-range values into a batch."""
    def fail(message: str, name: str) -> APIError:
        param = _OPENAI_NAMES.get(name, name) if openai_names else name
        if openai_names and name in _OPENAI_NAMES:
            message = param + message[len(name):]
        known = {f.name for f in dataclasses.fields(SamplingParams)}
        return APIError(message, param=param if name in known else None)

    try:
        SamplingParams.from_any(params)
    except ValueError as e:
        raise fail(str(e), str(e).split(" ", 1)[0]) from e
    params = dict(params)
    if isinstance(params.get("top_k"), int) and params["top_k"] > vocab_size:
        params["top_k"] = vocab_size
    for name in ("stop_token_ids", "token_ids_logprob"):
        bad = [t for t in params.get(name) or [] if t >= vocab_size]
        if bad:
            raise fail(f"{name} holds {bad[0]}, past the vocabulary ({vocab_size} tokens)",
                       name)
    return params


def choice_seeds(seed: int | None, n: int) -> list[int | None]:
    """Seeds for n choices: seed + i; a random base when n > 1 and no seed, so they differ."""
    if seed is None and n > 1:
        seed = random.randrange(2**31)
    return [None if seed is None else seed + i for i in range(n)]


def make_jobs(base_id: str, prompts: list[list[int]], samplings: list[dict[str, Any]],
              n: int) -> list[Job]:
    """n jobs per prompt, with that prompt's sampling dict; choice index = prompt_index * n + i
    (the OpenAI order for batched prompts)."""
    jobs = []
    seeds = choice_seeds(samplings[0].get("seed"), n)
    for p, (ids, sampling) in enumerate(zip(prompts, samplings, strict=True)):
        for i in range(n):
            params = dict(sampling)
            if seeds[i] is not None:
                params["seed"] = seeds[i]
            index = p * n + i
            jobs.append(Job(index, f"{base_id}-{index}", params, input_ids=ids))
    return jobs


def finish_reason(meta: dict[str, Any]) -> tuple[str | None, int | str | None]:
    """Engine finish_reason -> (OpenAI finish_reason, matched stop); abort is an error."""
    fr = meta.get("finish_reason")
    if fr is None:
        return None, None
    kind = fr.get("type")
    if kind == "abort":
        status = fr.get("status_code") or 500
        # 503 is "busy or shutting down": tell clients when to come back.
        headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
        raise APIError(f"The request was aborted: {fr.get('message') or 'engine abort'}",
                       status=status, headers=headers)
    return ("length" if kind == "length" else "stop"), fr.get("matched")


async def _watch_disconnect(request: Request | None, pending: set[asyncio.Future]) -> None:
    if request is not None and pending and await request.is_disconnected():
        raise ClientDisconnected()


async def generate_all(engine: Any, jobs: list[Job], request: Request | None) -> list[dict]:
    """Run the jobs concurrently to completion; abort them all if one fails or the client goes."""
    tasks = [asyncio.ensure_future(engine.async_generate(**job.kwargs(), stream=False))
             for job in jobs]
    try:
        pending: set[asyncio.Future] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=0.5,
                                               return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()
                _raise_if_refused(task.result())
            await _watch_disconnect(request, pending)
        return [task.result() for task in tasks]
    finally:  # a cancelled task aborts its own engine request (never another's)
        for task in tasks:
            task.cancel()


def _raise_if_refused(out: dict[str, Any]) -> None:
    """A 503 abort (a full queue, shutdown) fails the whole HTTP request at once, so its other
    choices or prompts stop too instead of running for an answer nobody gets."""
    fr = out["meta_info"].get("finish_reason") or {}
    if fr.get("type") == "abort" and fr.get("status_code") == 503:
        finish_reason(out["meta_info"])


@dataclass
class StreamSet:
    """The engine streams of one HTTP request, started together and read as one stream."""

    engine: Any
    jobs: list[Job]
    _iters: list[Any] = field(default_factory=list)
    _first: list[dict] = field(default_factory=list)
    _closed: bool = False

    async def start(self, request: Request | None = None) -> None:
        """Start every stream and read its first chunk, so that a bad request (ValueError)
        is raised here, before any byte of the response is sent. A client that leaves while
        its request is still queued is noticed here (ClientDisconnected), not at the first
        token."""
        calls = [asyncio.ensure_future(self.engine.async_generate(**job.kwargs(), stream=True))
                 for job in self.jobs]
        first = None
        try:
            self._iters = list(await asyncio.gather(*calls))
            first = asyncio.ensure_future(asyncio.gather(*(anext(it) for it in self._iters)))
            while not (await asyncio.wait({first}, timeout=0.25))[0]:
                await _watch_disconnect(request, {first})
            self._first = list(first.result())
            for chunk in self._first:
                if chunk["meta_info"].get("finish_reason") is not None:
                    finish_reason(chunk["meta_info"])  # an abort (a full queue) is an error now
        except BaseException:
            for call in [*calls, first]:
                if call is not None:
                    call.cancel()
                    # A cancelled gather ends with CancelledError as its exception: read it, or
                    # asyncio logs "exception was never retrieved".
                    call.add_done_callback(lambda f: f.cancelled() or f.exception())
            self.close()
            raise

    async def chunks(self) -> AsyncIterator[tuple[Job, dict]]:
        """(job, chunk) pairs in arrival order; each job's last chunk has a finish_reason."""
        if len(self.jobs) == 1:  # the common case: no pump task and queue hop per chunk
            try:
                async for chunk in self._chunks_of(0):
                    yield self.jobs[0], chunk
            finally:
                self.close()
            return
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(k: int) -> None:
            try:
                async for chunk in self._chunks_of(k):
                    await queue.put((k, chunk))
                await queue.put((k, None))
            except Exception as e:  # handed to the reader, which reports it to the client
                await queue.put((k, e))

        pumps = [asyncio.create_task(pump(k)) for k in range(len(self.jobs))]
        try:
            done = 0
            while done < len(self.jobs):
                k, item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                if item is None:
                    done += 1
                    continue
                yield self.jobs[k], item
        finally:
            for task in pumps:
                task.cancel()
            self.close()

    async def _chunks_of(self, k: int) -> AsyncIterator[dict]:
        """Job k's chunks: the first one, read by `start`, then the rest of its stream."""
        yield self._first[k]
        if self._first[k]["meta_info"].get("finish_reason") is None:
            async for chunk in self._iters[k]:
                yield chunk

    def close(self) -> None:
        """Abort every stream that has not finished (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for stream in self._iters:
            try:
                stream.abort()
            except Exception:  # aborting is best effort; never mask the real outcome
                logger.exception("aborting a stream failed")


class SSEResponse(StreamingResponse):
    """text/event-stream that runs `on_close` however the stream ends (done, error, client
    disconnect), so unfinished engine requests are always aborted."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


SSE_DONE = sse("[DONE]")


class UsageCounter:
    """Token usage of one response: prompt tokens (and cached ones) count once per prompt,
    however many choices it has; completion tokens count for every choice."""

    def __init__(self, n: int):
        self.n = n
        self.prompt: dict[int, int] = {}
        self.cached: dict[int, int] = {}
        self.completion = 0

    def add(self, job: Job, meta: dict[str, Any]) -> None:
        prompt_index = job.index // self.n
        self.prompt[prompt_index] = meta["prompt_tokens"]
        self.cached[prompt_index] = max(self.cached.get(prompt_index, 0),
                                        meta.get("cached_tokens", 0))
        self.completion += meta["completion_tokens"]

    def usage(self) -> UsageInfo:
        return UsageInfo.build(sum(self.prompt.values()), self.completion,
                               sum(self.cached.values()))
