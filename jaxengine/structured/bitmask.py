"""The token bitmask of one step, built on the host from the batch's matchers."""

from __future__ import annotations

import numpy as np


def bitmask_words(vocab_size: int) -> int:
    return -(-vocab_size // 32)


def needs_bitmask(entries) -> bool:
    """Whether any sequence of the step samples under a grammar."""
    return any(e.samples and e.req.grammar is not None for e in entries)


def batch_bitmask(entries, num_rows: int, vocab_size: int) -> np.ndarray:
    """[num_rows, ceil(V/32)] int32: each grammar row allows what its matcher allows; other
    rows (and padding) allow everything. A dead end (nothing allowed) allows everything too:
    the token sampled there is refused by the matcher, which finishes the request."""
    mask = np.full((num_rows, bitmask_words(vocab_size)), -1, np.int32)
    for i, e in enumerate(entries):
        g = e.req.grammar
        if g is not None and e.samples and not e.req.finished and not g.fill_bitmask(mask[i]):
            mask[i] = -1
    return mask
