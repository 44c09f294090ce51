"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .answer import AnswerSplitter, Parts
from .errors import APIError, sse_error
from .generation import (
    SSE_DONE,
    SSEResponse,
    StreamSet,
    UsageCounter,
    finish_reason,
    generate_all,
    make_jobs,
    sse,
)
from .inputs import (
    chat_prompt,
    fit_prompt,
    logprobs_wanted,
    reject_unsupported,
    sampling_params,
)
from .logprobs import TokenStrings, chat_content, reported, token_strings
from .protocol import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    ChatStreamChoice,
    UsageInfo,
)
from .tools.parser import ArgsDelta, CallStart

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(req: ChatCompletionRequest, raw: Request) -> Response:
    engine = raw.app.state.engine
    reject_unsupported(req, raw.app.state.vocab_size)
    # Long prompts take seconds to render and tokenize.
    prompt = await asyncio.to_thread(chat_prompt, engine, req, raw.app.state.added_tokens)
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    ids, budget = fit_prompt(prompt.ids, limit, engine.context_length,
                             raw.app.state.auto_truncate, param="messages")
    params = sampling_params(req, budget, raw.app.state.vocab_size, prompt.grammar)
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    jobs = make_jobs(rid, [ids], [params], req.n)
    model = req.model or engine.served_model_name
    top = logprobs_wanted(req)
    strings = token_strings(raw.app.state, engine.tokenizer) if top is not None else None

    if req.stream:
        streams = StreamSet(engine, jobs)
        await streams.start(raw)
        splitters = [AnswerSplitter(prompt.reasoning_start, prompt.plan) for _ in range(req.n)]
        events = _stream(streams, rid, model, req.include_usage, strings, top or 0, splitters)
        return SSEResponse(events, streams.close)

    outputs = await generate_all(engine, jobs, raw)
    choices, usage = [], UsageCounter(req.n)
    for job, out in zip(jobs, outputs, strict=True):
        meta = out["meta_info"]
        reason, matched = finish_reason(meta)
        logprobs = None
        if strings is not None:
            logprobs = {"content": chat_content(strings, *reported(meta), top or 0),
                        "refusal": None}
        parts = AnswerSplitter(prompt.reasoning_start, prompt.plan).whole(out["text"])
        message = ChatMessageOut(
            content=parts.content if parts.content or not parts.calls else None,
            tool_calls=[c.openai() for c in parts.calls] or None,
            reasoning_content=parts.reasoning or None)
        choices.append(ChatChoice(index=job.index, message=message, logprobs=logprobs,
                                  finish_reason=_reason(reason, bool(parts.calls)),
                                  matched_stop=matched))
        usage.add(job, meta)
    body = ChatCompletionResponse(id=rid, model=model, choices=choices, usage=usage.usage())
    return JSONResponse(body.model_dump())


def _reason(reason: str | None, called: bool) -> str | None:
    """"tool_calls" when the answer ended (not cut at max_tokens) with calls in it."""
    return "tool_calls" if called and reason == "stop" else reason


def _delta(parts: Parts) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if parts.reasoning:
        delta["reasoning_content"] = parts.reasoning
    if parts.content:
        delta["content"] = parts.content
    return delta


def _call_deltas(parts: Parts) -> list[dict[str, Any]]:
    """Per call, as OpenAI streams it: index, id and name first, then argument pieces."""
    out = []
    for item in parts.items:
        if isinstance(item, CallStart):
            out.append({"tool_calls": [{"index": item.index, "id": item.id, "type": "function",
                                        "function": {"name": item.name, "arguments": ""}}]})
        elif isinstance(item, ArgsDelta):
            out.append({"tool_calls": [{"index": item.index,
                                        "function": {"arguments": item.text}}]})
    return out


async def _stream(streams: StreamSet, rid: str, model: str, include_usage: bool,
                  strings: TokenStrings | None, top: int, splitters: list[AnswerSplitter]
                  ) -> AsyncIterator[str]:
    created = int(time.time())
    n = len(splitters)

    def chunk(choices: list[ChatStreamChoice], usage: UsageInfo | None = None) -> str:
        body = ChatCompletionChunk(id=rid, created=created, model=model, choices=choices,
                                   usage=usage)
        return sse(body.model_dump_json())

    for index in range(n):
        yield chunk([ChatStreamChoice(index=index, delta={"role": "assistant", "content": ""})])
    usage = UsageCounter(n)
    sent = [0] * n  # tokens whose logprobs each choice has streamed
    called = [False] * n
    try:
        async for job, out in streams.chunks():
            meta: dict[str, Any] = out["meta_info"]
            logprobs = None
            if strings is not None:
                tokens, tops = reported(meta)
                logprobs = {"content": chat_content(strings, tokens[sent[job.index]:],
                                                    tops and tops[sent[job.index]:], top),
                            "refusal": None}
                sent[job.index] = len(tokens)
            reason, matched = finish_reason(meta)
            splitter = splitters[job.index]
            parts = splitter.feed(out["text"])
            if reason is not None:
                parts += splitter.finish()
            called[job.index] |= parts.starts_call
            if parts.reasoning or parts.content or logprobs and logprobs["content"]:
                yield chunk([ChatStreamChoice(index=job.index, delta=_delta(parts),
                                              logprobs=logprobs)])
            for delta in _call_deltas(parts):
                yield chunk([ChatStreamChoice(index=job.index, delta=delta)])
            if reason is not None:
                reason = _reason(reason, called[job.index])
                yield chunk([ChatStreamChoice(index=job.index, delta={}, finish_reason=reason,
                                              matched_stop=matched)])
                usage.add(job, meta)
        if include_usage:
            yield chunk([], usage.usage())
    except APIError as e:
        yield sse_error(e)
    except Exception as e:
        logger.exception("chat stream %s failed", rid)
        yield sse_error(APIError(f"Internal server error: {type(e).__name__}: {e}", status=500))
    yield SSE_DONE
