"""Req: one generation request as the scheduler sees it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from jaxengine.sampling_params import SamplingParams


class FinishReason(Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass(eq=False)  # identity: `req in running` must not compare token lists
class Req:
    rid: str
    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    output_ids: list[int] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    num_computed: int = 0        # tokens whose K/V are in the cache
    slot: int = -1               # row of the on-device penalty state while running
    outputs_at_admission: int = 0  # outputs already sampled when last admitted (preemption)
    finish_reason: FinishReason | None = None
    matched_stop: int | str | None = None
    abort_message: str | None = None   # why the scheduler aborted it, for the client
    arrival_time: float = field(default_factory=time.monotonic)
    num_preemptions: int = 0
    cache_node: Any = None       # radix node this request holds locked (its shared prefix)
    num_cached_pages: int = 0    # leading pages of `pages` that belong to the radix tree
    cached_tokens: int = -1      # prompt tokens found in the cache at first admission
    future_index: int = -1       # entry of the last dispatched step that samples a PLACEHOLDER
    grammar: Any = None          # structured.GrammarMatcher, fed every real output token
    num_steps: int = 0           # model steps this request took part in
    # Prompt logprobs (return_logprob with logprob_start_len >= 0): one per prompt position
    # from `input_logprob_start` on, filled as prefill computes them, sent with the first
    # output; None for position 0, which nothing predicts.
    input_logprobs: list[float | None] | None = None
    input_top: list[list[tuple[int, float]] | None] | None = None
    input_ids_logprobs: list[list[float] | None] | None = None   # token_ids_logprob
    input_logprobs_sent: bool = False

    def __post_init__(self) -> None:
        p = self.params
        if p.wants_prompt_logprobs:
            n = len(self.prompt_ids) - self.input_logprob_start
            self.input_logprobs = [None] * n
            self.input_top = [None] * n if p.top_logprobs_num else None
            self.input_ids_logprobs = [None] * n if p.token_ids_logprob else None

    @property
    def input_logprob_start(self) -> int:
        return min(self.params.logprob_start_len, len(self.prompt_ids) - 1)

    @property
    def computes_input_logprobs(self) -> bool:
        """Its prefill still owes prompt logprobs (the logits of prompt positions)."""
        return self.input_logprobs is not None and not self.input_logprobs_sent

    @property
    def uses_penalties(self) -> bool:
        p = self.params
        return p.repetition_penalty != 1.0 or p.frequency_penalty != 0.0 or \
            p.presence_penalty != 0.0

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_pending(self) -> int:
        """Tokens whose K/V still have to be computed (the last sampled token included)."""
        return self.num_tokens - self.num_computed

    @property
    def in_prefill(self) -> bool:
        return self.num_pending > 1 or not self.output_ids

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
