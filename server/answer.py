"""One choice's text as the parts of OpenAI's assistant message: reasoning_content (with
--reasoning-parser), content, and tool_calls (when the request offers tools), split as it
streams; the non-streamed message is the same split fed at once."""

from __future__ import annotations

from dataclasses import dataclass

from .reasoning import ReasoningSplitter
from .tools.parser import Parsed
from .tools.request import ToolPlan


@dataclass
class Parts(Parsed):
    """The reasoning (it comes first), then content text and calls (their starts and argument
    pieces) in the model's order."""

    reasoning: str = ""

    def __iadd__(self, other: Parts) -> Parts:
        super().__iadd__(other)
        self.reasoning += other.reasoning
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
            return Parts([content] if content else [], reasoning)
        parsed = self._tools.feed(content)
        if final:
            parsed += self._tools.finish()
        return Parts(parsed.items, reasoning)
