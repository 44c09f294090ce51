"""Bucketing and the padded layout of one step."""

from __future__ import annotations

import numpy as np

from jaxengine.runtime.step_inputs import build_step_inputs, step_buckets
from jaxengine.sampling_params import SamplingParams
from jaxengine.scheduler.req import Req
from jaxengine.scheduler.scheduler import Batch, BatchEntry


def test_buckets_cover_the_step_and_stay_few():
    seen = set()
    for tokens in range(1, 600):
        for pages in range(1, 70):
            T, B, Pb = step_buckets(tokens, pages, max_seqs=64, max_pages_per_seq=128)
            assert T >= tokens and Pb >= pages and B <= 64 and B >= min(tokens, 64)
            seen.add((T, B, Pb))
    assert len(seen) == 11 * 13  # T in 1..1024, Pb in 1, 2, 3, 4, 6, ..., 96


def test_padding_writes_to_the_dummy_page_and_is_not_a_sequence():
    decode = Req("d", [5, 6, 7], SamplingParams(), seed=1, output_ids=[8], pages=[3],
                 num_computed=3, slot=0)
    prefill = Req("p", [9] * 6, SamplingParams(temperature=0.5), seed=2, pages=[1, 2], slot=1)
    batch = Batch([BatchEntry(decode, 3, 1, True, False), BatchEntry(prefill, 0, 6, True, True)])
    x = build_step_inputs(batch, page_size=4, max_seqs=4, max_pages_per_seq=8, eos_ids=[0])
    assert x.tokens.tolist() == [8, 9, 9, 9, 9, 9, 9, 0]
    assert x.positions.tolist() == [3, 0, 1, 2, 3, 4, 5, 0]
    assert x.meta.slots.tolist() == [15, 4, 5, 6, 7, 8, 9, 0]
    assert x.meta.cu_q_lens.tolist() == [0, 1, 7, 7, 7]
    assert x.meta.kv_lens.tolist() == [4, 6, 0, 0]
    assert x.logits_indices.tolist() == [0, 6, 0, 0]
    assert int(x.meta.num_seqs[0]) == 2
    assert np.asarray(x.sampling.reset).tolist() == [False, True, False, False]
