"""StepInputs: one StepPlan as padded device arrays, and StepBuckets, which picks their
shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import numpy as np

from jaxengine.layers.attention import AttentionMetadata, SharedPrefix
from jaxengine.runtime.sampler import SamplingInputs
from jaxengine.sampling_params import MAX_LOGIT_BIAS, MAX_SUPPRESSED, MAX_TOKEN_IDS_LOGPROB
from jaxengine.scheduler.batch import StepPlan


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class StepBuckets:
    """The shapes a step is padded to: tokens T, sequences B, pages per sequence Pb.

    Powers of two keep the set of compiled programs small; B follows T (a step never has more
    sequences than tokens) up to the running-request bucket. Pb follows the longest context
    only where attention cost grows with the page-table width (the reference gathers every
    page); the Pallas kernels walk live pages only, so there Pb is always the maximum and
    there are ten times fewer programs. Finer page buckets (1.5x steps) cut the reference's
    padding by a quarter but double the programs, and start-up compiles them all.

    `cascade`: steps carry a SharedPrefix (fixed shapes, length 0 when unused), so that the
    kernels read a radix prefix shared by many sequences once; only kernels that walk pages
    gain from it, and with it on there is no second set of programs.
    """

    page_size: int
    max_seqs: int                # running requests
    max_pages_per_seq: int
    max_step_tokens: int         # most tokens the scheduler puts in one step
    attention_budget: int        # the scheduler keeps (tokens x longest context) under it
    pages_follow_context: bool
    cascade: bool = False

    @property
    def seqs(self) -> int:
        return _pow2(self.max_seqs)

    def for_step(self, num_tokens: int, max_pages: int) -> tuple[int, int, int]:
        T = _pow2(num_tokens)
        Pb = _pow2(self.max_pages_per_seq)
        if self.pages_follow_context:
            Pb = min(_pow2(max_pages), Pb)
        return T, min(T, self.seqs), Pb

    def all(self) -> list[tuple[int, int, int]]:
        """Every bucket a step can reach: warm-up compiles exactly these. A step of n tokens
        holds only decodes (n <= max_seqs, any context) or a prefill chunk, and then
        n x (longest context) <= attention_budget."""
        buckets = set()
        for T in (1 << i for i in range(_pow2(self.max_step_tokens).bit_length())):
            fewest = T // 2 + 1
            pages = self.max_pages_per_seq
            if fewest > self.max_seqs:
                pages = min(pages, -(-(self.attention_budget // fewest) // self.page_size))
            buckets.update(self.for_step(T, p) for p in range(1, pages + 1))
        return sorted(buckets)


class StepInputs(NamedTuple):
    tokens: jax.Array            # [T] i32
    prev_index: jax.Array        # [T] i32 >= 0: take the token the previous step sampled there
    positions: jax.Array         # [T] i32
    token_slot: jax.Array        # [T] i32 penalty-state row of each token's request
    token_is_output: jax.Array   # [T] bool, an output token re-fed after preemption
    logits_indices: jax.Array    # [B] i32 last token of each sequence
    meta: AttentionMetadata
    sampling: SamplingInputs
    # Prompt logprobs: rows of the step whose logits predict a prompt token, that token, and
    # how many rows are real (0 in almost every step: the program then skips the work).
    logprob_rows: jax.Array      # [T] i32
    logprob_targets: jax.Array   # [T] i32
    logprob_row_seqs: jax.Array  # [T] i32 each row's sequence (its token_ids_logprob)
    num_logprob_rows: jax.Array  # [1] i32


def padding_step_inputs(T: int, B: int, Pb: int, *, max_seqs: int, cascade: bool = False
                        ) -> StepInputs:
    """A step of the given bucket that holds no sequence: every token writes to page 0."""
    dummy_slot = max_seqs
    shared = SharedPrefix(pages=np.zeros(Pb, np.int32), length=np.zeros(1, np.int32),
                          seq_mask=np.zeros(B, bool)) if cascade else None
    meta = AttentionMetadata(slots=np.zeros(T, np.int32), kv_lens=np.zeros(B, np.int32),
                             page_indices=np.zeros((B, Pb), np.int32),
                             cu_q_lens=np.zeros(B + 1, np.int32),
                             num_seqs=np.zeros(1, np.int32), shared_prefix=shared)
    return StepInputs(tokens=np.zeros(T, np.int32), prev_index=np.full(T, -1, np.int32),
                      positions=np.zeros(T, np.int32),
                      token_slot=np.full(T, dummy_slot, np.int32),
                      token_is_output=np.zeros(T, bool), logits_indices=np.zeros(B, np.int32),
                      meta=meta, sampling=_SamplingArrays(B, dummy_slot).arrays(),
                      logprob_rows=np.zeros(T, np.int32), logprob_targets=np.zeros(T, np.int32),
                      logprob_row_seqs=np.zeros(T, np.int32),
                      num_logprob_rows=np.zeros(1, np.int32))


def build_step_inputs(plan: StepPlan, buckets: StepBuckets) -> StepInputs:
    """Host numpy arrays for one step, padded to its buckets (padding writes to page 0).
    Vectorized over sequences: the host cost of a step must not grow with Python per
    request."""
    page_size, n, num_tokens = buckets.page_size, plan.num_seqs, plan.num_tokens
    num_pages = np.asarray(plan.num_pages, np.int32)
    T, B, Pb = buckets.for_step(num_tokens, int(num_pages.max()))
    x = padding_step_inputs(T, B, Pb, max_seqs=buckets.max_seqs, cascade=buckets.cascade)
    m = x.meta
    lengths = np.asarray(plan.lengths, np.int32)
    starts = np.asarray(plan.starts, np.int32)
    ends = np.cumsum(lengths, dtype=np.int32)        # of each sequence's tokens in the step
    seq = np.repeat(np.arange(n), lengths)            # [num_tokens] its sequence
    pos = starts[seq] + np.arange(num_tokens, dtype=np.int32) - (ends - lengths)[seq]
    last, feed = ends - 1, np.asarray(plan.feed_from, np.int32)
    fed = feed >= 0          # sampled by the step still in flight: read it on device
    x.tokens[:num_tokens] = plan.tokens
    x.tokens[last[fed]] = 0
    x.prev_index[last[fed]] = feed[fed]
    x.positions[:num_tokens] = pos
    pages = np.asarray(plan.pages, np.int32)
    first_page = np.cumsum(num_pages) - num_pages
    m.slots[:num_tokens] = pages[first_page[seq] + pos // page_size] * page_size + \
        pos % page_size
    slots = np.asarray(plan.slots, np.int32)
    x.token_slot[:num_tokens] = slots[seq]
    x.token_is_output[:num_tokens] = (pos >= np.asarray(plan.refed_first)[seq]) & \
        (pos < np.asarray(plan.refed_last)[seq])
    x.logits_indices[:n] = last
    m.kv_lens[:n] = starts + lengths
    page_seq = np.repeat(np.arange(n), num_pages)
    m.page_indices[page_seq, np.arange(len(pages)) - first_page[page_seq]] = pages
    m.cu_q_lens[1:n + 1] = ends
    m.cu_q_lens[n + 1:] = num_tokens
    m.num_seqs[0] = n
    if m.shared_prefix is not None and plan.shared_prefix is not None:
        shared, k = plan.shared_prefix, len(plan.shared_prefix.pages)
        m.shared_prefix.pages[:k] = shared.pages
        m.shared_prefix.length[0] = shared.length
        m.shared_prefix.seq_mask[shared.members] = True
    if plan.logprob_rows:
        k = len(plan.logprob_rows)
        x.logprob_rows[:k] = plan.logprob_rows
        x.logprob_targets[:k] = plan.logprob_targets
        x.logprob_row_seqs[:k] = plan.logprob_seqs
        x.num_logprob_rows[0] = k
    sampling = _SamplingArrays(B, buckets.max_seqs)
    sampling.fill(plan, slots)
    return x._replace(sampling=sampling.arrays())


class _SamplingArrays:
    def __init__(self, B: int, dummy_slot: int):
        self.temperature = np.zeros(B, np.float32)
        self.top_p = np.ones(B, np.float32)
        self.top_k = np.zeros(B, np.int32)
        self.min_p = np.zeros(B, np.float32)
        self.repetition_penalty = np.ones(B, np.float32)
        self.frequency_penalty = np.zeros(B, np.float32)
        self.presence_penalty = np.zeros(B, np.float32)
        self.seed = np.zeros(B, np.uint32)
        self.sample_index = np.zeros(B, np.int32)
        self.slot = np.full(B, dummy_slot, np.int32)
        self.reset = np.zeros(B, bool)
        self.counts_output = np.zeros(B, bool)
        self.suppress_ids = np.full((B, MAX_SUPPRESSED), np.iinfo(np.int32).max, np.int32)
        self.bias_ids = np.full((B, MAX_LOGIT_BIAS), np.iinfo(np.int32).max, np.int32)
        self.bias_values = np.zeros((B, MAX_LOGIT_BIAS), np.float32)
        self.top_logprobs = np.zeros(B, bool)
        self.logprob_ids = np.zeros((B, MAX_TOKEN_IDS_LOGPROB), np.int32)

    def fill(self, plan: StepPlan, slots: np.ndarray) -> None:
        n, ps = plan.num_seqs, plan.params
        self.temperature[:n] = [p.temperature for p in ps]
        self.top_p[:n] = [p.top_p for p in ps]
        self.top_k[:n] = np.clip([p.top_k for p in ps], 0, np.iinfo(np.int32).max)  # past V: none
        self.min_p[:n] = [p.min_p for p in ps]
        self.repetition_penalty[:n] = [p.repetition_penalty for p in ps]
        self.frequency_penalty[:n] = [p.frequency_penalty for p in ps]
        self.presence_penalty[:n] = [p.presence_penalty for p in ps]
        self.seed[:n] = [seed & 0xFFFFFFFF for seed in plan.seeds]
        self.sample_index[:n] = plan.sample_index
        self.slot[:n] = slots
        self.reset[:n] = plan.reset
        self.counts_output[:n] = plan.samples
        self.top_logprobs[:n] = [p.return_logprob and (p.top_logprobs_num > 0 or
                                                       bool(p.token_ids_logprob)) for p in ps]
        for i in [i for i, p in enumerate(ps) if p.token_ids_logprob]:
            self.logprob_ids[i, :len(ps[i].token_ids_logprob)] = ps[i].token_ids_logprob
        for i, held in plan.suppressed.items():  # the Engine refuses more than MAX_SUPPRESSED
            self.suppress_ids[i, :len(held)] = held
        for i in [i for i, p in enumerate(ps) if p.logit_bias]:
            bias = ps[i].logit_bias
            self.bias_ids[i, :len(bias)] = [int(t) for t in bias]
            self.bias_values[i, :len(bias)] = list(bias.values())

    def arrays(self) -> SamplingInputs:
        return SamplingInputs(**{f: getattr(self, f) for f in SamplingInputs._fields})
