"""What one step computes, twice: the scheduler's `Batch` (entries pointing at their
requests, for commit and process) and the `StepPlan` it hands to the runtime, plain values
only, so that the runtime never reads a Req (jaxengine/runtime/step_inputs.py packs it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxengine.sampling_params import SamplingParams, suppressed_ids
from jaxengine.scheduler.cascade import SharedPrefixPlan, shared_prefix
from jaxengine.scheduler.future import PLACEHOLDER
from jaxengine.scheduler.req import Req


@dataclass
class BatchEntry:
    req: Req
    start: int        # position of the first token computed in this step
    length: int       # tokens computed in this step
    samples: bool     # whether the step's last token yields a new output token
    reset: bool       # first step since admission: the request's penalty state starts empty
    out_index: int = -1  # where the sampled token goes in req.output_ids (set by commit)


@dataclass
class Batch:
    entries: list[BatchEntry]

    @property
    def num_tokens(self) -> int:
        return sum(e.length for e in self.entries)


@dataclass(frozen=True)
class StepPlan:
    """One step's sequences as columns (entry i of each list: the i-th sequence), so that the
    runtime packs a step of hundreds of sequences with a few vectorized numpy operations."""

    tokens: list[int]       # every sequence's token ids, concatenated; a sequence's tokens are
                            # computed at positions start, start + 1, ...; its last may be a
                            # PLACEHOLDER, read on device from the previous step's samples
    lengths: list[int]      # tokens per sequence
    starts: list[int]
    pages: list[int]        # every sequence's pages of positions [0, start + length), concatenated
    num_pages: list[int]
    slots: list[int]        # each request's row of the penalty state
    feed_from: list[int]    # for a PLACEHOLDER: its index among the previous step's samples; -1
    refed_first: list[int]  # positions [first, last) of outputs sampled before this admission
    refed_last: list[int]   # (re-fed after preemption): counted again
    samples: list[bool]     # the last token's logits are sampled
    reset: list[bool]       # the penalty state starts empty (first step since admission)
    params: list[SamplingParams]
    seeds: list[int]
    sample_index: list[int]  # outputs sampled before this step (keys the draw)
    suppressed: dict[int, list[int]]  # sequence -> ids held back while min_new_tokens is unmet
    shared_prefix: SharedPrefixPlan | None = None
    # Prompt logprobs: the step's token rows whose logits predict a prompt token, that token,
    # and per sequence asking (sequence, position of its first predicted token, how many).
    logprob_rows: list[int] = field(default_factory=list)
    logprob_targets: list[int] = field(default_factory=list)
    logprob_seqs: list[int] = field(default_factory=list)
    logprob_spans: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def num_seqs(self) -> int:
        return len(self.lengths)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)


def plan_step(batch: Batch, eos_ids, page_size: int, cascade: bool) -> StepPlan:
    """The plan of a scheduled batch, read before `commit` (the PLACEHOLDERs it holds are
    those of the step in flight). Per sequence only list appends: this runs every step for
    every running request."""
    tokens, lengths, starts, pages, num_pages, slots, feed_from = [], [], [], [], [], [], []
    refed_first, refed_last, samples, reset, params, seeds, sample_index = \
        [], [], [], [], [], [], []
    suppressed: dict[int, list[int]] = {}
    rows: list[int] = []
    targets: list[int] = []
    row_seqs: list[int] = []
    spans: list[tuple[int, int, int]] = []
    for i, e in enumerate(batch.entries):
        req, start, end = e.req, e.start, e.start + e.length
        prompt, outputs = req.prompt_ids, req.output_ids
        n_prompt, n_out, p = len(prompt), len(outputs), req.params
        if start >= n_prompt:  # never concatenate the whole context for a decode
            ids = outputs[start - n_prompt:end - n_prompt]
        else:
            ids = prompt[start:end] + outputs[:max(end - n_prompt, 0)]
            if req.computes_input_logprobs:
                # Position q's logits predict prompt token q + 1 (position 0: none).
                first = max(req.input_logprob_start, 1) - 1
                lo, hi = max(start, first), min(end, n_prompt - 1)
                if lo < hi:
                    rows += range(len(tokens) + lo - start, len(tokens) + hi - start)
                    targets += prompt[lo + 1:hi + 1]
                    row_seqs += [i] * (hi - lo)
                    spans.append((i, lo + 1, hi - lo))
        tokens += ids
        lengths.append(e.length)
        starts.append(start)
        n_pages = -(-end // page_size)
        pages += req.pages[:n_pages]
        num_pages.append(n_pages)
        slots.append(req.slot)
        feed_from.append(req.future_index if ids[-1] == PLACEHOLDER else -1)
        refed_first.append(n_prompt)
        refed_last.append(n_prompt + req.outputs_at_admission)
        samples.append(e.samples)
        reset.append(e.reset)
        params.append(p)
        seeds.append(req.seed)
        sample_index.append(n_out)
        if n_out < p.min_new_tokens:
            suppressed[i] = suppressed_ids(p, eos_ids)
    prefix = shared_prefix(batch.entries, page_size) if cascade else None
    return StepPlan(tokens, lengths, starts, pages, num_pages, slots, feed_from, refed_first,
                    refed_last, samples, reset, params, seeds, sample_index, suppressed, prefix,
                    rows, targets, row_seqs, spans)
