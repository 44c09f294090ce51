"""SGLang's native endpoints: /generate, /health, /health_generate, /get_model_info,
/get_server_info, /flush_cache, /abort_request.

/generate answers with the engine's own dicts. Streaming follows SGLang: each SSE chunk
carries the text and output_ids generated SO FAR (cumulative, not a delta), so SGLang clients
that print `data["text"][prev:]` work unchanged; batched prompts add an "index" to each chunk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from jaxengine.sampling_params import MAX_TOKENS, SamplingParams

from .errors import APIError, sse_error
from .generation import (
    SSE_DONE,
    Job,
    SSEResponse,
    StreamSet,
    check_batch_size,
    check_sampling,
    generate_all,
    sse,
)
from .inputs import check_token_ids, truncated
from .logprobs import token_strings
from .protocol import AbortRequest, GenerateRequest

logger = logging.getLogger(__name__)
router = APIRouter()
DEFAULT_MAX_NEW_TOKENS = SamplingParams().max_new_tokens


def json_safe(value: Any) -> Any:
    """Engine info dicts may hold paths, numpy scalars or enums: make them plain JSON."""
    return json.loads(json.dumps(value, default=str))


PROBE_METHODS = "GET, HEAD, OPTIONS"


# One route per method: one OpenAPI operation id each.
@router.get("/health", operation_id="health_get")
@router.head("/health", operation_id="health_head")
async def health(raw: Request) -> Response:
    """200 once the engine is loaded (before that, `lifecycle.Starting` answers 503); 503 if
    its engine core has died or the server is shutting down, so a load balancer stops
    sending work to this server."""
    state = raw.app.state
    return Response(status_code=200 if state.engine.alive and not state.draining else 503)


@router.options("/health", operation_id="health_options")
@router.options("/health_generate", operation_id="health_generate_options")
async def probe_options() -> Response:
    return Response(status_code=204, headers={"Allow": PROBE_METHODS})


@router.get("/health_generate", operation_id="health_generate_get")
@router.head("/health_generate", operation_id="health_generate_head")
async def health_generate(raw: Request) -> Response:
    """200 if the engine can generate one token within 20 s, 503 otherwise (or while the
    server shuts down)."""
    if raw.app.state.draining:
        return Response(status_code=503)
    engine = raw.app.state.engine
    job = Job(0, f"health-{uuid.uuid4().hex}", {"max_new_tokens": 1, "temperature": 0.0},
              input_ids=[0])
    try:
        await asyncio.wait_for(generate_all(engine, [job], raw), timeout=20)
    except Exception as e:  # a timeout or any engine failure: not healthy
        logger.warning("health_generate failed: %r", e)
        return Response(status_code=503)
    return Response(status_code=200)


@router.get("/get_model_info")
async def get_model_info(raw: Request) -> JSONResponse:
    return JSONResponse(json_safe(raw.app.state.engine.get_model_info()))


@router.get("/get_server_info")
async def get_server_info(raw: Request) -> JSONResponse:
    engine = raw.app.state.engine
    info = await asyncio.to_thread(engine.get_server_info)
    if info.get("api_key"):
        info["api_key"] = "<set>"  # never echo the secret
    # The name the server answers to, not the flag (None by default): SGLang's router takes
    # its model id from here.
    info["served_model_name"] = engine.served_model_name
    # "ok", or which page went missing: what leak tests (and operators) look at.
    info["kv_cache_integrity"] = await asyncio.to_thread(engine.check_integrity) or "ok"
    return JSONResponse(json_safe(info))


# Two routes rather than api_route(methods=[...]): one OpenAPI operation id each.
@router.get("/flush_cache", operation_id="flush_cache_get")
@router.post("/flush_cache", operation_id="flush_cache_post")
async def flush_cache(raw: Request) -> Response:
    """Empty the radix cache; 400 while requests are queued or running (as SGLang)."""
    if not await asyncio.to_thread(raw.app.state.engine.flush_cache):
        raise APIError("Cache not flushed: requests are queued or running; retry when idle")
    return Response("Cache flushed.\n", status_code=200)


@router.post("/abort_request")
async def abort_request(req: AbortRequest, raw: Request) -> JSONResponse:
    """Abort one request by id (a /generate rid, or an OpenAI response id, which aborts all of
    its choices), or every request with abort_all. Unknown ids are not an error: the request
    may just have finished."""
    if not req.abort_all and not req.rid:
        raise APIError("Give 'rid' or 'abort_all': true", param="rid")
    pattern = ".*" if req.abort_all else re.escape(req.rid) + r"(-\d+)?"
    rids = raw.app.state.engine.abort_matching(pattern, "aborted by /abort_request")
    return JSONResponse({"aborted": rids})


def _jobs(req: GenerateRequest, vocab_size: int) -> tuple[list[Job], bool]:
    """The engine requests of a /generate body, and whether it was a batch."""
    if (req.text is None) == (req.input_ids is None):
        raise APIError("Give exactly one of 'text' and 'input_ids'", param="text")
    for name, why in (("image_data", "the served models take text only"),
                      ("lora_path", "LoRA adapters are not supported"),
                      ("custom_logit_processor", "custom logit processors are not supported"),
                      ("return_hidden_states", "hidden states are not returned")):
        if getattr(req, name):
            raise APIError(f"{name}: {why}", param=name)
    if req.text is not None:
        batch = isinstance(req.text, list)
        prompts: list[Any] = req.text if batch else [req.text]
    else:
        batch = bool(req.input_ids) and isinstance(req.input_ids[0], list)
        prompts = req.input_ids if batch else [req.input_ids]
    if not prompts:
        raise APIError("The batch of prompts is empty", param="text")
    check_batch_size(len(prompts), "text" if req.text is not None else "input_ids")
    sampling = req.sampling_params
    samplings = sampling if isinstance(sampling, list) else [sampling or {}] * len(prompts)
    if batch and isinstance(req.rid, str):
        raise APIError("A batch of prompts takes a list of rids, one per prompt", param="rid")
    rids = req.rid if isinstance(req.rid, list) else [req.rid] * len(prompts)
    if len(samplings) != len(prompts) or len(rids) != len(prompts):
        raise APIError("sampling_params and rid lists must match the number of prompts",
                       param="sampling_params")
    repeated = sorted(r for r, n in Counter(rids).items() if r is not None and n > 1)
    if repeated:
        # A rid names one request (for /abort_request and in meta_info): one per prompt.
        raise APIError(f"rid {repeated[0]!r} is given to more than one prompt of the batch",
                       param="rid")
    starts = req.logprob_start_len
    starts = starts if isinstance(starts, list) else [starts] * len(prompts)
    if len(starts) != len(prompts):
        raise APIError("a logprob_start_len list must match the number of prompts",
                       param="logprob_start_len")
    base = uuid.uuid4().hex
    jobs = []
    for k, (prompt, params, rid) in enumerate(zip(prompts, samplings, rids, strict=True)):
        if req.return_logprob:
            # SGLang's -1 reports the last prompt token's logprob (a start past the prompt
            # is clamped to it).
            start = MAX_TOKENS if starts[k] == -1 else starts[k]
            params = {**params, "return_logprob": True,
                      "top_logprobs_num": req.top_logprobs_num, "logprob_start_len": start}
            if req.token_ids_logprob is not None:
                asked = req.token_ids_logprob
                params["token_ids_logprob"] = asked[k] if asked and isinstance(asked[0], list) \
                    else asked
        params = check_sampling(params, vocab_size, openai_names=False)
        if params.get("n", 1) != 1:
            raise APIError("/generate takes n=1; send the prompt n times instead",
                           param="sampling_params.n")
        if isinstance(prompt, str):
            job = Job(k, rid or f"{base}-{k}", params, prompt=prompt)
        else:
            check_token_ids(prompt, vocab_size, "input_ids")
            job = Job(k, rid or f"{base}-{k}", params, input_ids=list(prompt))
        jobs.append(job)
    return jobs, batch


@router.post("/generate", response_model=None)
async def generate(req: GenerateRequest, raw: Request) -> Response:
    engine = raw.app.state.engine
    jobs, batch = _jobs(req, raw.app.state.vocab_size)
    if raw.app.state.auto_truncate:
        for job in jobs:
            ids = job.input_ids or await asyncio.to_thread(
                engine.encode_prompt, job.prompt)
            fitted = truncated(ids, job.sampling.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
                               engine.context_length)
            if fitted is not ids:  # keep the end, as the OpenAI routes do
                job.input_ids, job.prompt = fitted, None
    if req.stream:
        streams = StreamSet(engine, jobs)
        await streams.start(raw)
        text_request = raw if req.return_text_in_logprobs else None
        return SSEResponse(_stream(streams, batch, text_request), streams.close)
    # Aborts come back in meta_info, as SGLang's do; a full queue was already a 503.
    outputs = await generate_all(engine, jobs, raw)
    if req.return_text_in_logprobs:
        for out in outputs:
            _logprob_texts(raw, out["meta_info"])
    outputs = json_safe(outputs)
    return JSONResponse(outputs if batch else outputs[0])


def _logprob_texts(raw: Request, meta: dict[str, Any]) -> None:
    """SGLang's return_text_in_logprobs: each (logprob, id, None) gets its token's text."""
    strings = token_strings(raw.app.state, raw.app.state.engine.tokenizer)

    def named(entries: list) -> list:
        return [(lp, t, strings.get(t)[0]) for lp, t, _ in entries]

    for key in ("input_token_logprobs", "output_token_logprobs"):
        if key in meta:
            meta[key] = named(meta[key])
    for key in ("input_top_logprobs", "output_top_logprobs", "input_token_ids_logprobs",
                "output_token_ids_logprobs"):
        if key in meta:
            meta[key] = [None if row is None else named(row) for row in meta[key]]


async def _stream(streams: StreamSet, batch: bool, text_request: Request | None
                  ) -> AsyncIterator[str]:
    texts: dict[int, str] = {}
    ids: dict[int, list[int]] = {}
    try:
        async for job, out in streams.chunks():
            texts[job.index] = texts.get(job.index, "") + out["text"]
            ids[job.index] = ids.get(job.index, []) + list(out["output_ids"])
            body = dict(out, text=texts[job.index], output_ids=ids[job.index])
            if text_request is not None:
                _logprob_texts(text_request, out["meta_info"])
            if batch:
                body["index"] = job.index
            yield sse(json.dumps(json_safe(body)))
    except APIError as e:
        yield sse_error(e)
    except Exception as e:
        logger.exception("/generate stream failed")
        yield sse_error(APIError(f"Internal server error: {type(e).__name__}: {e}", status=500))
    yield SSE_DONE
