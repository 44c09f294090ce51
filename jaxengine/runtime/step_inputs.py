"""StepInputs: one Batch as padded device arrays, and StepBuckets, which picks their shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import numpy as np

from jaxengine.layers.attention import AttentionMetadata, SharedPrefix
from jaxengine.runtime.sampler import SamplingInputs
from jaxengine.sampling_params import MAX_LOGIT_BIAS, MAX_SUPPRESSED, suppressed_ids
from jaxengine.scheduler.scheduler import PLACEHOLDER, Batch
from pallas_kernels.cascade_attention import MIN_PREFIX_TOKENS, MIN_SHARING_SEQS


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


def build_step_inputs(batch: Batch, buckets: StepBuckets, eos_ids: list[int]) -> StepInputs:
    """Host numpy arrays for one step, padded to its buckets (padding writes to page 0)."""
    entries, page_size = batch.entries, buckets.page_size
    max_pages = max(-(-(e.start + e.length) // page_size) for e in entries)
    T, B, Pb = buckets.for_step(batch.num_tokens, max_pages)
    x = padding_step_inputs(T, B, Pb, max_seqs=buckets.max_seqs, cascade=buckets.cascade)
    m = x.meta
    s = _SamplingArrays(B, buckets.max_seqs)
    t = 0
    for i, e in enumerate(entries):
        req, end = e.req, e.start + e.length
        pos = np.arange(e.start, end)
        ids = req.all_ids[e.start:end]
        if ids[-1] == PLACEHOLDER:  # sampled by the step still in flight: read it on device
            ids[-1] = 0
            x.prev_index[t + e.length - 1] = req.future_index
        x.tokens[t:t + e.length] = ids
        x.positions[t:t + e.length] = pos
        pages = np.asarray(req.pages, np.int32)
        m.slots[t:t + e.length] = pages[pos // page_size] * page_size + pos % page_size
        x.token_slot[t:t + e.length] = req.slot
        # Outputs sampled before this admission (re-fed after preemption) are counted again;
        # later ones were counted when they were sampled.
        out_index = pos - len(req.prompt_ids)
        x.token_is_output[t:t + e.length] = ((out_index >= 0)
                                             & (out_index < req.outputs_at_admission))
        t += e.length
        x.logits_indices[i] = t - 1
        m.kv_lens[i] = end
        n_pages = -(-end // page_size)
        m.page_indices[i, :n_pages] = pages[:n_pages]
        m.cu_q_lens[i + 1] = t
        s.fill(i, e, eos_ids)
    m.cu_q_lens[len(entries) + 1:] = t
    m.num_seqs[0] = len(entries)
    if m.shared_prefix is not None:
        _fill_shared_prefix(m.shared_prefix, entries, page_size)
    return x._replace(sampling=s.arrays())


def _fill_shared_prefix(shared: SharedPrefix, entries, page_size: int) -> None:
    """Mark the largest group of sequences whose KV starts with the same radix pages, if it is
    big enough for the cascade to pay. Equal page ids mean equal KV: only the radix cache
    hands one page to several requests."""
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        if e.req.num_cached_pages and e.start >= page_size:
            groups.setdefault(e.req.pages[0], []).append(i)
    members = max(groups.values(), key=len, default=[])
    if len(members) < MIN_SHARING_SEQS:
        return
    first = entries[members[0]].req.pages
    n = min(entries[i].start // page_size for i in members)  # every query past the prefix
    for i in members:
        pages = entries[i].req.pages
        n = min(n, len(pages))
        n = next((j for j in range(n) if pages[j] != first[j]), n)
    if n * page_size < MIN_PREFIX_TOKENS:
        return
    shared.pages[:n] = first[:n]
    shared.length[0] = n * page_size
    shared.seq_mask[members] = True


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

    def fill(self, i: int, e, eos_ids: list[int]) -> None:
        req, p = e.req, e.req.params
        self.temperature[i] = p.temperature
        self.top_p[i] = p.top_p
        self.top_k[i] = min(max(p.top_k, 0), np.iinfo(np.int32).max)  # past V: no top-k
        self.min_p[i] = p.min_p
        self.repetition_penalty[i] = p.repetition_penalty
        self.frequency_penalty[i] = p.frequency_penalty
        self.presence_penalty[i] = p.presence_penalty
        self.seed[i] = req.seed & 0xFFFFFFFF
        self.sample_index[i] = len(req.output_ids)
        self.slot[i] = req.slot
        self.reset[i] = e.reset
        self.counts_output[i] = e.samples
        if len(req.output_ids) < p.min_new_tokens:
            banned = suppressed_ids(p, eos_ids)   # Engine refuses more than MAX_SUPPRESSED
            self.suppress_ids[i, :len(banned)] = banned
        if p.logit_bias:
            n = len(p.logit_bias)
            self.bias_ids[i, :n] = [int(t) for t in p.logit_bias]
            self.bias_values[i, :n] = list(p.logit_bias.values())
        self.top_logprobs[i] = p.return_logprob and p.top_logprobs_num > 0

    def arrays(self) -> SamplingInputs:
        return SamplingInputs(**{f: getattr(self, f) for f in SamplingInputs._fields})
