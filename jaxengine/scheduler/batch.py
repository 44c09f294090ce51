"""What one step computes, twice: the scheduler's `Batch` (entries pointing at their
requests, for commit and process) and the `StepPlan` it hands to the runtime, plain values
only, so that the runtime never reads a Req (jaxengine/runtime/step_inputs.py packs it)."""

from __future__ import annotations

from dataclasses import dataclass

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
class SeqSampling:
    params: SamplingParams
    seed: int
    sample_index: int              # outputs sampled before this step (keys the draw)
    suppressed: tuple[int, ...]    # ids held back while min_new_tokens is unmet


@dataclass(frozen=True)
class SeqPlan:
    """One sequence of a step."""

    token_ids: list[int]   # computed at positions start, start + 1, ...; the last may be a
                           # PLACEHOLDER, read on device from the previous step's samples
    start: int
    pages: list[int]       # the pages of positions [0, start + len(token_ids))
    slot: int              # the request's row of the penalty state
    feed_from: int         # for a PLACEHOLDER: its index among the previous step's samples
    refed_outputs: tuple[int, int]  # positions [a, b) of outputs sampled before this
                                    # admission (re-fed after preemption): counted again
    samples: bool          # the last token's logits are sampled
    reset: bool            # the penalty state starts empty (first step since admission)
    sampling: SeqSampling

    @property
    def end(self) -> int:
        return self.start + len(self.token_ids)


@dataclass(frozen=True)
class StepPlan:
    seqs: list[SeqPlan]
    shared_prefix: SharedPrefixPlan | None = None

    @property
    def num_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.seqs)


def plan_step(batch: Batch, eos_ids, page_size: int, cascade: bool) -> StepPlan:
    """The plan of a scheduled batch, read before `commit` (the PLACEHOLDERs it holds are
    those of the step in flight)."""
    seqs = []
    for e in batch.entries:
        req, end = e.req, e.start + e.length
        ids = req.all_ids[e.start:end]
        prompt, p = len(req.prompt_ids), req.params
        held = suppressed_ids(p, eos_ids) if len(req.output_ids) < p.min_new_tokens else []
        seqs.append(SeqPlan(
            token_ids=ids, start=e.start, pages=req.pages[:-(-end // page_size)],
            slot=req.slot, feed_from=req.future_index if ids[-1] == PLACEHOLDER else -1,
            refed_outputs=(prompt, prompt + req.outputs_at_admission),
            samples=e.samples, reset=e.reset,
            sampling=SeqSampling(p, req.seed, len(req.output_ids), tuple(held))))
    prefix = shared_prefix(batch.entries, page_size) if cascade else None
    return StepPlan(seqs, prefix)
