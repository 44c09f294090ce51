"""GrammarMatcher: one request's position in its grammar."""

from __future__ import annotations

import numpy as np


class GrammarMatcher:
    """Wraps an llguidance LLMatcher. It has consumed every real output token of its request
    (the scheduler feeds it each sampled token, jump-forward the forced ones)."""

    def __init__(self, matcher):
        self._m = matcher
        # Set when the backend failed to compute a mask (it hit one of its limits): the
        # request cannot go on under its grammar, which is not the same as a dead end.
        self.failure: str | None = None

    def accept(self, token: int) -> bool:
        """Consume a sampled token; False when the grammar rejects it (a dead end)."""
        return self._m.consume_token(token)

    @property
    def error(self) -> str | None:
        """Why the matcher stopped working (the backend hit one of its limits, or a token
        outside the grammar was fed), or None."""
        if not self._m.is_error():
            return None
        return self._m.get_error().split("\n", 1)[0] or "grammar error"

    @property
    def done(self) -> bool:
        """Nothing but EOS may follow: the grammar is complete (or in error)."""
        return self._m.is_stopped()

    def fill_bitmask(self, row: np.ndarray) -> bool:
        """Write the allowed next tokens into `row` ([ceil(V/32)] int32, bit j of word w is
        token 32w + j); False when no token is allowed."""
        if not self._m.is_error():
            self._m.unsafe_compute_mask_ptr(row.ctypes.data, row.nbytes)
        if self._m.is_error():
            self.failure = self.failure or self.error
            row[:] = 0
            return False
        return bool(row.any())

    def jump_forward(self) -> list[int]:
        """The tokens the grammar forces from here (consumed), to append at once. They stop
        short of the forced text where its last token could merge with what follows, so the
        output stays tokenized as the model would have sampled it."""
        tokens = self._m.compute_ff_tokens()
        if tokens and not self._m.consume_tokens(tokens):
            return []  # cannot happen for forced tokens; never feed ones the matcher refused
        return tokens
