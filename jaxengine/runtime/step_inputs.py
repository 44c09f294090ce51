"""StepInputs: one StepPlan as padded device arrays, and StepBuckets, which picks their
shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import numpy as np

from jaxengine.layers.attention import AttentionMetadata, SharedPrefix
from jaxengine.runtime.sampler import SamplingInputs
from jaxengine.sampling_params import MAX_LOGIT_BIAS, MAX_SUPPRESSED
from jaxengine.scheduler.batch import SeqPlan, StepPlan


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
                      meta=meta, sampling=_SamplingArrays(B, dummy_slot).arrays())


def build_step_inputs(plan: StepPlan, buckets: StepBuckets) -> StepInputs:
    """Host numpy arrays for one step, padded to its buckets (padding writes to page 0)."""
    seqs, page_size = plan.seqs, buckets.page_size
    max_pages = max(-(-s.end // page_size) for s in seqs)
    T, B, Pb = buckets.for_step(plan.num_tokens, max_pages)
    x = padding_step_inputs(T, B, Pb, max_seqs=buckets.max_seqs, cascade=buckets.cascade)
    m = x.meta
    sampling = _SamplingArrays(B, buckets.max_seqs)
    t = 0
    for i, s in enumerate(seqs):
        n = len(s.token_ids)
        pos = np.arange(s.start, s.end)
        x.tokens[t:t + n] = s.token_ids
        if s.feed_from >= 0:  # sampled by the step still in flight: read it on device
            x.tokens[t + n - 1] = 0
            x.prev_index[t + n - 1] = s.feed_from
        x.positions[t:t + n] = pos
        pages = np.asarray(s.pages, np.int32)
        m.slots[t:t + n] = pages[pos // page_size] * page_size + pos % page_size
        x.token_slot[t:t + n] = s.slot
        first, last = s.refed_outputs
        x.token_is_output[t:t + n] = (pos >= first) & (pos < last)
        t += n
        x.logits_indices[i] = t - 1
        m.kv_lens[i] = s.end
        m.page_indices[i, :len(pages)] = pages
        m.cu_q_lens[i + 1] = t
        sampling.fill(i, s)
    m.cu_q_lens[len(seqs) + 1:] = t
    m.num_seqs[0] = len(seqs)
    if m.shared_prefix is not None and plan.shared_prefix is not None:
        shared, n = plan.shared_prefix, len(plan.shared_prefix.pages)
        m.shared_prefix.pages[:n] = shared.pages
        m.shared_prefix.length[0] = shared.length
        m.shared_prefix.seq_mask[shared.members] = True
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

    def fill(self, i: int, s: SeqPlan) -> None:
        p = s.sampling.params
        self.temperature[i] = p.temperature
        self.top_p[i] = p.top_p
        self.top_k[i] = min(max(p.top_k, 0), np.iinfo(np.int32).max)  # past V: no top-k
        self.min_p[i] = p.min_p
        self.repetition_penalty[i] = p.repetition_penalty
        self.frequency_penalty[i] = p.frequency_penalty
        self.presence_penalty[i] = p.presence_penalty
        self.seed[i] = s.sampling.seed & 0xFFFFFFFF
        self.sample_index[i] = s.sampling.sample_index
        self.slot[i] = s.slot
        self.reset[i] = s.reset
        self.counts_output[i] = s.samples
        held = s.sampling.suppressed   # the Engine refuses more than MAX_SUPPRESSED
        self.suppress_ids[i, :len(held)] = held
        if p.logit_bias:
            n = len(p.logit_bias)
            self.bias_ids[i, :n] = [int(t) for t in p.logit_bias]
            self.bias_values[i, :n] = list(p.logit_bias.values())
        self.top_logprobs[i] = p.return_logprob and p.top_logprobs_num > 0

    def arrays(self) -> SamplingInputs:
        return SamplingInputs(**{f: getattr(self, f) for f in SamplingInputs._fields})
