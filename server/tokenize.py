"""POST /v1/tokenize and /v1/detokenize (SGLang's and vLLM's shape): the server's own
tokenizer, so clients can count tokens exactly as the engine will."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .errors import APIError
from .inputs import check_token_ids
from .protocol import DetokenizeRequest, TokenizeRequest
from .tools.request import template_messages

router = APIRouter()


@router.post("/v1/tokenize")
async def tokenize(req: TokenizeRequest, raw: Request) -> JSONResponse:
    if (req.prompt is None) == (req.messages is None):
        raise APIError("Give exactly one of 'prompt' and 'messages'", param="prompt")
    # Off the event loop: a long text takes seconds, and every other route must answer.
    return JSONResponse(await asyncio.to_thread(_tokenize, raw.app.state.engine, req))


def _tokenize(engine: Any, req: TokenizeRequest) -> dict[str, Any]:
    if req.messages is not None:
        messages, _ = template_messages(req.messages, None, engine.chat_template)
        try:
            tokens: Any = list(engine.apply_chat_template(messages))
        except ValueError as e:
            raise APIError(f"Cannot apply the chat template: {e}", param="messages") from e
        count: Any = len(tokens)
    elif isinstance(req.prompt, str):
        tokens = engine.tokenizer.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        count = len(tokens)
    else:
        tokens = [engine.tokenizer.encode(p, add_special_tokens=req.add_special_tokens)
                  for p in req.prompt]
        count = [len(t) for t in tokens]
    return {"tokens": tokens, "count": count, "max_model_len": engine.context_length}


@router.post("/v1/detokenize")
async def detokenize(req: DetokenizeRequest, raw: Request) -> JSONResponse:
    engine = raw.app.state.engine
    batch = bool(req.tokens) and isinstance(req.tokens[0], list)
    seqs: list[list[int]] = req.tokens if batch else [req.tokens]  # type: ignore[assignment]
    for k, ids in enumerate(seqs):
        check_token_ids(ids, raw.app.state.vocab_size, f"tokens[{k}]" if batch else "tokens")
    texts = await asyncio.to_thread(
        lambda: [engine.tokenizer.decode(ids, skip_special_tokens=req.skip_special_tokens)
                 for ids in seqs])
    return JSONResponse({"text": texts if batch else texts[0]})
