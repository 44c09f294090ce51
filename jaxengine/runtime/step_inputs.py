"""StepInputs: one Batch as padded device arrays, and the one function that picks the buckets."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from jaxengine.runtime.attention import AttentionMetadata
from jaxengine.runtime.sampler import SamplingInputs
from jaxengine.scheduler.scheduler import PLACEHOLDER, Batch

SUPPRESS_WIDTH = 8  # most token ids banned per request while min_new_tokens is unmet


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _pages_bucket(n: int) -> int:
    """Powers of two and 1.5x powers of two (..., 8, 12, 16, 24, ...): attention cost grows
    with the padded context, so pages get finer buckets than tokens."""
    p = _pow2(n)
    return p * 3 // 4 if p >= 4 and n <= p * 3 // 4 else p


def max_seqs_bucket(max_seqs: int) -> int:
    """The most sequences a step is padded to."""
    return _pow2(max_seqs)


def step_buckets(num_tokens: int, max_pages: int, *, max_seqs: int, max_pages_per_seq: int
                 ) -> tuple[int, int, int]:
    """(tokens T, sequences B, pages per sequence Pb) that a step is padded to.

    Powers of two keep the set of compiled programs small; B follows T (a step never has more
    sequences than tokens) up to the running-request bucket.
    """
    T = _pow2(num_tokens)
    B = min(T, max_seqs_bucket(max_seqs))
    Pb = min(_pages_bucket(max_pages), _pages_bucket(max_pages_per_seq))
    return T, B, Pb


class StepInputs(NamedTuple):
    tokens: jax.Array            # [T] i32
    prev_index: jax.Array        # [T] i32 >= 0: take the token the previous step sampled there
    positions: jax.Array         # [T] i32
    token_slot: jax.Array        # [T] i32 penalty-state row of each token's request
    token_is_output: jax.Array   # [T] bool, an output token re-fed after preemption
    logits_indices: jax.Array    # [B] i32 last token of each sequence
    meta: AttentionMetadata
    sampling: SamplingInputs


def build_step_inputs(batch: Batch, *, page_size: int, max_seqs: int, max_pages_per_seq: int,
                      eos_ids: list[int]) -> StepInputs:
    """Host numpy arrays for one step, padded to its buckets (padding writes to page 0)."""
    entries = batch.entries
    max_pages = max(-(-(e.start + e.length) // page_size) for e in entries)
    T, B, Pb = step_buckets(batch.num_tokens, max_pages, max_seqs=max_seqs,
                            max_pages_per_seq=max_pages_per_seq)
    dummy_slot = max_seqs
    tokens = np.zeros(T, np.int32)
    prev_index = np.full(T, -1, np.int32)
    positions = np.zeros(T, np.int32)
    slots = np.zeros(T, np.int32)
    token_slot = np.full(T, dummy_slot, np.int32)
    token_is_output = np.zeros(T, bool)
    logits_indices = np.zeros(B, np.int32)
    kv_lens = np.zeros(B, np.int32)
    page_indices = np.zeros((B, Pb), np.int32)
    cu_q_lens = np.zeros(B + 1, np.int32)
    s = _SamplingArrays(B, dummy_slot)
    t = 0
    for i, e in enumerate(entries):
        req, end = e.req, e.start + e.length
        pos = np.arange(e.start, end)
        ids = req.all_ids[e.start:end]
        if ids[-1] == PLACEHOLDER:  # sampled by the step still in flight: read it on device
            ids[-1] = 0
            prev_index[t + e.length - 1] = req.future_index
        tokens[t:t + e.length] = ids
        positions[t:t + e.length] = pos
        pages = np.asarray(req.pages, np.int32)
        slots[t:t + e.length] = pages[pos // page_size] * page_size + pos % page_size
        token_slot[t:t + e.length] = req.slot
        # Outputs sampled before this admission (re-fed after preemption) are counted again;
        # later ones were counted when they were sampled.
        out_index = pos - len(req.prompt_ids)
        token_is_output[t:t + e.length] = (out_index >= 0) & (out_index < req.outputs_at_admission)
        t += e.length
        logits_indices[i] = t - 1
        kv_lens[i] = end
        n_pages = -(-end // page_size)
        page_indices[i, :n_pages] = pages[:n_pages]
        cu_q_lens[i + 1] = t
        s.fill(i, e, eos_ids)
    cu_q_lens[len(entries) + 1:] = t
    meta = AttentionMetadata(slots=slots, kv_lens=kv_lens, page_indices=page_indices,
                             cu_q_lens=cu_q_lens, num_seqs=np.asarray([len(entries)], np.int32))
    return StepInputs(tokens, prev_index, positions, token_slot, token_is_output,
                      logits_indices, meta, s.arrays())


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
        self.suppress_ids = np.full((B, SUPPRESS_WIDTH), np.iinfo(np.int32).max, np.int32)

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
            banned = list(p.stop_token_ids or []) + ([] if p.ignore_eos else list(eos_ids))
            banned = banned[:SUPPRESS_WIDTH]
            self.suppress_ids[i, :len(banned)] = banned

    def arrays(self) -> SamplingInputs:
        return SamplingInputs(**{f: getattr(self, f) for f in SamplingInputs._fields})
