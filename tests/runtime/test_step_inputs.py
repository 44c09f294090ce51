"""Bucketing and the padded layout of one step."""

from __future__ import annotations

import numpy as np

from jaxengine.runtime.step_inputs import StepBuckets, build_step_inputs
from jaxengine.sampling_params import SamplingParams
from jaxengine.scheduler.batch import Batch, BatchEntry, plan_step
from jaxengine.scheduler.req import Req


def _buckets(**overrides) -> StepBuckets:
    kw = dict(page_size=16, max_seqs=64, max_pages_per_seq=128, max_step_tokens=512,
              attention_budget=1 << 14, pages_follow_context=True)
    return StepBuckets(**{**kw, **overrides})


def test_buckets_cover_the_step_and_stay_few():
    buckets = _buckets()
    seen = set()
    for tokens in range(1, 600):
        for pages in range(1, 129):
            T, B, Pb = buckets.for_step(tokens, pages)
            assert T >= tokens and Pb >= pages and B <= 64 and B >= min(tokens, 64)
            seen.add((T, B, Pb))
    assert len(seen) == 11 * 8  # T in 1..1024, Pb in 1, 2, 4, ..., 128


def test_warmup_buckets_are_exactly_those_the_scheduler_can_reach():
    buckets = _buckets()
    reachable = set()
    for tokens in range(1, 513):
        for pages in range(1, 129):
            longest = (pages - 1) * 16 + 1  # the shortest context that needs `pages` pages
            if tokens <= 64 or tokens * longest <= 1 << 14:
                reachable.add(buckets.for_step(tokens, pages))
    assert set(buckets.all()) == reachable


def test_pallas_backends_need_one_program_per_token_bucket():
    buckets = _buckets(pages_follow_context=False)
    assert buckets.all() == [(1 << i, min(1 << i, 64), 128) for i in range(10)]


def test_padding_writes_to_the_dummy_page_and_is_not_a_sequence():
    decode = Req("d", [5, 6, 7], SamplingParams(), seed=1, output_ids=[8], pages=[3],
                 num_computed=3, slot=0)
    prefill = Req("p", [9] * 6, SamplingParams(temperature=0.5), seed=2, pages=[1, 2], slot=1)
    batch = Batch([BatchEntry(decode, 3, 1, True, False), BatchEntry(prefill, 0, 6, True, True)])
    x = build_step_inputs(plan_step(batch, [0], 4, cascade=False),
                          _buckets(page_size=4, max_seqs=4, max_pages_per_seq=8))
    assert x.tokens.tolist() == [8, 9, 9, 9, 9, 9, 9, 0]
    assert x.positions.tolist() == [3, 0, 1, 2, 3, 4, 5, 0]
    assert x.meta.slots.tolist() == [15, 4, 5, 6, 7, 8, 9, 0]
    assert x.meta.cu_q_lens.tolist() == [0, 1, 7, 7, 7]
    assert x.meta.kv_lens.tolist() == [4, 6, 0, 0]
    assert x.logits_indices.tolist() == [0, 6, 0, 0]
    assert int(x.meta.num_seqs[0]) == 2
    assert np.asarray(x.sampling.reset).tolist() == [False, True, False, False]


def _sharing_batch(sharers: int) -> Batch:
    prefix = list(range(1, 18))  # 17 radix pages of 16 tokens: 272 tokens
    entries = []
    for i in range(sharers + 1):
        own = prefix if i < sharers else list(range(40, 57))
        req = Req(f"r{i}", [7] * 280, SamplingParams(), seed=i, output_ids=[8],
                  pages=own + [60 + i], num_computed=280, slot=i, num_cached_pages=17)
        entries.append(BatchEntry(req, 280, 1, True, False))
    return Batch(entries)


def test_a_radix_prefix_shared_by_enough_sequences_goes_to_the_cascade():
    buckets = _buckets(max_seqs=16, pages_follow_context=False, cascade=True)
    x = build_step_inputs(plan_step(_sharing_batch(8), [0], 16, cascade=True), buckets)
    shared = x.meta.shared_prefix
    assert int(shared.length[0]) == 17 * 16
    assert shared.pages[:17].tolist() == list(range(1, 18)) and not shared.pages[17:].any()
    assert shared.seq_mask.tolist() == [True] * 8 + [False] * 8
    few = build_step_inputs(plan_step(_sharing_batch(7), [0], 16, cascade=True), buckets)
    assert int(few.meta.shared_prefix.length[0]) == 0
    assert not few.meta.shared_prefix.seq_mask.any()
    assert plan_step(_sharing_batch(8), [0], 16, cascade=False).shared_prefix is None
    plain = build_step_inputs(plan_step(_sharing_batch(8), [0], 16, cascade=False), _buckets())
    assert plain.meta.shared_prefix is None


def test_the_plan_carries_what_the_step_feeds_and_suppresses():
    """A decode whose last output is the in-flight sample reads it on device; min_new_tokens
    holds back stop ids and EOS; outputs sampled before a preemption count again."""
    req = Req("r", [5, 6, 7], SamplingParams(min_new_tokens=4, stop_token_ids=[9, 3]), seed=3,
              output_ids=[11, 12, -1], pages=[2, 5], num_computed=5, slot=2,
              outputs_at_admission=1, future_index=6)
    plan = plan_step(Batch([BatchEntry(req, 5, 1, True, False)]), [0], 4, cascade=False)
    assert plan.tokens == [-1] and plan.feed_from == [6] and plan.pages == [2, 5]
    assert plan.suppressed == {0: [0, 3, 9]} and plan.sample_index == [3]
    assert (plan.refed_first, plan.refed_last) == ([3], [4])
    x = build_step_inputs(plan, _buckets(page_size=4, max_seqs=4, max_pages_per_seq=8))
    assert x.tokens.tolist() == [0] and x.prev_index.tolist() == [6]
    assert np.asarray(x.sampling.suppress_ids)[0, :4].tolist() == [0, 3, 9, 2**31 - 1]
    # Prefill of the same request after preemption: position 3 is the re-fed first output.
    req.output_ids, req.num_computed = [11, 12], 0
    prefill = plan_step(Batch([BatchEntry(req, 0, 5, True, True)]), [0], 4, cascade=False)
    y = build_step_inputs(prefill, _buckets(page_size=4, max_seqs=4, max_pages_per_seq=8))
    assert y.token_is_output.tolist()[:5] == [False, False, False, True, False]


def _packed_one_by_one(plan, buckets: StepBuckets) -> dict:
    """What the vectorized packing must equal: each sequence written on its own."""
    ps, T = buckets.page_size, len(plan.tokens)
    rows = {"tokens": [], "prev_index": [], "positions": [], "slots": [], "token_slot": [],
            "token_is_output": [], "logits_indices": [], "kv_lens": [], "pages": []}
    t, first_page = 0, 0
    for i, n in enumerate(plan.lengths):
        start = plan.starts[i]
        pages = plan.pages[first_page:first_page + plan.num_pages[i]]
        first_page += plan.num_pages[i]
        for j in range(n):
            pos, last = start + j, j == n - 1
            fed = last and plan.feed_from[i] >= 0
            rows["tokens"].append(0 if fed else plan.tokens[t + j])
            rows["prev_index"].append(plan.feed_from[i] if fed else -1)
            rows["positions"].append(pos)
            rows["slots"].append(pages[pos // ps] * ps + pos % ps)
            rows["token_slot"].append(plan.slots[i])
            rows["token_is_output"].append(plan.refed_first[i] <= pos < plan.refed_last[i])
        t += n
        rows["logits_indices"].append(t - 1)
        rows["kv_lens"].append(start + n)
        rows["pages"].append(pages)
    assert t == T
    return rows


def test_vectorized_packing_equals_one_sequence_at_a_time():
    rng = np.random.default_rng(0)
    buckets = _buckets(page_size=4, max_seqs=16, max_pages_per_seq=32, max_step_tokens=256,
                       attention_budget=1 << 20, pages_follow_context=False)
    for trial in range(20):
        entries, next_page = [], 1
        for i in range(int(rng.integers(1, 12))):
            prompt = rng.integers(1, 500, int(rng.integers(1, 40))).tolist()
            outputs = rng.integers(1, 500, int(rng.integers(0, 20))).tolist()
            if outputs and rng.random() < 0.5:
                outputs[-1] = -1  # the step in flight's sample
            total = len(prompt) + len(outputs)
            decode = bool(outputs) and rng.random() < 0.6
            start = total - 1 if decode else int(rng.integers(0, total))
            length = total - start if decode else int(rng.integers(1, total - start + 1))
            n_pages = -(-(start + length) // 4)
            pages = list(range(next_page, next_page + n_pages))
            next_page += n_pages
            req = Req(f"r{trial}-{i}", prompt, SamplingParams(temperature=float(rng.random())),
                      seed=i, output_ids=outputs, pages=pages, slot=i,
                      outputs_at_admission=int(rng.integers(0, len(outputs) + 1)),
                      future_index=int(rng.integers(0, 8)))
            entries.append(BatchEntry(req, start, length, start + length == total, False))
        plan = plan_step(Batch(entries), [0], 4, cascade=False)
        x, want = build_step_inputs(plan, buckets), _packed_one_by_one(plan, buckets)
        n, T = len(entries), plan.num_tokens
        assert x.tokens[:T].tolist() == want["tokens"]
        assert x.prev_index[:T].tolist() == want["prev_index"]
        assert x.positions[:T].tolist() == want["positions"]
        assert x.meta.slots[:T].tolist() == want["slots"]
        assert x.token_slot[:T].tolist() == want["token_slot"]
        assert x.token_is_output[:T].tolist() == want["token_is_output"]
        assert x.logits_indices[:n].tolist() == want["logits_indices"]
        assert x.meta.kv_lens[:n].tolist() == want["kv_lens"]
        for i, pages in enumerate(want["pages"]):
            assert x.meta.page_indices[i].tolist() == pages + [0] * (len(x.meta.page_indices[i])
                                                                     - len(pages))
        temperature = np.asarray(x.sampling.temperature)[:n]
        assert np.allclose(temperature, [e.req.params.temperature for e in entries])
        # padding: the dummy slot, page 0, no sequence
        assert (x.token_slot[T:] == buckets.max_seqs).all() and not x.meta.slots[T:].any()
