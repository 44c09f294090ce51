"""Grammars (llguidance Lark) that make every tool call the model writes well formed, naming an
offered function with arguments valid against its schema.

- `required` / a named function: the answer is calls only.
- `auto`: free text, and the grammar engages at the format's trigger (a lazy lexeme ends the
  text at the trigger), so prose stays free while every call is constrained.
- With a reasoning parser, a reasoning part comes first and is free.
"""

from __future__ import annotations

import json
from typing import Any

from jaxengine import close_objects

from .formats import DeepSeekV3, Hermes, Llama3, Mistral, Pythonic, ToolFormat

TEXT = "TEXT: /(.|\\n)*/"


def _params(tool: dict[str, Any]) -> dict[str, Any]:
    return close_objects(tool.get("parameters") or {"type": "object", "properties": {}})


def _split_defs(schema: dict[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the schema without its $defs / definitions, those definitions renamed with `prefix`),
    its "#/$defs/X" references rewritten to the new names. Pydantic-made tool schemas (LangChain,
    the Agents SDK) keep nested models there, and a schema embedded in a call object no longer
    sits at the root its references point to."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    if not defs:
        return schema, {}

    def rename(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rename(v) for k, v in node.items()}
            ref = out.get("$ref")
            if isinstance(ref, str):
                for root in ("#/$defs/", "#/definitions/"):
                    if ref.startswith(root):
                        out["$ref"] = "#/$defs/" + prefix + ref[len(root):]
            return out
        if isinstance(node, list):
            return [rename(v) for v in node]
        return node

    body = rename({k: v for k, v in schema.items() if k not in ("$defs", "definitions")})
    return body, {prefix + name: rename(d) for name, d in defs.items()}


def _call_schema(tools: list[dict[str, Any]], args_key: str) -> dict[str, Any]:
    """One JSON call object: {"name": <an offered name>, args_key: <its arguments>}."""
    options, defs = [], {}
    for k, tool in enumerate(tools):
        params, own = _split_defs(_params(tool), f"t{k}_")
        defs.update(own)
        options.append({"type": "object", "properties": {"name": {"const": tool["name"]},
                                                         args_key: params},
                        "required": ["name", args_key], "additionalProperties": False})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "$defs": defs} if defs else schema


def _json(schema: dict[str, Any]) -> str:
    # No free whitespace, as for response_format: a small model cannot wander into blank
    # lines, and more of the call is forced.
    return "%json " + json.dumps({**schema, "x-guidance": {"whitespace_flexible": False}})


class Literals:
    """Lark for a literal string: a tokenizer's added token by id (llguidance matches added
    tokens, Qwen's <tool_call> included, only by id), else text."""

    def __init__(self, added: dict[str, int]):
        self.added = added

    def __call__(self, text: str) -> str:
        return f"<[{self.added[text]}]>" if text in self.added else json.dumps(text)

    def is_token(self, text: str) -> bool:
        return text in self.added


def _pythonic_call(tool: dict[str, Any], k: int) -> tuple[str, list[str]]:
    """f(a=1, b="x"): keyword arguments in the schema's order, every required one present;
    rule py{k}_{i}{e}: the arguments from the i-th on, e: whether one came before."""
    params, defs = _split_defs(_params(tool), "")
    props = list(params.get("properties", {}).items())
    required = set(params.get("required", []))
    rules = []
    for i in range(len(props), -1, -1):
        for emitted in (0, 1):
            if i == len(props):
                rules.append(f'py{k}_{i}{emitted}: ""')
                continue
            key, schema = props[i]
            sep = '", " ' if emitted else ""
            value = {**schema, "$defs": defs} if defs else schema
            take = f"{sep}{json.dumps(key + '=')} {_json(value)} py{k}_{i + 1}1"
            alt = take if key in required else f"{take} | py{k}_{i + 1}{emitted}"
            rules.append(f"py{k}_{i}{emitted}: {alt}")
    return f'"{tool["name"]}(" py{k}_00 ")"', rules


def _regions(fmt: ToolFormat, tools: list[dict[str, Any]], parallel: bool,
             lit: Literals) -> tuple[str, str, list[str]]:
    """(the trigger's Lark, the rest of one call region's Lark, extra rules)."""
    if isinstance(fmt, Hermes):
        call = _json(_call_schema(tools, "arguments"))
        return lit("<tool_call>"), f'"\\n" {call} "\\n" {lit("</tool_call>")}', []
    if isinstance(fmt, Mistral):
        array = {"type": "array", "items": _call_schema(tools, "arguments"), "minItems": 1}
        if not parallel:
            array["maxItems"] = 1
        return lit("[TOOL_CALLS]"), _json(array), []
    if isinstance(fmt, DeepSeekV3):
        calls = " | ".join(
            f'{lit("<｜tool▁call▁begin｜>")} "function" {lit("<｜tool▁sep｜>")} '
            f'"{t["name"]}\\n```json\\n" {_json(_params(t))} "\\n```" '
            f'{lit("<｜tool▁call▁end｜>")}' for t in tools)
        more = "*" if parallel else ""
        return (lit("<｜tool▁calls▁begin｜>"), f'ds_call ("\\n" ds_call){more} '
                f'{lit("<｜tool▁calls▁end｜>")}', [f"ds_call: {calls}"])
    if isinstance(fmt, Llama3):
        call = _json(_call_schema(tools, "parameters"))
        more = f' ("; " {call})*' if parallel else ""
        return "", "", [f"llama_calls: {call}{more}"]
    if isinstance(fmt, Pythonic):
        made = [_pythonic_call(t, k) for k, t in enumerate(tools)]
        more = '(", " py_call)*' if parallel else ""
        rules = [rule for _, arg_rules in made for rule in arg_rules]
        return "", "", [*rules, "py_call: " + " | ".join(call for call, _ in made),
                        f'py_calls: "[" py_call {more} "]"']
    raise ValueError(f"no grammar for the {fmt.name} tool-call format")


def tool_grammar(fmt: ToolFormat, tools: list[dict[str, Any]], required: bool,
                 parallel: bool, added: dict[str, int], answer: dict[str, Any] | None = None,
                 reasoning: str | None = None) -> str:
    """The Lark grammar of a whole answer. `tools` are the offered functions ({"name",
    "parameters"}); `added`: the tokenizer's added tokens (text -> id); `answer`: a JSON
    schema a non-call answer must follow (response_format);
    `reasoning`: "open" (the prompt opened a reasoning block) or "optional" (the model may
    start with <think>), for a free reasoning part first."""
    lit = Literals(added)
    trigger, body, rules = _regions(fmt, tools, parallel, lit)
    if isinstance(fmt, (Llama3, Pythonic)):  # the answer starts with the calls, or is text
        calls = "llama_calls" if isinstance(fmt, Llama3) else "py_calls"
        free = "/([^\\[{\\s](.|\\n)*)?/" if answer is None else _json(close_objects(answer))
        main = calls if required else f"{calls} | free"
        rules.append(f"free: {free}")
    else:
        seq = 'region ("\\n" region)*' if parallel else "region"
        if required or answer is not None:
            rules.append(f"region: {trigger} {body}")
        if required:
            main = seq
        elif answer is not None:
            main = f"({seq}) | {_json(close_objects(answer))}"
        else:
            # Free text up to the trigger (a lazy lexeme: the text ends at the trigger's first
            # occurrence; an added token cannot occur in text), one constrained call;
            # repeated; then free text to the end.
            lazy = "" if trigger.startswith("<[") else "[lazy]"  # tokens: never in TEXT
            rules.append(f"trig{lazy}: TEXT {trigger}")
            rules.append(f"called: trig {body}")
            main = "called* TEXT" if parallel else "called? TEXT"
    return _lark(main, rules, reasoning, lit)


def after_reasoning(schema: dict[str, Any], reasoning: str, added: dict[str, int]) -> str:
    """A JSON answer (response_format) after a free reasoning part."""
    return _lark(_json(close_objects(schema)), [], reasoning, Literals(added))


def _lark(main: str, rules: list[str], reasoning: str | None, lit: Literals) -> str:
    if reasoning == "open":
        main = f"think_rest ({main})"
    elif reasoning == "optional":
        main = f"({lit('<think>')} think_rest)? ({main})"
    if reasoning:
        lazy = "" if lit.is_token("</think>") else "[lazy]"
        rules = [*rules, f"think_rest{lazy}: TEXT {lit('</think>')}"]
    if any("TEXT" in r for r in [main, *rules]):  # free text, where a rule has it
        rules = [*rules, TEXT]
    return "%llguidance {}\nstart: " + main + "\n" + "\n".join(rules) + "\n"
