"""The tool-call formats models write, by SGLang's `--tool-call-parser` names.

A format knows where a call region starts in the model's text (`find_start`) and how to read
one complete region into calls (`take`: once the region's end is in the text, or the text has
ended). A format whose calls name the function first may also stream a region (`live_header`,
`region_end`). Each answer depends only on the text so far, so streaming and non-streaming read
the same bytes the same way. Their grammars are in server/tools/grammar.py.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()


@dataclass
class Taken:
    """A call region read from the text's start: `consumed` characters, holding `calls` as
    (name, arguments) pairs, or None when the region is not a valid call (it stays text)."""

    calls: list[tuple[str, dict[str, Any]]] | None
    consumed: int


def _call_of(obj: Any, args_keys: tuple[str, ...] = ("arguments", "parameters")
             ) -> tuple[str, dict[str, Any]] | None:
    """{"name": ..., "arguments": {...}} (arguments may be a JSON string of an object)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args: Any = {}
    for key in args_keys:
        if key in obj:
            args = obj[key]
            break
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return (obj["name"], args) if isinstance(args, dict) else None


def _calls_of(value: Any) -> list[tuple[str, dict[str, Any]]] | None:
    """One call object or a JSON array of them (SmolLM2's Ollama prompt asks for an array)."""
    items = value if isinstance(value, list) else [value]
    calls = [_call_of(item) for item in items]
    return None if not calls or any(c is None for c in calls) else calls  # type: ignore


def _prefix_hold(text: str, markers: tuple[str, ...]) -> int:
    """Where a marker might begin at the text's end (len(text) when nowhere)."""
    for start in range(max(0, len(text) - max(map(len, markers)) + 1), len(text)):
        tail = text[start:]
        if any(m.startswith(tail) for m in markers):
            return start
    return len(text)


class ToolFormat(ABC):
    name = ""
    starts: tuple[str, ...] = ()
    template_markers: tuple[str, ...] = ()   # a chat template holding one of these uses it

    def find_start(self, text: str, at_beginning: bool) -> tuple[int | None, int]:
        """(index where a call region starts, or None; index from which the text must be held
        back because a start marker may be arriving)."""
        found = [i for i in (text.find(m) for m in self.starts) if i >= 0]
        if found:
            return min(found), min(found)
        return None, _prefix_hold(text, self.starts)

    @abstractmethod
    def take(self, text: str, final: bool) -> Taken | None:
        """Read the call region at the start of `text`; None while it is still incomplete."""

    def live_header(self, text: str) -> str | tuple[str, int]:
        """For a region whose arguments can stream: (the function's name, where its arguments
        object starts) once read; "wait" while the text may still become such a header; "no"
        when it will not (the region is then read whole)."""
        return "no"

    def region_end(self, text: str, at: int) -> int | None:
        """Just past the end of a streamed region whose arguments ended at `at`."""
        return at

    def call_id(self) -> str:
        return f"call_{secrets.token_hex(12)}"


def _until(text: str, start: str, end: str, final: bool) -> tuple[str, int] | None:
    """(the body between `start` and `end`, characters consumed); at the text's end an
    unclosed region is taken whole."""
    close = text.find(end, len(start))
    if close >= 0:
        return text[len(start):close], close + len(end)
    return (text[len(start):], len(text)) if final else None


_HEADER = ("{", '"name"', ":", '"', None, ",", '"arguments"', ":", "{")  # None: the name
# (the name's closing quote is read with it)


def json_call_header(text: str, at: int) -> str | tuple[str, int]:
    """Read `{"name": "<name>", "arguments": {` from `at` (any whitespace between tokens):
    (name, index of the arguments' "{"), "wait" if the text ends inside it, "no" if it differs."""
    name = ""
    for step in _HEADER:
        if step is None:  # inside the name's quotes
            end = text.find('"', at)
            if end < 0:
                return "wait"
            name = text[at:end]
            if "\\" in name or "\n" in name:
                return "no"
            at = end + 1
            continue
        while at < len(text) and text[at].isspace():
            at += 1
        got = text[at:at + len(step)]
        if not step.startswith(got):
            return "no"
        if len(got) < len(step):
            return "wait"
        at += len(step)
    return name, at - 1


class Hermes(ToolFormat):
    """Qwen2.5 / Hermes: <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>.
    A call naming its function first streams its arguments."""

    name = "qwen25"
    starts = ("<tool_call>",)
    end = "</tool_call>"
    template_markers = ("<tool_call>",)

    def live_header(self, text: str) -> str | tuple[str, int]:
        return json_call_header(text, len(self.starts[0]))

    def region_end(self, text: str, at: int) -> int | None:
        close = text.find(self.end, at)
        return None if close < 0 else close + len(self.end)

    def take(self, text: str, final: bool) -> Taken | None:
        got = _until(text, self.starts[0], self.end, final)
        if got is None:
            return None
        body, consumed = got
        try:
            return Taken(_calls_of(json.loads(body)), consumed)
        except json.JSONDecodeError:
            return Taken(None, consumed)


def _json_run(text: str, at: int, sep: str | None, final: bool
              ) -> tuple[list[Any], int] | None:
    """JSON values from `at`, separated by `sep` (one value when None): (values, end), or
    None while one is still being written. A value that never parses ends the run at the
    text's end."""
    values = []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        try:
            value, at = _DECODER.raw_decode(text, at)
        except json.JSONDecodeError:
            return ([], len(text)) if final else None
        values.append(value)
        if sep is None:
            return values, at
        rest = text[at:].lstrip()
        if rest.startswith(sep):
            at = len(text) - len(rest) + len(sep)
            continue
        if not rest and not final:
            return None  # another `sep` and value may follow
        return values, at


class Llama3(ToolFormat):
    """Llama 3.1-3.3 JSON calls: [<|python_tag|>]{"name": ..., "parameters": {...}}, several
    separated by ';'. A bare object is a call only at the start of the answer."""

    name = "llama3"
    starts = ("<|python_tag|>",)
    template_markers = ("<|python_tag|>", "ipython")

    def find_start(self, text: str, at_beginning: bool) -> tuple[int | None, int]:
        if at_beginning:
            stripped = text.lstrip()
            if stripped.startswith("{"):
                return len(text) - len(stripped), len(text) - len(stripped)
        return super().find_start(text, at_beginning)

    def take(self, text: str, final: bool) -> Taken | None:
        at = len(self.starts[0]) if text.startswith(self.starts[0]) else 0
        run = _json_run(text, at, ";", final)
        if run is None:
            return None
        values, end = run
        return Taken(_calls_of(values) if values else None, end)


class Mistral(ToolFormat):
    """[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...] (v0.3), or the newer
    [TOOL_CALLS]name[ARGS]{...} per call."""

    name = "mistral"
    starts = ("[TOOL_CALLS]",)
    template_markers = ("[TOOL_CALLS]", "[AVAILABLE_TOOLS]")

    def take(self, text: str, final: bool) -> Taken | None:
        at = len(self.starts[0])
        body = text[at:].lstrip()
        if not body:
            return Taken(None, len(text)) if final else None
        at = len(text) - len(body)
        if body.startswith("["):
            run = _json_run(text, at, None, final)  # one array
            if run is None:
                return None
            values, end = run
            return Taken(_calls_of(values[0]) if values else None, end)
        name, sep, _ = body.partition("[ARGS]")
        if not sep:
            return Taken(None, len(text)) if final else None
        run = _json_run(text, at + len(name) + len(sep), None, final)
        if run is None:
            return None
        values, end = run
        ok = values and isinstance(values[0], dict) and re.fullmatch(r"[\w.-]+", name.strip())
        return Taken([(name.strip(), values[0])] if ok else None, end)

    def call_id(self) -> str:  # Mistral's templates demand 9 alphanumeric characters
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))


_PY_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_PY_PARTIAL = re.compile(r"\[\s*([A-Za-z_][\w.]*\s*)?")
_PY_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False,
             "None": None}


def _literal(node: ast.AST) -> Any:
    """A Python literal, where JSON's true/false/null are allowed too."""
    if isinstance(node, ast.Name) and node.id in _PY_NAMES:
        return _PY_NAMES[node.id]
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, ast.Constant):
        return node.value
    raise ValueError("not a literal")


def _bracket_end(text: str) -> int | None:
    """Index just past the ']' closing the '[' at text[0], skipping strings; None if open."""
    depth, quote, escape = 0, "", False
    for i, ch in enumerate(text):
        if quote:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


class Pythonic(ToolFormat):
    """Llama 3.2 / 4 pythonic calls: [get_weather(city="Paris"), get_time()]."""

    name = "pythonic"
    starts = ("<|python_start|>",)
    end_tag = "<|python_end|>"

    def find_start(self, text: str, at_beginning: bool) -> tuple[int | None, int]:
        found, hold = super().find_start(text, at_beginning)
        match = _PY_START.search(text)
        if match and (found is None or match.start() < found):
            return match.start(), match.start()
        if found is not None:
            return found, found
        for i in range(len(text) - 1, -1, -1):  # a '[' whose call may still be arriving
            if text[i] == "[" and _PY_PARTIAL.fullmatch(text[i:]):
                return None, min(i, hold)
        return None, hold

    def take(self, text: str, final: bool) -> Taken | None:
        at = len(self.starts[0]) if text.startswith(self.starts[0]) else 0
        at += len(text[at:]) - len(text[at:].lstrip())
        end = _bracket_end(text[at:])
        if end is None:
            return Taken(None, len(text)) if final else None
        end += at
        consumed = end
        after = text[end:].lstrip()
        if not final and self.end_tag.startswith(after):
            return None  # the closing tag may be arriving
        if after.startswith(self.end_tag):
            consumed = len(text) - len(text[end:].lstrip()) + len(self.end_tag)
        try:
            tree = ast.parse(text[at:end].strip(), mode="eval").body
            if not isinstance(tree, ast.List) or not tree.elts:
                raise ValueError("not a list of calls")
            calls = []
            for call in tree.elts:
                if not isinstance(call, ast.Call) or call.args:
                    raise ValueError("calls take keyword arguments only")
                calls.append((ast.unparse(call.func),
                              {kw.arg: _literal(kw.value) for kw in call.keywords}))
            return Taken(calls, consumed)
        except (SyntaxError, ValueError, TypeError):
            return Taken(None, consumed)


class DeepSeekV3(ToolFormat):
    """DeepSeek-V3: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>name
    ```json {...} ```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>."""

    name = "deepseekv3"
    starts = ("<｜tool▁calls▁begin｜>",)
    end = "<｜tool▁calls▁end｜>"
    template_markers = ("<｜tool▁calls▁begin｜>",)
    _CALL = re.compile(r"<｜tool▁call▁begin｜>(?:function)?<｜tool▁sep｜>([^\n]+)\n```(?:json)?\n"
                       r"(.*?)\n```<｜tool▁call▁end｜>", re.S)

    def take(self, text: str, final: bool) -> Taken | None:
        got = _until(text, self.starts[0], self.end, final)
        if got is None:
            return None
        body, consumed = got
        calls = []
        for match in self._CALL.finditer(body):
            try:
                args = json.loads(match.group(2))
            except json.JSONDecodeError:
                return Taken(None, consumed)
            if not isinstance(args, dict):
                return Taken(None, consumed)
            calls.append((match.group(1).strip(), args))
        return Taken(calls or None, consumed)


FORMATS: dict[str, type[ToolFormat]] = {
    "qwen25": Hermes, "qwen": Hermes, "hermes": Hermes, "llama3": Llama3,
    "mistral": Mistral, "pythonic": Pythonic, "deepseekv3": DeepSeekV3,
}


def format_for(parser: str | None, template: str | None) -> ToolFormat:
    """The --tool-call-parser's format; by default the one the chat template writes, else
    Hermes (the fallback tool prompt asks for it)."""
    if parser:
        return FORMATS[parser]()
    for cls in (DeepSeekV3, Mistral, Hermes, Llama3):
        if template and any(m in template for m in cls.template_markers):
            return cls()
    return Hermes()
