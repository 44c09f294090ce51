"""Incremental detokenization with stop-string trimming, one instance per request."""

from __future__ import annotations


class IncrementalDetokenizer:
    """push(ids) -> the new text that is safe to show; finish() -> the rest.

    Decodes a sliding window of ids so each push costs O(new tokens), holds back text while a
    multi-byte character is incomplete, and, for streaming, while the text ends with what could
    be the start of a stop string.
    """

    def __init__(self, tokenizer, *, skip_special_tokens: bool = True,
                 spaces_between_special_tokens: bool = True, stop_strs: list[str] = ()):
        self.tokenizer = tokenizer
        self.kw = dict(skip_special_tokens=skip_special_tokens,
                       spaces_between_special_tokens=spaces_between_special_tokens)
        self.stop_strs = list(stop_strs)
        self.ids: list[int] = []
        self.text = ""          # all decoded text so far
        self.emitted = 0        # characters of self.text already returned
        self._prefix = 0        # window start in ids
        self._read = 0          # ids already turned into self.text
        self.final = ""         # the answer, once finish() has cut it at its stop

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, **self.kw)

    def _advance(self) -> None:
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        text = self._decode(self.ids[self._prefix:])
        if len(text) > len(prefix_text) and not text.endswith("\ufffd"):
            self.text += text[len(prefix_text):]
            self._prefix, self._read = self._read, len(self.ids)

    def push(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        self._advance()
        safe = len(self.text) - self._stop_prefix_len()
        delta = self.text[self.emitted:safe] if safe > self.emitted else ""
        self.emitted += len(delta)
        return delta

    def _stop_prefix_len(self) -> int:
        held = 0
        for stop in self.stop_strs:
            for k in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:k]):
                    held = max(held, k)
                    break
        return held

    def finish(self, ids: list[int], matched_stop: str | None = None) -> str:
        """Take the last ids; return the remaining text, cut at matched_stop if one is given."""
        self.ids.extend(ids)
        if self._read < len(self.ids):
            self.text = self._decode(self.ids)  # flush a trailing incomplete character
        final = self.text
        if matched_stop is not None:
            cut = final.find(matched_stop)
            if cut >= 0:
                final = final[:cut]
        # The whole answer. Shorter than what was emitted only after a stop_regex match,
        # whose start no holdback can see coming: a stream has already shown it.
        self.final = final
        delta = final[self.emitted:] if len(final) > self.emitted else ""
        self.emitted += len(delta)
        return delta
