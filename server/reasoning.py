"""Reasoning models' thinking, split from the answer: `--reasoning-parser deepseek-r1|qwen3`.

DeepSeek-R1 (and its distills) think first, always; their templates often open the <think>
block in the prompt, so the answer's text starts inside it and only "</think>" shows. Qwen3
thinks when its text starts with <think> (and not when `enable_thinking` is off, which closes
an empty block in the prompt). The split streams: the text that may be the start of a tag is
held back, so any cut of the text into deltas gives the same two parts.
"""

from __future__ import annotations

REASONING_PARSERS = ("deepseek-r1", "qwen3")
OPEN, CLOSE = "<think>", "</think>"


def prompt_opens_reasoning(prompt_text: str) -> bool:
    """The rendered prompt leaves a <think> block open (the answer starts inside it)."""
    at = prompt_text.rfind(OPEN)
    return at >= 0 and CLOSE not in prompt_text[at:]


def reasoning_start(parser: str, prompt_text: str) -> str:
    """How the answer starts: "open" (inside the reasoning), "optional" (<think> may come)."""
    if parser == "deepseek-r1" or prompt_opens_reasoning(prompt_text):
        return "open"
    return "optional"


class ReasoningSplitter:
    def __init__(self, start: str):
        self._open = start == "open"  # inside the reasoning from the start
        self._state = "start"         # start | inside | after-space | after
        self._buf = ""

    def feed(self, delta: str) -> tuple[str, str]:
        """(reasoning, content) of this delta."""
        self._buf += delta
        reasoning = content = ""
        if self._state == "start":
            stripped = self._buf.lstrip()
            if OPEN.startswith(stripped) and len(stripped) < len(OPEN):
                return "", ""  # "<thi" may be the tag
            if stripped.startswith(OPEN):  # (an opened block may be opened again in text)
                self._buf = stripped[len(OPEN):]
                self._state = "inside"
            else:
                self._state = "inside" if self._open else "after"
        if self._state == "inside":
            end = self._buf.find(CLOSE)
            if end >= 0:
                reasoning, self._buf = self._buf[:end], self._buf[end + len(CLOSE):]
                self._state = "after"
                self._buf = self._buf.lstrip()
                if not self._buf:
                    self._state = "after-space"
                    return reasoning, ""
            else:
                keep = _tag_prefix(self._buf)
                reasoning, self._buf = self._buf[:keep], self._buf[keep:]
                return reasoning, ""
        if self._state == "after-space":  # the layout after </think> is not the answer
            self._buf = self._buf.lstrip()
            if not self._buf:
                return reasoning, ""
            self._state = "after"
        content, self._buf = self._buf, ""
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What was held back: an unclosed reasoning block is all reasoning."""
        rest, self._buf = self._buf, ""
        if self._state == "inside" or self._state == "start" and self._open:
            return rest, ""
        return "", rest if self._state in ("start", "after") else ""


def _tag_prefix(text: str) -> int:
    """Where a "</think>" may begin at the end of `text` (len(text) when nowhere)."""
    for start in range(max(0, len(text) - len(CLOSE) + 1), len(text)):
        if CLOSE.startswith(text[start:]):
            return start
    return len(text)


def split_reasoning(text: str, start: str) -> tuple[str, str]:
    """(reasoning, content) of a whole answer."""
    splitter = ReasoningSplitter(start)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.finish()
    return r1 + r2, c1 + c2
