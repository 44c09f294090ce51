"""The wire between the API process and the engine-core process (a socket of pickled tuples).

In: ("add", AddRequest), ("abort", rid), ("call", (call_id, method)), ("shutdown", None).
Out: ("ready", info), ("outputs", rows) with a row per TokenOutput (`output_rows`),
("reply", (call_id, result)), and ("error", text) when start-up fails.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields

from jaxengine.sampling_params import SamplingParams


@dataclass
class AddRequest:
    rid: str
    prompt_ids: list[int]
    params: SamplingParams
    seed: int


@dataclass
class TokenOutput:
    """What one step produced for one request."""

    rid: str
    new_ids: list[int]
    logprobs: list[float]
    finish_reason: str | None = None   # "stop" | "length" | "abort"
    matched_stop: int | str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    queue_time: float | None = None    # seconds from arrival to first step (first output only)
    abort_status: int | None = None    # HTTP status of an abort the core decided (503: full)
    abort_message: str | None = None   # why, for the client (None: the status says it)
    num_steps: int = 0                 # model steps the request has taken part in so far
    # Per new token, its most likely alternatives as (token id, logprob), best first; only
    # for requests with return_logprob and top_logprobs_num > 0.
    top_logprobs: list[list[tuple[int, float]]] | None = None
    # Prompt logprobs (logprob_start_len >= 0), with the first output: per prompt position
    # from the start on, the logprob of its token (None at position 0) and, with
    # top_logprobs_num > 0, its most likely alternatives.
    input_logprobs: list[float | None] | None = None
    input_top: list[list[tuple[int, float]] | None] | None = None
    # token_ids_logprob: per new token, and per prompt position as above, those tokens'
    # logprobs in the order asked.
    ids_logprobs: list[list[float]] | None = None
    input_ids_logprobs: list[list[float] | None] | None = None


# A step's outputs cross as plain tuples: a pickled dataclass carries its field names each
# time, which at 256 outputs a step took 0.47 ms to write and 0.8 ms to read (0.16 and 0.2
# as tuples), on both processes' share of the same cores.
_row = operator.attrgetter(*(f.name for f in fields(TokenOutput)))


def output_rows(outputs: list[TokenOutput]) -> list[tuple]:
    return [_row(out) for out in outputs]


def from_rows(rows: list[tuple]) -> list[TokenOutput]:
    return [TokenOutput(*row) for row in rows]
