"""Splitting a model's text into content and tool calls, as it streams.

The non-streamed answer is this parser fed the whole text at once, so streaming and not
streaming give the same calls and content for any way the text is cut into deltas (tested on
every split). Text that may still become a call start is held back. A call whose format
names the function first (Hermes: {"name": ..., "arguments": {...}}) streams: its start (id
and name) as soon as the name is read, then its arguments' text as it arrives. Other regions
are read once complete; one that does not read as a valid call, or that calls a function the
request did not offer, stays content. Whitespace next to calls is dropped (it is the model's
layout, not an answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .formats import ToolFormat


@dataclass
class ToolCall:
    index: int
    id: str
    name: str
    arguments: str  # a JSON object's text, as OpenAI sends it

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class CallStart:
    """A call begins: its id and name are known (its arguments follow as ArgsDelta)."""

    index: int
    id: str
    name: str


@dataclass
class ArgsDelta:
    index: int
    text: str


Item = str | CallStart | ArgsDelta


def assemble(items: list[Item]) -> list[ToolCall]:
    """The whole calls of a whole answer's items."""
    calls: dict[int, ToolCall] = {}
    for item in items:
        if isinstance(item, CallStart):
            calls[item.index] = ToolCall(item.index, item.id, item.name, "")
        elif isinstance(item, ArgsDelta):
            calls[item.index].arguments += item.text
    return [calls[i] for i in sorted(calls)]


@dataclass
class Parsed:
    """Content text and calls (their starts and argument pieces) in the model's order."""

    items: list[Item] = field(default_factory=list)

    @property
    def content(self) -> str:
        return "".join(i for i in self.items if isinstance(i, str))

    @property
    def calls(self) -> list[ToolCall]:
        """The whole calls (of a whole answer's items)."""
        return assemble(self.items)

    @property
    def starts_call(self) -> bool:
        return any(isinstance(i, CallStart) for i in self.items)

    def __iadd__(self, other: Parsed) -> Parsed:
        self.items += other.items
        return self


class _ObjectEnd:
    """Finds where a JSON object that starts at `start` ends, over text that only grows."""

    def __init__(self, start: int):
        self.pos, self.depth, self.quoted, self.escaped = start, 0, False, False
        self.end: int | None = None

    def scan(self, text: str) -> int | None:
        """The index just past the object's closing brace, or None while it is open."""
        while self.end is None and self.pos < len(text):
            ch = text[self.pos]
            self.pos += 1
            if self.quoted:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.quoted = False
            elif ch == '"':
                self.quoted = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.end = self.pos
        return self.end


@dataclass
class _Live:
    """A call whose arguments stream as the model writes them (positions in the buffer)."""

    index: int
    sent: int
    end: _ObjectEnd


class ToolCallParser:
    def __init__(self, fmt: ToolFormat, names: set[str]):
        self.fmt = fmt
        self.names = names
        self._buf = ""          # text not yet handed out
        self._in_call = False   # _buf starts with a call region
        self._held_space = ""   # whitespace that is content only if more content follows
        self._spoke = False     # content other than whitespace was handed out
        self._live: _Live | None = None
        self.num_calls = 0

    def feed(self, delta: str) -> Parsed:
        self._buf += delta
        return self._advance(final=False)

    def finish(self) -> Parsed:
        out = self._advance(final=True)
        if self._buf:  # text, or an unfinished region that did not read as a call
            out += self._content(self._buf)
        if not self.num_calls and self._held_space:
            out.items.append(self._held_space)
        self._buf = self._held_space = ""
        self._in_call = False
        return out

    def parse(self, text: str) -> Parsed:
        """The whole answer at once (the non-streamed response)."""
        out = self.feed(text)
        out += self.finish()
        return out

    def _advance(self, final: bool) -> Parsed:
        out = Parsed()
        while self._buf:
            if not self._in_call:
                start, hold = self.fmt.find_start(self._buf, not self._spoke and
                                                  not self.num_calls)
                if start is None:
                    cut = len(self._buf) if final else hold
                    out += self._content(self._buf[:cut])
                    self._buf = self._buf[cut:]
                    break
                out += self._content(self._buf[:start])
                self._held_space = ""
                self._buf = self._buf[start:]
                self._in_call = True
            if self._live is None:
                head = self.fmt.live_header(self._buf)
                if head == "wait" and not final:
                    break
                if isinstance(head, tuple) and head[0] in self.names:
                    out.items.append(CallStart(self.num_calls, self.fmt.call_id(), head[0]))
                    self._live = _Live(self.num_calls, head[1], _ObjectEnd(head[1]))
                    self.num_calls += 1
            if self._live is not None:
                if not self._stream_arguments(out, final):
                    break
                continue
            taken = self.fmt.take(self._buf, final)
            if taken is None:
                break
            region, self._buf = self._buf[:taken.consumed], self._buf[taken.consumed:]
            self._in_call = False
            calls = taken.calls
            if calls is None or any(name not in self.names for name, _ in calls):
                out += self._content(region)
                continue
            for name, args in calls:
                out.items += [CallStart(self.num_calls, self.fmt.call_id(), name),
                              ArgsDelta(self.num_calls, json.dumps(args, ensure_ascii=False))]
                self.num_calls += 1
        return out

    def _stream_arguments(self, out: Parsed, final: bool) -> bool:
        """Hand out the live call's new argument text; True once its region is consumed."""
        live = self._live
        end = live.end.scan(self._buf)
        upto = len(self._buf) if end is None else end
        if upto > live.sent:
            out.items.append(ArgsDelta(live.index, self._buf[live.sent:upto]))
            live.sent = upto
        close = None if end is None else self.fmt.region_end(self._buf, end)
        if close is None and not final:
            return False
        self._buf = "" if close is None else self._buf[close:]  # at the end: cut off
        self._in_call = False
        self._live = None
        return True

    def _content(self, text: str) -> Parsed:
        """Content, with trailing whitespace held until we know no call follows it."""
        if not text:
            return Parsed()
        text = self._held_space + text
        body = text.rstrip()
        self._held_space = text[len(body):]
        if not body:
            return Parsed()
        if not self._spoke and self.num_calls:
            body = body.lstrip()  # the layout between calls and the text after them
        self._spoke = True
        return Parsed([body])
