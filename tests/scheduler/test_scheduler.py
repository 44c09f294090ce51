"""Scheduler behaviour against a fake model that returns a fixed next token (no JAX)."""

from __future__ import annotations

import itertools

from jaxengine.sampling_params import SamplingParams
from jaxengine.scheduler.req import FinishReason, Req
from jaxengine.scheduler.scheduler import Scheduler, SchedulerLimits

EOS = 2


def make_scheduler(**over) -> Scheduler:
    limits = dict(page_size=4, num_pages=65, max_running=8, chunk_tokens=32, max_context=512,
                  attention_budget=1 << 16)
    limits.update(over)
    return Scheduler(SchedulerLimits(**limits), {EOS}, stop_text=lambda req: None)


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
    assert sched.allocator.num_free == 16


def test_eos_stop_tokens_and_min_new_tokens():
    sched = make_scheduler()
    eos = make_req("eos", 4, max_new_tokens=50)
    ignore = make_req("ignore", 4, max_new_tokens=5, ignore_eos=True)
    stop_id = make_req("stop", 4, max_new_tokens=50, stop_token_ids=[9])
    late = make_req("late", 4, max_new_tokens=50, min_new_tokens=3)
    for r in (eos, ignore, stop_id, late):
        sched.add(r)
    counter = itertools.count()
    tokens = {"eos": lambda: EOS, "ignore": lambda: EOS, "stop": lambda: 9, "late": lambda: EOS}
    run_to_completion(sched, lambda req: (next(counter), tokens[req.rid]())[1])
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
    sched.process(batch, [7])
    assert sched.abort("a").finish_reason is FinishReason.ABORT
    assert sched.abort("b").finish_reason is FinishReason.ABORT
    assert sched.abort("missing") is None
    assert not sched.has_work and sched.allocator.num_free == 64
    sched.check_integrity()
