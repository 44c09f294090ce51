"""Grammar bookkeeping in the scheduler, against a scripted matcher (no JAX, no llguidance)."""

from __future__ import annotations

from jaxengine.scheduler.future import PLACEHOLDER
from jaxengine.scheduler.req import FinishReason
from tests.scheduler.test_scheduler import make_req, make_scheduler


class ScriptedMatcher:
    """Accepts the tokens in `allowed`; done once `done_after` tokens are in."""

    def __init__(self, allowed=frozenset(range(100)), done_after=10**9):
        self.allowed, self.done_after, self.seen = allowed, done_after, []

    def accept(self, token: int) -> bool:
        self.seen.append(token)
        return token in self.allowed

    @property
    def done(self) -> bool:
        return len(self.seen) >= self.done_after


def start(sched, req):
    sched.add(req)
    batch = sched.schedule()
    sched.commit(batch)
    return batch


def test_a_dead_end_finishes_cleanly_without_the_refused_token():
    sched = make_scheduler()
    req = make_req("a", 5, max_new_tokens=10)
    req.grammar = ScriptedMatcher(allowed={7})
    batch = start(sched, req)
    sched.process(batch, [7])
    batch = sched.schedule()
    sched.commit(batch)
    sched.process(batch, [8])  # sampled under an empty mask: refused
    assert req.finish_reason is FinishReason.STOP and req.output_ids == [7]
    assert not sched.has_work
    sched.check_integrity()


def test_a_complete_grammar_stops_the_request_even_with_ignore_eos():
    sched = make_scheduler()
    req = make_req("a", 5, max_new_tokens=10, ignore_eos=True)
    req.grammar = ScriptedMatcher(done_after=2)
    sched.add(req)
    for token in (7, 9):
        batch = sched.schedule()
        sched.commit(batch)
        sched.process(batch, [token])
    assert req.finish_reason is FinishReason.STOP and req.output_ids == [7, 9]
    assert req.matched_stop is None


def test_jump_forward_drops_the_sample_in_flight_and_prefills_the_forced_tokens():
    sched = make_scheduler()
    req = make_req("a", 5, max_new_tokens=10)
    req.grammar = ScriptedMatcher()
    first = start(sched, req)
    second = sched.schedule()  # overlap: dispatched before the first step's token is known
    sched.commit(second)
    assert req.output_ids == [PLACEHOLDER, PLACEHOLDER]
    sched.process(first, [7])
    sched.jump_forward(req, [20, 21, 22])
    assert req.output_ids == [7, 20, 21, 22] and not second.entries[0].samples
    assert sched.process(second, [99]) == []  # its sample is dropped
    third = sched.schedule()
    (entry,) = third.entries
    assert (entry.start, entry.length, entry.samples) == (6, 3, True)
    assert req.num_steps == 2


def test_jump_forward_stops_at_max_new_tokens():
    sched = make_scheduler()
    req = make_req("a", 5, max_new_tokens=3)
    req.grammar = ScriptedMatcher()
    batch = start(sched, req)
    sched.process(batch, [7])
    sched.jump_forward(req, [20, 21, 22])
    assert req.output_ids == [7, 20, 21] and req.finish_reason is FinishReason.LENGTH
    assert not sched.has_work
    sched.check_integrity()
