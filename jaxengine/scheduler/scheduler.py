"""Scheduler: continuous batching with chunked prefill, a radix prefix cache, and preemption.

Each step it builds one ragged Batch: a token for every running decode, then prefill chunks
(unfinished ones first, then newly admitted requests, in the order of the schedule policy)
under a token budget. An admitted request reuses the KV pages of its longest cached prefix and
prefills only the rest. When the KV pool runs out it first evicts unused cached pages, then
preempts the most recently arrived running request: its computed pages go to the cache and it
goes back to the front of the queue, to be recomputed from its prompt and outputs later.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from jaxengine.sampling_params import SamplingParams
from jaxengine.scheduler.batch import Batch, BatchEntry, StepPlan, plan_step
from jaxengine.scheduler.future import InFlight
from jaxengine.scheduler.page_allocator import PageAllocator
from jaxengine.scheduler.policy import order_waiting
from jaxengine.scheduler.radix_cache import RadixCache
from jaxengine.scheduler.req import FinishReason, Req


@dataclass(frozen=True)
class SchedulerLimits:
    page_size: int
    num_pages: int
    max_running: int
    chunk_tokens: int            # token budget of one step
    max_context: int             # prompt + output tokens of one request
    # Bound on a step's attention work, None for none. With `gathers_pages` (the reference
    # attention, where every token reads the longest context's pages) it bounds (tokens in
    # the step) x (longest context); otherwise the work prefill chunks add, sum of (chunk
    # tokens) x (context), so that a long prompt never stalls the decodes it shares steps with
    # more than a fresh full chunk does.
    attention_budget: int | None = None
    gathers_pages: bool = False
    radix_cache: bool = True
    policy: str = "fcfs"
    cascade: bool = False        # the attention takes a shared radix prefix (kernels only)


class Scheduler:
    def __init__(self, limits: SchedulerLimits, eos_ids: set[int],
                 stop_text: Callable[[list[int], SamplingParams], str | None]):
        self.limits = limits
        self.allocator = PageAllocator(limits.num_pages)
        self.waiting: deque[Req] = deque()
        self.running: list[Req] = []
        self.eos_ids = eos_ids
        self.stop_text = stop_text   # (output ids, params) -> the stop string they end with
        self._free_slots = list(range(limits.max_running - 1, -1, -1))
        self.cache = RadixCache(limits.page_size) if limits.radix_cache else None
        self._rng = random.Random(0)
        self.prompt_tokens_total = 0
        self.cached_tokens_total = 0
        self.preemptions_total = 0
        self.in_flight = InFlight()

    # ---- requests in and out ------------------------------------------------------------
    def add(self, req: Req) -> None:
        self.waiting.append(req)

    def abort(self, rid: str) -> Req | None:
        for req in list(self.waiting):
            if req.rid == rid:
                self.waiting.remove(req)
                req.finish_reason = FinishReason.ABORT
                return req
        for req in self.running:
            if req.rid == rid:
                req.finish_reason = FinishReason.ABORT
                self._release(req)
                return req
        return None

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- building a step ----------------------------------------------------------------
    def schedule(self) -> Batch | None:
        entries: list[BatchEntry] = []
        budget = self.limits.chunk_tokens
        for req in self._decodes_with_room():
            entries.append(BatchEntry(req, req.num_computed, 1, True, False))
            budget -= 1
        for req in [r for r in self.running if r.in_prefill]:
            budget = self._add_chunk(req, entries, budget, reset=False)
        if self.waiting and len(self.running) < self.limits.max_running and budget > 0:
            self.waiting = deque(order_waiting(list(self.waiting), self.limits.policy,
                                               self.cache, self._rng))
        while self.waiting and len(self.running) < self.limits.max_running and budget > 0:
            req = self.waiting[0]
            self._reuse_cached_prefix(req)
            before = len(entries)
            budget = self._add_chunk(req, entries, budget, reset=True)
            if len(entries) == before:
                self._release_pages(req, keep_computed=False)
                break
            self.waiting.popleft()
            req.slot = self._free_slots.pop()
            req.outputs_at_admission = len(req.output_ids)
            self.running.append(req)
            if req.cached_tokens < 0:  # first admission: count it for the hit rate
                req.cached_tokens = req.num_computed
                self.prompt_tokens_total += len(req.prompt_ids)
                self.cached_tokens_total += req.num_computed
        return Batch(entries) if entries else None

    def _reuse_cached_prefix(self, req: Req) -> None:
        """Point the request at the pages of its longest cached prefix and lock them.

        At least one token is left to compute, for the logits to sample from, and for prompt
        logprobs every position from the one before the first reported. Requests with
        penalties skip the cache: their penalty state is built from the tokens they compute.
        """
        if self.cache is None or req.uses_penalties:
            return
        end = req.num_tokens - 1
        if req.computes_input_logprobs:  # its logits are needed from the position before
            end = min(end, max(req.input_logprob_start - 1, 0))
        match = self.cache.match_prefix(req.all_ids[:end])
        self.cache.lock(match.node)
        req.cache_node = match.node
        req.pages = list(match.pages)
        req.num_cached_pages = match.num_pages
        req.num_computed = match.num_pages * self.limits.page_size

    def _decodes_with_room(self) -> list[Req]:
        """Running decodes, each with a page for its next token; preempts when pages run out.
        A request whose token in flight is its last (by length) is not decoded again."""
        decodes = [r for r in self.running if not r.in_prefill and not self._length_done(r)]
        ready = []
        for req in sorted(decodes, key=lambda r: r.arrival_time):
            if req.finished or req.slot < 0:  # a slot: still running (not preempted)
                continue
            while not self._grow(req, req.num_computed + 1):
                victim = max(self.running, key=lambda r: r.arrival_time)
                self._preempt(victim)
                if victim is req:
                    break
            if req.slot >= 0:
                ready.append(req)
        return ready

    def _add_chunk(self, req: Req, entries: list[BatchEntry], budget: int, reset: bool) -> int:
        start = req.num_computed
        chunk = min(req.num_pending, budget)
        while chunk > 0 and self._attention_work(entries, start, chunk) > \
                (self.limits.attention_budget or float("inf")):
            chunk //= 2
        if chunk <= 0 or (chunk < req.num_pending and chunk < self.limits.page_size and entries):
            return budget
        if not self._grow(req, start + chunk):
            return budget
        samples = start + chunk == req.num_tokens
        entries.append(BatchEntry(req, start, chunk, samples, reset))
        return budget - chunk

    def _attention_work(self, entries: list[BatchEntry], start: int, chunk: int) -> int:
        """What the attention budget bounds, with one more chunk [start, start + chunk)."""
        if self.limits.gathers_pages:
            tokens = sum(e.length for e in entries) + chunk
            return tokens * max([e.start + e.length for e in entries] + [start + chunk])
        return sum(e.length * (e.start + e.length) for e in entries if e.length > 1) + \
            chunk * (start + chunk)

    def _grow(self, req: Req, num_tokens: int) -> bool:
        """Own enough pages for num_tokens tokens; False (nothing taken) if the pool is short."""
        need = -(-num_tokens // self.limits.page_size) - len(req.pages)
        if need <= 0:
            return True
        short = need - self.allocator.num_free
        if short > 0 and self.cache is not None:
            self.allocator.free(self.cache.evict(short))
        pages = self.allocator.alloc(need)
        if pages is None:
            return False
        req.pages.extend(pages)
        return True

    def _preempt(self, req: Req) -> None:
        self._release(req)
        req.num_preemptions += 1
        self.preemptions_total += 1
        self.waiting.appendleft(req)

    def _release(self, req: Req) -> None:
        self._release_pages(req, keep_computed=True)
        if req in self.running:
            self.running.remove(req)
            self._free_slots.append(req.slot)
            req.slot = -1

    def _release_pages(self, req: Req, keep_computed: bool) -> None:
        """Give back the request's pages: its computed whole pages go to the cache (if on
        and keep_computed), the rest to the free list; the cache lock is dropped."""
        pages, cached = req.pages, req.num_cached_pages
        if self.cache is not None and keep_computed:
            full = req.num_computed // self.limits.page_size
            _, duplicates = self.cache.insert(req.all_ids, pages[:full])
            self.allocator.free(duplicates + pages[max(full, cached):])
        else:
            self.allocator.free(pages[cached:])
        if req.cache_node is not None:
            self.cache.unlock(req.cache_node)
        req.pages, req.num_cached_pages, req.cache_node, req.num_computed = [], 0, None, 0

    def _cache_computed_pages(self, req: Req) -> None:
        """Mid-prefill: hand the pages computed so far to the cache so other requests can
        reuse them, and hold the tree's copies instead."""
        full = req.num_computed // self.limits.page_size
        if self.cache is None or req.cache_node is None or full <= req.num_cached_pages:
            return
        node, duplicates = self.cache.insert(req.all_ids, req.pages[:full])
        self.cache.lock(node)
        self.cache.unlock(req.cache_node)
        req.pages[:full] = self.cache.match_prefix(req.all_ids[:full * self.limits.page_size]).pages
        self.allocator.free(duplicates)
        req.cache_node, req.num_cached_pages = node, full

    def flush_cache(self) -> bool:
        """Drop every cached page; refused (False) while any request is queued or running."""
        if self.has_work:
            return False
        if self.cache is not None:
            self.allocator.free(self.cache.reset())
        return True

    def _length_done(self, req: Req) -> bool:
        return len(req.output_ids) >= req.params.max_new_tokens or \
            req.num_tokens >= self.limits.max_context

    def plan(self, batch: Batch) -> StepPlan:
        """What the runtime needs of `batch`, before it is committed."""
        return plan_step(batch, self.eos_ids, self.limits.page_size, self.limits.cascade)

    # ---- after the step (the overlap contract: jaxengine/scheduler/future.py) ------------
    def commit(self, batch: Batch) -> None:
        """The step was dispatched: its KV counts as computed and each sampling entry holds a
        PLACEHOLDER output until `process` brings the real token."""
        for entry in batch.entries:
            entry.req.num_computed = entry.start + entry.length
            entry.req.num_steps += 1
            if not entry.samples:
                self._cache_computed_pages(entry.req)
        self.in_flight.commit(batch)

    def process(self, batch: Batch, sampled: list[int]) -> list[int]:
        """Write in the step's sampled tokens and finish requests that are done; returns the
        indices of the entries whose request got a new token or finished."""
        touched = []
        for i, (entry, token) in enumerate(zip(batch.entries, sampled)):
            req = entry.req
            if not entry.samples or req.finished:
                continue  # a prefill chunk, or aborted while the step ran
            self.in_flight.resolve(entry, token)
            self._check_finished(req, token, entry.out_index + 1)
            if req.finished:
                self._drop_finished(req)
            touched.append(i)
        return touched

    def _drop_finished(self, req: Req) -> None:
        if req in self.running:
            self._release(req)
        elif req in self.waiting:  # preempted while its step ran
            self.waiting.remove(req)

    def jump_forward(self, req: Req, tokens: list[int]) -> None:
        """Append tokens the grammar forces after the request's last output; the next step
        computes their K/V as one chunk and samples after them. A sample already in flight
        for the request is dropped: it predicts the first forced token, which is known."""
        if not tokens or req.finished:
            return
        self.in_flight.cancel(req)
        room = min(req.params.max_new_tokens - len(req.output_ids),
                   self.limits.max_context - req.num_tokens)
        req.output_ids.extend(tokens[:room])
        if len(tokens) >= room:
            req.finish_reason = FinishReason.LENGTH
        elif req.grammar.done:
            req.finish_reason = FinishReason.STOP
        if req.finished:
            self._drop_finished(req)

    def _check_finished(self, req: Req, token: int, n: int) -> None:
        """Decide whether the request ends at its n-th output (`token`). A placeholder after it
        (a step already in flight) is dropped when it does: no token past the stop."""
        p = req.params
        if p.max_new_tokens == 0:  # prefill only (prompt logprobs): the sample is dropped
            req.finish_reason = FinishReason.LENGTH
            del req.output_ids[n - 1:]
            return
        if req.grammar is not None and not req.grammar.accept(token):
            # A dead end: no token was allowed, and this one is not part of the output. If
            # the backend failed instead (a limit hit), the output breaks the grammar: abort.
            failure = getattr(req.grammar, "failure", None)
            req.finish_reason = FinishReason.STOP if failure is None else FinishReason.ABORT
            if failure is not None:
                req.abort_message = (f"the grammar backend failed after {n - 1} output "
                                     f"tokens: {failure}")
            del req.output_ids[n - 1:]
            return
        if n >= p.min_new_tokens:
            if token in (p.stop_token_ids or ()) or (not p.ignore_eos and token in self.eos_ids):
                req.finish_reason, req.matched_stop = FinishReason.STOP, token
            elif p.stops_on_text:
                matched = self.stop_text(req.output_ids[:n], p)
                if matched is not None:
                    req.finish_reason, req.matched_stop = FinishReason.STOP, matched
        if req.finish_reason is None and req.grammar is not None and req.grammar.done:
            req.finish_reason = FinishReason.STOP  # the grammar is complete
        context = len(req.prompt_ids) + n
        if req.finish_reason is None and (n >= p.max_new_tokens or
                                          context >= self.limits.max_context):
            req.finish_reason = FinishReason.LENGTH
        if req.finish_reason is not None:
            del req.output_ids[n:]

    def check_integrity(self) -> None:
        """Every page free, cached, or owned by one running request; slots likewise."""
        cached = self.cache.all_pages() if self.cache is not None else []
        self.allocator.check_integrity([r.pages[r.num_cached_pages:] for r in self.running]
                                       + [cached])
        shared = {p for r in self.running for p in r.pages[:r.num_cached_pages]}
        assert shared <= set(cached), "a request shares a page the cache does not hold"
        assert all(not r.pages and r.cache_node is None for r in self.waiting), "queued pages"
        slots = [r.slot for r in self.running] + self._free_slots
        assert sorted(slots) == list(range(self.limits.max_running)), "slot leak"
