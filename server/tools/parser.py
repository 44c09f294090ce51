"""Splitting a model's text into content and tool calls, as it streams.

The non-streamed answer is this parser fed the whole text at once, so streaming and not
streaming give the same calls and content for any way the text is cut into deltas (tested on
every split). Text that may still become a call start is held back; a region that does not
read as a valid call, or that calls a function the request did not offer, stays content.
Whitespace next to calls is dropped (it is the model's layout, not an answer).
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
class Parsed:
    """Content text and calls in the order the model wrote them."""

    items: list[str | ToolCall] = field(default_factory=list)

    @property
    def content(self) -> str:
        return "".join(i for i in self.items if isinstance(i, str))

    @property
    def calls(self) -> list[ToolCall]:
        return [i for i in self.items if isinstance(i, ToolCall)]

    def __iadd__(self, other: Parsed) -> Parsed:
        self.items += other.items
        return self


class ToolCallParser:
    def __init__(self, fmt: ToolFormat, names: set[str]):
        self.fmt = fmt
        self.names = names
        self._buf = ""          # text not yet handed out
        self._in_call = False   # _buf starts with a call region
        self._held_space = ""   # whitespace that is content only if more content follows
        self._spoke = False     # content other than whitespace was handed out
        self.num_calls = 0

    def feed(self, delta: str) -> Parsed:
        self._buf += delta
        return self._advance(final=False)

    def finish(self) -> Parsed:
        out = self._advance(final=True)
        if self._in_call:  # an unfinished region that did not read as a call
            out += self._content(self._buf)
        elif self._buf:
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
                out.items.append(ToolCall(self.num_calls, self.fmt.call_id(), name,
                                          json.dumps(args, ensure_ascii=False)))
                self.num_calls += 1
        return out

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
