"""One choice's text as the parts of OpenAI's assistant message: reasoning_content (with
--reasoning-parser), content, and tool_calls (when the request offers tools), split as it
streams; the non-streamed message is the same split fed at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from .reasoning import ReasoningSplitter
from .tools.parser import ToolCall
from .tools.request import ToolPlan


@dataclass
class Parts:
    reasoning: str = ""
    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)

    def __iadd__(self, other: Parts) -> Parts:
        self.reasoning += other.reasoning
        self.content += other.content
        self.calls += other.calls
        return self

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.calls)


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
            return Parts(reasoning, content)
        parsed = self._tools.feed(content)
        if final:
            parsed += self._tools.finish()
        return Parts(reasoning, parsed.content, parsed.calls)
