"""One choice's text as the parts of OpenAI's assistant message: reasoning_content (with
--reasoning-parser), content, and tool_calls (when the request offers tools), split as it
streams; the non-streamed message is the same split fed at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from .reasoning import ReasoningSplitter
from .tools.parser import CallStart, Item, ToolCall, assemble
from .tools.request import ToolPlan


@dataclass
class Parts:
    """The reasoning (it comes first), then content text and calls (their starts and argument
    pieces) in the model's order."""

    reasoning: str = ""
    items: list[Item] = field(default_factory=list)

    @property
    def content(self) -> str:
        return "".join(i for i in self.items if isinstance(i, str))

    @property
    def calls(self) -> list[ToolCall]:
        """The whole calls (of a whole answer's parts)."""
        return assemble(self.items)

    @property
    def starts_call(self) -> bool:
        return any(isinstance(i, CallStart) for i in self.items)

    def __iadd__(self, other: Parts) -> Parts:
        self.reasoning += other.reasoning
        self.items += other.items
        return self


class AnswerSplitter:
    def __init__(self, reasoning_start: str | None, plan: ToolPlan | None):
        self._reasoning = ReasoningSplitter(reasoning_start) if reasoning_start else None
        self._tools = plan.parser() if plan else None

    def feed(self, text: str) -> Parts:
        reasoning, content = self._reasoning.feed(text) if self._reasoning else ("", text)
        return self._content(reasoning, content, final=False)

    def finish(self) -> Parts:
        reasoning, content = self._reasoning.finish() if self._reasoning else ("", "")
        return self._content(reasoning, content, final=True)

    def whole(self, text: str) -> Parts:
        parts = self.feed(text)
        parts += self.finish()
        return parts

    def _content(self, reasoning: str, content: str, final: bool) -> Parts:
        if self._tools is None:
            return Parts(reasoning, [content] if content else [])
        parsed = self._tools.feed(content)
        if final:
            parsed += self._tools.finish()
        return Parts(reasoning, parsed.items)
