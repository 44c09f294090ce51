"""The overlap contract: the host builds step N+1 before it has seen step N's tokens.

Timing, step by step (jaxengine/core/engine_core.py `EngineCore.step`):
  1. schedule N+1 and plan it; a request whose last output is step N's sample holds a
     PLACEHOLDER there, and its plan says where among step N's samples the token is
     (`StepPlan.feed_from`): the forward reads it on device, never on the host;
  2. dispatch N+1 and `commit` it: every entry that samples appends a PLACEHOLDER for its
     token (the request's `future_index` says which entry);
  3. only then read step N's tokens and `resolve` each PLACEHOLDER of N with its token.
A request that finishes at step N may have been computed once more at step N+1: that
sample is dropped (its PLACEHOLDER is cut with the output), and the request's pages go back
only to steps after N+1, which the device runs later. Tokens a grammar forces (jump-forward)
`cancel` the sample in flight, which predicted the first of them. Today one token per
request per step is in flight; speculative decoding will carry k.
"""

from __future__ import annotations

PLACEHOLDER = -1   # an output token sampled by a step the host has not read yet


class InFlight:
    """The last committed step, whose samples the host has not read yet."""

    def __init__(self) -> None:
        self.batch = None

    def commit(self, batch) -> None:
        """Give every sampling entry of the dispatched `batch` a PLACEHOLDER output."""
        self.batch = batch
        for i, entry in enumerate(batch.entries):
            if entry.samples:
                req = entry.req
                req.output_ids.append(PLACEHOLDER)
                entry.out_index = len(req.output_ids) - 1
                req.future_index = i

    @staticmethod
    def resolve(entry, token: int) -> None:
        entry.req.output_ids[entry.out_index] = token

    def cancel(self, req) -> None:
        """Drop the request's sample in flight, if any: its entry no longer samples."""
        if req.output_ids and req.output_ids[-1] == PLACEHOLDER:
            entry = self.batch.entries[req.future_index]
            assert entry.req is req and entry.samples
            entry.samples = False
            del req.output_ids[-1]
