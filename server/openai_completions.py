"""POST /v1/completions."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .errors import APIError, sse_error
from .generation import (
    SSE_DONE,
    Job,
    SSEResponse,
    StreamSet,
    UsageCounter,
    finish_reason,
    generate_all,
    make_jobs,
    sse,
)
from .inputs import completion_prompts, fit_prompt, reject_unsupported, sampling_params
from .logprobs import CompletionLogprobs, prompt_reported, reported, token_strings
from .protocol import CompletionChoice, CompletionRequest, CompletionResponse, UsageInfo

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/completions", response_model=None)
async def completions(req: CompletionRequest, raw: Request) -> Response:
    engine = raw.app.state.engine
    vocab_size = raw.app.state.vocab_size
    reject_unsupported(req, vocab_size)
    given = await asyncio.to_thread(completion_prompts, engine, req, vocab_size)
    scores_prompt = req.echo and req.logprobs is not None  # the prompt's logprobs come first
    prompts, params = [], []
    for k, (ids, text) in enumerate(given):
        fitted, budget = fit_prompt(ids, req.max_tokens, engine.context_length,
                                    raw.app.state.auto_truncate,
                                    param="prompt" if len(given) == 1 else f"prompt[{k}]")
        if fitted is not ids:
            text = await asyncio.to_thread(engine.tokenizer.decode, fitted)
        prompts.append((fitted, text))
        params.append(sampling_params(req, budget, vocab_size))
        if scores_prompt:
            params[-1]["logprob_start_len"] = 0
    rid = f"cmpl-{uuid.uuid4().hex}"
    jobs = make_jobs(rid, [ids for ids, _ in prompts], params, req.n)
    echoes = [prompts[job.index // req.n][1] if req.echo else "" for job in jobs]
    model = req.model or engine.served_model_name
    logprobs = None
    if req.logprobs is not None:  # offsets count from the echoed prompt's first token
        strings = token_strings(raw.app.state, engine.tokenizer)
        logprobs = [CompletionLogprobs(strings, req.logprobs) for _ in jobs]

    if req.stream:
        streams = StreamSet(engine, jobs)
        await streams.start(raw)
        events = _stream(streams, jobs, echoes, rid, model, req.n, req.include_usage, logprobs,
                         scores_prompt)
        return SSEResponse(events, streams.close)

    outputs = await generate_all(engine, jobs, raw)
    choices, usage = [], UsageCounter(req.n)
    for job, echo, out in zip(jobs, echoes, outputs, strict=True):
        meta = out["meta_info"]
        reason, matched = finish_reason(meta)
        choices.append(CompletionChoice(
            index=job.index, text=echo + out["text"], finish_reason=reason, matched_stop=matched,
            logprobs=logprobs[job.index].build(*_entries(meta, scores_prompt, 0))
            if logprobs else None))
        usage.add(job, meta)
    body = CompletionResponse(id=rid, model=model, choices=choices, usage=usage.usage())
    return JSONResponse(body.model_dump())


def _entries(meta: dict, with_prompt: bool, sent: int) -> tuple[list, list | None]:
    """The logprob entries of a choice from its `sent`-th output token on, after the
    prompt's (echo)."""
    tokens, tops = reported(meta)
    tokens, tops = tokens[sent:], tops and tops[sent:]
    if with_prompt:
        prompt, prompt_tops = prompt_reported(meta)
        tokens = prompt + tokens
        tops = None if tops is None else (prompt_tops or [None] * len(prompt)) + tops
    return tokens, tops


async def _stream(streams: StreamSet, jobs: list[Job], echoes: list[str], rid: str, model: str,
                  n: int, include_usage: bool, logprobs: list[CompletionLogprobs] | None,
                  scores_prompt: bool) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(choices: list[CompletionChoice], usage: UsageInfo | None = None) -> str:
        body = CompletionResponse(id=rid, created=created, model=model, choices=choices,
                                  usage=usage)
        return sse(body.model_dump_json())

    for job, echo in zip(jobs, echoes, strict=True):
        if echo:
            yield chunk([CompletionChoice(index=job.index, text=echo)])
    usage = UsageCounter(n)
    sent = [0] * len(jobs)  # tokens whose logprobs each choice has streamed
    prompt_sent: set[int] = set()  # choices whose prompt logprobs went out (echo)
    try:
        async for job, out in streams.chunks():
            meta = out["meta_info"]
            reason, matched = finish_reason(meta)
            new_logprobs = None
            if logprobs is not None and (not scores_prompt or meta.get("input_token_logprobs")):
                with_prompt = scores_prompt and job.index not in prompt_sent
                prompt_sent.add(job.index)
                new_logprobs = logprobs[job.index].build(
                    *_entries(meta, with_prompt, sent[job.index]))
                sent[job.index] = len(reported(meta)[0])
            if out["text"] or reason is not None or new_logprobs and new_logprobs["tokens"]:
                yield chunk([CompletionChoice(index=job.index, text=out["text"],
                                              finish_reason=reason, matched_stop=matched,
                                              logprobs=new_logprobs)])
            if reason is not None:
                usage.add(job, meta)
        if include_usage:
            yield chunk([], usage.usage())
    except APIError as e:
        yield sse_error(e)
    except Exception as e:
        logger.exception("completion stream %s failed", rid)
        yield sse_error(APIError(f"Internal server error: {type(e).__name__}: {e}", status=500))
    yield SSE_DONE
