"""The Responses API's request (/v1/responses), and its translation into a chat request: the
Responses API is chat completions with another shape (input items for messages, flat function
tools, max_output_tokens, text.format for response_format), so the chat path serves it."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, ValidationError

from .errors import APIError
from .protocol import INT64, ChatCompletionRequest, _Request


class ResponsesRequest(_Request):
    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    text: dict[str, Any] | None = None        # {"format": {"type": "text" | "json_schema" ...}}
    reasoning: dict[str, Any] | None = None   # {"effort": ...}: the model decides here
    metadata: dict[str, str] | None = None
    truncation: Literal["disabled", "auto"] = "disabled"
    user: str | None = None


def input_items(req: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as a list of items ("hi" is one user message)."""
    if isinstance(req.input, str):
        return [{"type": "message", "role": "user", "content": req.input}]
    return list(req.input)


def chat_request(req: ResponsesRequest, history: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat request that answers `req`, after `history` (the stored items of the
    previous response, input and output)."""
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    for k, item in enumerate([*history, *input_items(req)]):
        _add_item(messages, item, f"input[{k - len(history)}]" if k >= len(history) else
                  "previous_response_id")
    body: dict[str, Any] = {"model": req.model, "messages": messages, "stream": req.stream,
                            "max_tokens": req.max_output_tokens, "temperature": req.temperature,
                            "top_p": req.top_p, "seed": req.seed, "user": req.user,
                            "parallel_tool_calls": req.parallel_tool_calls}
    if req.tools:
        body["tools"] = [_tool(t, k) for k, t in enumerate(req.tools)]
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice)
    fmt = (req.text or {}).get("format")
    if fmt:
        body["response_format"] = _response_format(fmt)
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    try:
        return ChatCompletionRequest.model_validate(
            {k: v for k, v in body.items() if v is not None})
    except ValidationError as e:  # named as the Responses request names it
        first = e.errors()[0]
        where = [str(p) for p in first["loc"] if p != "function"]
        param = {"messages": "input", "max_tokens": "max_output_tokens",
                 "response_format": "text"}.get(where[0], where[0]) if where else None
        if param == "tools" and len(where) > 1:
            param = f"tools[{where[1]}]" + "".join(f".{p}" for p in where[2:])
        raise APIError(f"{param}: {first['msg']}", param=param) from e


def _text(content: Any, param: str) -> str:
    """A message's content: a string, or input_text / output_text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError("content must be a string or a list of text parts", param=param)
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in (
                "input_text", "output_text", "text") or not isinstance(part.get("text"), str):
            raise APIError("only text content parts (input_text, output_text) are supported",
                           param=param)
        texts.append(part["text"])
    return "\n".join(texts)


def _add_item(messages: list[dict[str, Any]], item: Any, param: str) -> None:
    if not isinstance(item, dict):
        raise APIError("each input item must be an object", param=param)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise APIError("a message's role must be user, assistant, system or developer",
                           param=param)
        messages.append({"role": role, "content": _text(item.get("content"), param)})
    elif kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
        if not isinstance(call["id"], str) or not isinstance(call["function"]["name"], str):
            raise APIError("a function_call item needs call_id and name", param=param)
        last = messages[-1] if messages else None
        if last and last["role"] == "assistant" and last.get("tool_calls") is not None:
            last["tool_calls"].append(call)  # parallel calls: one assistant turn
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        if not isinstance(item.get("call_id"), str):
            raise APIError("a function_call_output item needs call_id", param=param)
        messages.append({"role": "tool", "tool_call_id": item["call_id"],
                         "content": output if isinstance(output, str) else json.dumps(output)})
    elif kind == "reasoning":
        pass  # earlier turns' reasoning is not sent back to the model, as chat templates drop it
    else:
        raise APIError(f"input items of type {kind!r} are not supported", param=param)


def _tool(tool: Any, k: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise APIError("only function tools are supported", param=f"tools[{k}]")
    fn = {key: tool[key] for key in ("name", "description", "parameters", "strict")
          if tool.get(key) is not None}
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(fmt: Any) -> dict[str, Any]:
    if not isinstance(fmt, dict):
        raise APIError("text.format must be an object", param="text")
    if fmt.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {
            "name": fmt.get("name", "output"), "schema": fmt.get("schema", {}),
            "strict": fmt.get("strict")}}
    return {"type": fmt.get("type")}
