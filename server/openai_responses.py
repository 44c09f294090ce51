"""POST /v1/responses and GET /v1/responses/{id}: OpenAI's Responses API (the OpenAI Agents
SDK's default), served by the chat path (server/responses_input.py translates the request).

Output items are reasoning (with --reasoning-parser), message (output_text) and function_call;
a stream sends OpenAI's event sequence (response.created, output items added, their deltas
and done events, response.completed) with ids that match the final response. Responses are
kept in memory (the last STORED_RESPONSES with `store`) for previous_response_id and GET.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .answer import AnswerSplitter, Parts
from .errors import APIError
from .generation import SSEResponse, StreamSet, finish_reason, generate_all, make_jobs
from .inputs import chat_prompt, fit_prompt, reject_unsupported, sampling_params
from .responses_input import ResponsesRequest, chat_request, input_items
from .tools.parser import CallStart

logger = logging.getLogger(__name__)
router = APIRouter()
STORED_RESPONSES = 1024


class ResponseStore:
    """The last responses asked to be stored: id -> (the response, its conversation items)."""

    def __init__(self, size: int = STORED_RESPONSES):
        self._items: OrderedDict[str, tuple[dict, list[dict]]] = OrderedDict()
        self._size = size

    def put(self, response: dict, items: list[dict]) -> None:
        self._items[response["id"]] = (response, items)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def get(self, rid: str, param: str) -> tuple[dict, list[dict]]:
        if rid not in self._items:
            raise APIError(f"No stored response with id {rid!r} (responses are kept in memory, "
                           f"the last {self._size} with store: true)", status=404, param=param)
        self._items.move_to_end(rid)
        return self._items[rid]


def _store(raw: Request) -> ResponseStore:
    return raw.app.state.responses


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@router.get("/v1/responses/{response_id}", response_model=None)
async def get_response(response_id: str, raw: Request) -> Response:
    return JSONResponse(_store(raw).get(response_id, "response_id")[0])


@router.post("/v1/responses", response_model=None)
async def create_response(req: ResponsesRequest, raw: Request) -> Response:
    engine = raw.app.state.engine
    history = []
    if req.previous_response_id:
        history = _store(raw).get(req.previous_response_id, "previous_response_id")[1]
    chat = chat_request(req, history)
    reject_unsupported(chat, raw.app.state.vocab_size)
    prompt = await asyncio.to_thread(chat_prompt, engine, chat, raw.app.state.added_tokens)
    ids, budget = fit_prompt(prompt.ids, chat.max_tokens, engine.context_length,
                             raw.app.state.auto_truncate or req.truncation == "auto",
                             param="input")
    params = sampling_params(chat, budget, raw.app.state.vocab_size, prompt.grammar)
    rid = _new_id("resp")
    jobs = make_jobs(rid, [ids], [params], 1)
    shell = _response(rid, req, engine.served_model_name if req.model is None else req.model)
    splitter = AnswerSplitter(prompt.reasoning_start, prompt.plan)
    conversation = [*history, *input_items(req)]

    def finished(response: dict) -> dict:
        if req.store:
            _store(raw).put(response, [*conversation, *response["output"]])
        return response

    if req.stream:
        streams = StreamSet(engine, jobs)
        await streams.start(raw)
        return SSEResponse(_events(streams, shell, splitter, finished), streams.close)

    out = (await generate_all(engine, jobs, raw))[0]
    meta = out["meta_info"]
    reason, _ = finish_reason(meta)
    builder = _Output()
    builder.add(splitter.whole(out["text"]))
    return JSONResponse(finished(_done(shell, builder.items(), reason, meta)))


def _response(rid: str, req: ResponsesRequest, model: str) -> dict[str, Any]:
    """The response object before it has output."""
    return {"id": rid, "object": "response", "created_at": int(time.time()),
            "status": "in_progress", "model": model, "output": [], "error": None,
            "incomplete_details": None, "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens, "metadata": req.metadata or {},
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "temperature": req.temperature, "top_p": req.top_p,
            "tool_choice": req.tool_choice or "auto", "tools": req.tools or [],
            "text": req.text or {"format": {"type": "text"}}, "truncation": req.truncation,
            "store": req.store, "usage": None}


def _done(shell: dict, items: list[dict], reason: str | None, meta: dict) -> dict:
    cut = reason == "length"
    for item in items:
        if item["type"] == "message" and cut:
            item["status"] = "incomplete"
    usage = {"input_tokens": meta["prompt_tokens"],
             "input_tokens_details": {"cached_tokens": meta.get("cached_tokens", 0)},
             "output_tokens": meta["completion_tokens"],
             "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": meta["prompt_tokens"] + meta["completion_tokens"]}
    return {**shell, "status": "incomplete" if cut else "completed", "output": items,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "usage": usage}


def _message(text: str = "") -> dict[str, Any]:
    return {"type": "message", "id": _new_id("msg"), "status": "completed", "role": "assistant",
            "content": [_text_part(text)]}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class _Output:
    """Output items as the parts arrive; an event for each step when streaming."""

    def __init__(self) -> None:
        self._items: list[dict] = []
        self._open: dict | None = None  # the item text or arguments are going into
        self.events: list[tuple[str, dict]] = []

    def items(self) -> list[dict]:
        self._close()
        if not self._items:  # an empty answer is still one (empty) message
            self._open_text("message")
            self._close()
        return self._items

    def add(self, parts: Parts) -> None:
        if parts.reasoning:
            self._text("reasoning", parts.reasoning)
        for part in parts.items:
            if isinstance(part, str):
                self._text("message", part)
            elif isinstance(part, CallStart):
                self._close()
                item = {"type": "function_call", "id": _new_id("fc"), "call_id": part.id,
                        "name": part.name, "arguments": "", "status": "in_progress"}
                self._start(item)
                self._open = item
            else:
                item = self._open
                item["arguments"] += part.text
                self._event("response.function_call_arguments.delta", item_id=item["id"],
                            output_index=len(self._items) - 1, delta=part.text)

    def _text(self, kind: str, text: str) -> None:
        if self._open is None or self._open["type"] != kind:
            self._open_text(kind)
        item, index = self._open, len(self._items) - 1
        item["content"][0]["text"] += text
        name = "output_text" if kind == "message" else "reasoning_text"
        self._event(f"response.{name}.delta", item_id=item["id"], output_index=index,
                    content_index=0, delta=text,
                    **({"logprobs": []} if kind == "message" else {}))

    def _open_text(self, kind: str) -> None:
        self._close()
        if kind == "message":
            item = {**_message(), "status": "in_progress", "content": []}
            self._start(item)
            item["content"].append(_text_part(""))
            self._event("response.content_part.added", item_id=item["id"],
                        output_index=len(self._items) - 1, content_index=0,
                        part=_text_part(""))
        else:
            item = {"type": "reasoning", "id": _new_id("rs"), "summary": [],
                    "content": [{"type": "reasoning_text", "text": ""}], "status": "in_progress"}
            self._start(item)
        self._open = item

    def _start(self, item: dict) -> None:
        self._items.append(item)
        self._event("response.output_item.added", output_index=len(self._items) - 1,
                    item=json.loads(json.dumps(item)))

    def _close(self) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        index = len(self._items) - 1
        if item["type"] == "function_call":
            self._event("response.function_call_arguments.done", item_id=item["id"],
                        output_index=index, name=item["name"], arguments=item["arguments"])
            item["status"] = "completed"
            self._event("response.output_item.done", output_index=index, item=dict(item))
            return
        text = item["content"][0]["text"]
        if item["type"] == "message":
            self._event("response.output_text.done", item_id=item["id"], output_index=index,
                        content_index=0, text=text, logprobs=[])
            self._event("response.content_part.done", item_id=item["id"], output_index=index,
                        content_index=0, part=_text_part(text))
        else:
            self._event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                        content_index=0, text=text)
        item["status"] = "completed"
        self._event("response.output_item.done", output_index=index,
                    item=json.loads(json.dumps(item)))

    def _event(self, kind: str, **body: Any) -> None:
        self.events.append((kind, body))


def _sse(kind: str, body: dict, seq: int) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq, **body})}\n\n"


async def _events(streams: StreamSet, shell: dict, splitter: AnswerSplitter, finished
                  ) -> AsyncIterator[str]:
    seq = 0
    out = _Output()

    def flush() -> list[str]:
        nonlocal seq
        lines = []
        for kind, body in out.events:
            lines.append(_sse(kind, body, seq))
            seq += 1
        out.events.clear()
        return lines

    out.events += [("response.created", {"response": shell}),
                   ("response.in_progress", {"response": shell})]
    try:
        async for _, chunk in streams.chunks():
            meta = chunk["meta_info"]
            reason, _ = finish_reason(meta)
            out.add(splitter.feed(chunk["text"]))
            if reason is not None:
                out.add(splitter.finish())
                response = _done(shell, out.items(), reason, meta)
                out.events.append(("response.completed", {"response": finished(response)}))
            for line in flush():
                yield line
    except APIError as e:
        for line in flush():
            yield line
        yield _sse("error", {"code": str(e.status), "message": e.message, "param": e.param}, seq)
    except Exception as e:
        logger.exception("responses stream %s failed", shell["id"])
        yield _sse("error", {"code": "500", "message": f"Internal server error: "
                             f"{type(e).__name__}: {e}", "param": None}, seq)
