"""Scheduler behaviour against a fake model that returns a fixed next token (no JAX)."""

from __future__ import annotations

from jaxengine.sampling_params import SamplingParams
from jaxengine.scheduler.req import FinishReason, Req
from jaxengine.scheduler.scheduler import Scheduler, SchedulerLimits

EOS = 2


def make_scheduler(**over) -> Scheduler:
    limits = dict(page_size=4, num_pages=65, max_running=8, chunk_tokens=32, max_context=512,
                  attention_budget=1 << 16)
    limits.update(over)
    return Scheduler(SchedulerLimits(**limits), {EOS}, stop_text=lambda ids, params: None)


def make_req(rid: str, n_prompt: int, **params) -> Req:
    return Req(rid, list(range(10, 10 + n_prompt)), SamplingParams(**params), seed=0)


def run_to_completion(sched: Scheduler, next_token=lambda req: 7, max_steps=10_000):
    steps = []
    for _ in range(max_steps):
        batch = sched.schedule()
        if batch is None:
            break
        sched.check_integrity()
        assert batch.num_tokens <= sched.limits.chunk_tokens
        steps.append(batch)
        sched.commit(batch)
        sched.process(batch, [next_token(e.req) for e in batch.entries])
        sched.check_integrity()
    assert not sched.has_work
    return steps


def test_long_prompt_is_prefilled_in_chunks_then_decoded():
    sched = make_scheduler()
    req = make_req("a", 100, max_new_tokens=3)
    sched.add(req)
    steps = run_to_completion(sched)
    chunks = [b.entries[0].length for b in steps]
    assert chunks[:4] == [32, 32, 32, 4] and chunks[4:] == [1, 1]
    assert req.output_ids == [7, 7, 7] and req.finish_reason is FinishReason.LENGTH


def test_decodes_and_prefills_share_a_step():
    sched = make_scheduler()
    sched.add(make_req("a", 5, max_new_tokens=10))
    batch = sched.schedule()
    sched.commit(batch)
    sched.process(batch, [7])
    sched.add(make_req("b", 20, max_new_tokens=2))
    batch = sched.schedule()
    assert [(e.req.rid, e.length) for e in batch.entries] == [("a", 1), ("b", 20)]


def test_preemption_when_pages_run_out_still_finishes_everything():
    sched = make_scheduler(num_pages=17)  # 16 usable pages = 64 tokens
    reqs = [make_req(str(i), 12, max_new_tokens=20) for i in range(6)]
    for r in reqs:
        sched.add(r)
    run_to_completion(sched)
    assert all(len(r.output_ids) == 20 for r in reqs)
    assert sum(r.num_preemptions for r in reqs) > 0
    assert sched.allocator.num_free + sched.cache.num_cached_pages == 16


def test_eos_stop_tokens_and_min_new_tokens():
    sched = make_scheduler()
    eos = make_req("eos", 4, max_new_tokens=50)
    ignore = make_req("ignore", 4, max_new_tokens=5, ignore_eos=True)
    stop_id = make_req("stop", 4, max_new_tokens=50, stop_token_ids=[9])
    late = make_req("late", 4, max_new_tokens=50, min_new_tokens=3)
    for r in (eos, ignore, stop_id, late):
        sched.add(r)
    tokens = {"eos": EOS, "ignore": EOS, "stop": 9, "late": EOS}
    run_to_completion(sched, lambda req: tokens[req.rid])
    assert eos.output_ids == [EOS] and eos.matched_stop == EOS
    assert len(ignore.output_ids) == 5 and ignore.finish_reason is FinishReason.LENGTH
    assert stop_id.output_ids == [9] and stop_id.matched_stop == 9
    assert len(late.output_ids) == 3


def test_max_running_requests_caps_the_batch():
    sched = make_scheduler(max_running=3)
    for i in range(7):
        sched.add(make_req(str(i), 3, max_new_tokens=4))
    steps = run_to_completion(sched)
    assert max(len(b.entries) for b in steps) == 3


def test_abort_frees_pages_of_running_and_waiting_requests():
    sched = make_scheduler(max_running=1)
    sched.add(make_req("a", 10, max_new_tokens=50))
    sched.add(make_req("b", 10, max_new_tokens=50))
    batch = sched.schedule()
    sched.commit(batch)
    sched.process(batch, [7])
    assert sched.abort("a").finish_reason is FinishReason.ABORT
    assert sched.abort("b").finish_reason is FinishReason.ABORT
    assert sched.abort("missing") is None
    assert not sched.has_work
    assert sched.allocator.num_free + sched.cache.num_cached_pages == 64
    assert sched.flush_cache() and sched.allocator.num_free == 64
    sched.check_integrity()


def test_a_repeated_prompt_reuses_its_cached_pages():
    sched = make_scheduler()
    first = make_req("a", 30, max_new_tokens=2)
    sched.add(first)
    run_to_completion(sched)
    again = make_req("b", 30, max_new_tokens=2)
    sched.add(again)
    steps = run_to_completion(sched)
    # 29 of 30 prompt tokens are matchable; whole pages of 4 give 28; 2 left to prefill.
    assert again.cached_tokens == 28 and steps[0].entries[0].length == 2
    assert sched.cached_tokens_total == 28 and sched.prompt_tokens_total == 60


def test_disabled_cache_reuses_nothing():
    sched = make_scheduler(radix_cache=False)
    for rid in "ab":
        sched.add(make_req(rid, 30, max_new_tokens=2))
        run_to_completion(sched)
    assert sched.cached_tokens_total == 0 and sched.allocator.num_free == 64


def test_cache_is_evicted_before_anything_is_preempted():
    sched = make_scheduler(num_pages=17)  # 64 tokens
    for i in range(3):  # fill the cache with three unrelated 20-token prompts
        sched.add(Req(str(i), [100 + i] * 20, SamplingParams(max_new_tokens=1), seed=0))
        run_to_completion(sched)
    assert sched.cache.num_cached_pages == 15
    big = make_req("big", 40, max_new_tokens=8)
    sched.add(big)
    run_to_completion(sched)
    assert big.num_preemptions == 0 and len(big.output_ids) == 8


def test_200_requests_sharing_prefixes_in_a_tiny_pool_all_finish_without_leaks():
    import random

    rng = random.Random(0)
    sched = make_scheduler(num_pages=41, max_running=6, chunk_tokens=24)  # 160 tokens of KV
    prefixes = [[rng.randrange(50) for _ in range(rng.randrange(4, 40))] for _ in range(6)]
    reqs = []
    for i in range(200):
        prompt = rng.choice(prefixes) + [rng.randrange(50) for _ in range(rng.randrange(1, 12))]
        reqs.append(Req(str(i), prompt, SamplingParams(max_new_tokens=rng.randrange(1, 10),
                                                       ignore_eos=True), seed=0))
    for r in reqs[:100]:
        sched.add(r)
    run_to_completion(sched, lambda req: rng.randrange(50))
    for r in reqs[100:]:
        sched.add(r)
    run_to_completion(sched, lambda req: rng.randrange(50))
    assert all(r.finished and len(r.output_ids) == r.params.max_new_tokens for r in reqs)
    assert sched.cached_tokens_total > 0
    assert sched.allocator.num_free + sched.cache.num_cached_pages == 40
    for policy in ("lpm", "dfs-weight", "random"):
        other = make_scheduler(num_pages=41, max_running=6, chunk_tokens=24, policy=policy)
        for r in reqs[:60]:
            other.add(Req(r.rid, r.prompt_ids, r.params, seed=0))
        run_to_completion(other)
        assert other.allocator.num_free + other.cache.num_cached_pages == 40


def test_lpm_and_dfs_weight_admit_requests_with_cached_prefixes_first():
    import random

    from jaxengine.scheduler.policy import order_waiting

    sched = make_scheduler()
    shared = list(range(100, 124))
    sched.add(Req("warm", shared + [1], SamplingParams(max_new_tokens=1), seed=0))
    run_to_completion(sched)
    cold = Req("cold", list(range(500, 530)), SamplingParams(), seed=0)
    hot = Req("hot", shared + [7, 8], SamplingParams(), seed=0)
    other = Req("other", list(range(600, 630)), SamplingParams(), seed=0)
    hot2 = Req("hot2", shared + [9], SamplingParams(), seed=0)
    queue = [cold, hot, other, hot2]
    rng = random.Random(0)
    assert [r.rid for r in order_waiting(queue, "fcfs", sched.cache, rng)] == \
        ["cold", "hot", "other", "hot2"]
    assert [r.rid for r in order_waiting(queue, "lpm", sched.cache, rng)] == \
        ["hot", "hot2", "cold", "other"]
    dfs = [r.rid for r in order_waiting(queue, "dfs-weight", sched.cache, rng)]
    assert dfs.index("hot2") == dfs.index("hot") + 1
