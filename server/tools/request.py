"""A chat request's tools: the checks (a 400 naming the field), the messages the chat template
gets, and the grammar that keeps the calls valid."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import APIError
from ..protocol import NamedToolChoice, Tool
from .formats import Hermes, ToolFormat, format_for
from .grammar import tool_grammar
from .parser import ToolCallParser

# For chat templates that know no tools (SmolLM2's): the tools go into the system prompt and
# the model is asked for Hermes-style calls, which the grammar then keeps valid.
FALLBACK_PROMPT = (
    "You can call functions. The available functions, as JSON schemas, are within "
    "<tools></tools>:\n<tools>\n{tools}\n</tools>\n\nTo call a function, answer with a JSON "
    "object holding its name and arguments within <tool_call></tool_call> tags:\n"
    "<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n"
    "</tool_call>")


@dataclass
class ToolPlan:
    fmt: ToolFormat
    tools: list[dict[str, Any]]        # the OpenAI tool objects, as given
    functions: list[dict[str, Any]]    # their "function" parts
    choice: str                        # "auto" | "required" | a function's name
    parallel: bool

    @property
    def names(self) -> set[str]:
        return {f["name"] for f in self.functions}

    def parser(self) -> ToolCallParser:
        return ToolCallParser(self.fmt, self.names)

    def grammar(self, added: dict[str, int], answer: dict[str, Any] | None,
                reasoning: str | None) -> str:
        offered = self.functions if self.choice in ("auto", "required") else \
            [f for f in self.functions if f["name"] == self.choice]
        return tool_grammar(self.fmt, offered, self.choice != "auto", self.parallel, added,
                            answer, reasoning)


def plan_tools(tools: list[Tool] | None, tool_choice: str | NamedToolChoice | None,
               parallel: bool | None, parser: str | None, template: str | None
               ) -> ToolPlan | None:
    """The request's tool plan, or None when it calls no tools (none given, or "none").
    The shapes are checked by the protocol models; this checks what they cannot."""
    if tool_choice is not None and not tools:
        raise APIError("tool_choice needs tools", param="tool_choice")
    if not tools:
        return None
    dumped = [t.model_dump(exclude_none=True) for t in tools]
    functions = []
    for k, tool in enumerate(dumped):
        params = tool["function"].setdefault("parameters", {"type": "object", "properties": {}})
        if params.get("type", "object") != "object":
            raise APIError("function parameters must be a JSON schema of an object",
                           param=f"tools[{k}].function.parameters")
        functions.append(tool["function"])
    names = {f["name"] for f in functions}
    if len(names) < len(functions):
        raise APIError("tool function names must be unique", param="tools")
    choice = tool_choice if isinstance(tool_choice, str) else \
        "auto" if tool_choice is None else tool_choice.function.name
    if choice == "none":
        return None
    if choice not in ("auto", "required") and choice not in names:
        raise APIError(f"tool_choice names {choice!r}, which is not among the tools",
                       param="tool_choice")
    return ToolPlan(format_for(parser, template), dumped, functions, choice,
                    parallel is not False)


def template_messages(messages: list[Any], plan: ToolPlan | None, template: str | None
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages for the chat template, tools for it). Assistant tool calls carry their
    arguments as objects (templates `tojson` them); a null content is "". When the template
    knows no tools, the fallback prompt and plain-text turns stand in for them."""
    native = bool(template) and "tools" in template
    out = []
    for msg in messages:
        role = "system" if msg.role == "developer" else msg.role
        item: dict[str, Any] = {"role": role, "content": msg.text()}
        calls = [_history_call(c) for c in msg.tool_calls or []]
        if native:
            if calls:
                item["tool_calls"] = calls
            if msg.tool_call_id is not None:
                item["tool_call_id"] = msg.tool_call_id
            if msg.name is not None and role == "tool":
                item["name"] = msg.name
        elif calls:
            blocks = "\n".join("<tool_call>\n" + json.dumps(c["function"]) + "\n</tool_call>"
                               for c in calls)
            item["content"] = (item["content"] + "\n" if item["content"] else "") + blocks
        elif role == "tool":
            item = {"role": "user",
                    "content": f"<tool_response>\n{item['content']}\n</tool_response>"}
        out.append(item)
    if plan is None or native:
        return out, plan.tools if plan else None
    prompt = FALLBACK_PROMPT.format(tools="\n".join(json.dumps(t) for t in plan.tools))
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + prompt}
    else:
        out.insert(0, {"role": "system", "content": prompt})
    if not isinstance(plan.fmt, Hermes):
        raise APIError(f"the chat template has no tool support, and its fallback prompt asks "
                       f"for the qwen25 format, not {plan.fmt.name}; pass --chat-template",
                       param="tools")
    return out, None


def _history_call(call: dict[str, Any]) -> dict[str, Any]:
    """An earlier turn's tool call with its arguments as an object (sent as a JSON string)."""
    fn = call.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise APIError("an assistant's tool_calls are {\"id\", \"type\": \"function\", "
                       "\"function\": {\"name\", \"arguments\"}}", param="messages")
    fn = dict(fn)
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            fn["arguments"] = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            pass  # the template gets the string as it came
    return {**call, "type": call.get("type", "function"), "function": fn}
