"""EngineCore: the scheduler loop around the ModelRunner, run in its own process.

It speaks token ids only; the messages it exchanges are in jaxengine/core/messages.py.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxengine.config import EngineConfig
from jaxengine.core.messages import AddRequest, TokenOutput
from jaxengine.core.stats import CoreCounters, StepTimer, compile_counter
from jaxengine.models.checkpoint import load_checkpoint
from jaxengine.runtime.model_runner import ModelRunner
from jaxengine.sampling_params import STOP_REGEX_WINDOW, SamplingParams
from jaxengine.structured import GrammarBackend, batch_bitmask, needs_bitmask

if TYPE_CHECKING:
    import jax

    from jaxengine.runtime.prompt_logprobs import PromptLogprobs
    from jaxengine.runtime.sampler import TopLogprobs
from jaxengine.scheduler.batch import Batch
from jaxengine.scheduler.future import PLACEHOLDER
from jaxengine.scheduler.req import FinishReason, Req
from jaxengine.scheduler.scheduler import Scheduler, SchedulerLimits

log = logging.getLogger(__name__)


def eos_token_ids(hf_config: dict[str, Any], tokenizer) -> set[int]:
    ids = hf_config.get("eos_token_id")
    ids = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class EngineCore:
    def __init__(self, config: EngineConfig, mesh=None, checkpoint=None):
        """`mesh`: this replica's ("tp",) devices (None: the default device); `checkpoint`:
        one already loaded (data-parallel replicas share it)."""
        if checkpoint is None:
            checkpoint = load_checkpoint(config.model.model_path, config.model.tokenizer_path,
                                     config.model.load_format)
        self.tokenizer = checkpoint.tokenizer
        self.compiles = compile_counter()
        self.runner = ModelRunner(config, checkpoint, mesh)
        if not config.server.skip_server_warmup:
            self.runner.warmup()
        self.eos_ids = eos_token_ids(checkpoint.hf_config, self.tokenizer)
        r = self.runner
        self.max_context = r.max_context
        limits = SchedulerLimits(
            page_size=r.page_size, num_pages=r.num_pages,
            max_running=config.scheduler.max_running_requests,
            chunk_tokens=config.scheduler.chunked_prefill_size,
            max_context=self.max_context,
            attention_budget=r.attention_budget, gathers_pages=r.backend == "reference",
            radix_cache=not config.cache.disable_radix_cache,
            policy=config.scheduler.schedule_policy, cascade=r.buckets.cascade)
        self.scheduler = Scheduler(limits, self.eos_ids, self._matched_stop_text)
        self._sorted_eos = sorted(self.eos_ids)
        self.overlap = not config.scheduler.disable_overlap_schedule
        self._in_flight: tuple | None = None
        self.timer = StepTimer()
        self._step_start: float | None = None  # of the last step, while steps follow on
        self.counters = CoreCounters()
        self.max_queued = config.server.max_queued_requests
        self.grammar = None if config.structured.grammar_backend == "none" else \
            GrammarBackend(self.tokenizer, r.arch.vocab_size, self._sorted_eos)
        # Requests whose grammar compiles on a thread, by rid (arrival order).
        self._compiling: dict[str, tuple[Req, Future]] = {}
        self._compiler: ThreadPoolExecutor | None = None

    def info(self) -> dict[str, Any]:
        r = self.runner
        return {"device": f"{r.device.device_kind} ({r.platform})", "dtype": str(r.dtype.name),
                # What a request may hold (the pool can cap the model's context).
                "context_length": r.max_context, "model_context_length": r.context_length,
                "max_total_tokens": r.max_total_tokens,
                "num_pages": r.num_pages, "page_size": r.page_size,
                "architecture": r.arch.architecture, "vocab_size": r.arch.vocab_size,
                "eos_token_ids": self._sorted_eos, "warmup_seconds": r.warmup_seconds,
                "warmup_programs": r.warmup_programs}

    def add_request(self, add: AddRequest) -> TokenOutput | None:
        """Queue a request; an immediate TokenOutput if it can never run. A request with a
        grammar waits while its matcher compiles on a thread (`_admit_compiled`), so that a
        large grammar never stalls the step loop."""
        n_prompt = len(add.prompt_ids)
        if n_prompt >= self.max_context:
            self.counters.finished(add.rid, aborted=True)
            return TokenOutput(add.rid, [], [], "abort", None, n_prompt, abort_status=400,
                               abort_message=f"the prompt has {n_prompt} tokens; at most "
                               f"{self.max_context - 1} fit")
        if self._queue_full():
            self.counters.finished(add.rid, aborted=True)
            return TokenOutput(add.rid, [], [], "abort", None, n_prompt, abort_status=503)
        req = Req(add.rid, list(add.prompt_ids), add.params, add.seed)
        self.counters.arrived(add.rid)
        if add.params.grammar is None:
            self.scheduler.add(req)
            return None
        if self.grammar is None:
            return self._abort_new(req, "structured output is off (--grammar-backend none)")
        if self._compiler is None:
            self._compiler = ThreadPoolExecutor(2, thread_name_prefix="jaxengine-grammar")
        self._compiling[req.rid] = (req, self._compiler.submit(self.grammar.matcher,
                                                               *add.params.grammar))
        return None

    def _abort_new(self, req: Req, message: str, status: int = 400) -> TokenOutput:
        self.counters.finished(req.rid, aborted=True)
        return TokenOutput(req.rid, [], [], "abort", None, len(req.prompt_ids),
                           abort_status=status, abort_message=message)

    def _queue_full(self) -> bool:
        """Past --max-queued-requests: only requests that cannot start at once count as
        queued (free running slots take the first waiting ones), so 0 means "never wait"."""
        if self.max_queued is None:
            return False
        s = self.scheduler
        free_slots = max(s.limits.max_running - len(s.running), 0)
        return len(s.waiting) + len(self._compiling) >= self.max_queued + free_slots

    def _admit_compiled(self) -> list[TokenOutput]:
        """Queue the requests whose grammar has compiled (in arrival order)."""
        outputs = []
        for rid, (req, future) in list(self._compiling.items()):
            if not future.done():
                continue
            del self._compiling[rid]
            try:
                req.grammar = future.result()
            except Exception as e:  # the API process checked it, so this is rare
                log.warning("request %s: its grammar does not compile: %s", rid, e)
                outputs.append(self._abort_new(req, str(e)))
                continue
            out = self._start_grammar(req)
            if out is None or out.finish_reason is None:
                self.scheduler.add(req)
            if out is not None:
                outputs.append(out)
        return outputs

    def _start_grammar(self, req: Req) -> TokenOutput | None:
        """With jump-forward, a grammar request's first output is the text the grammar forces
        from the start (computed with the prompt, in its prefill)."""
        n_prompt = len(req.prompt_ids)
        forced = req.grammar.jump_forward() if req.params.jump_forward else []
        if not forced:
            return None
        room = min(req.params.max_new_tokens, self.max_context - n_prompt)
        req.output_ids = forced[:room]
        reason = "length" if len(forced) >= room else "stop" if req.grammar.done else None
        self.counters.generated(len(req.output_ids))
        if reason is not None:
            self.counters.finished(req.rid, aborted=False)
        return TokenOutput(req.rid, list(req.output_ids), [0.0] * len(req.output_ids), reason,
                           None, n_prompt, top_logprobs=_forced_top(req, req.output_ids))

    def abort(self, rid: str) -> TokenOutput | None:
        compiling = self._compiling.pop(rid, None)
        if compiling is not None:
            compiling[1].cancel()  # a compile already running finishes and is dropped
        req = compiling[0] if compiling is not None else self.scheduler.abort(rid)
        if req is None:
            return None
        self.counters.finished(rid, aborted=True)
        return TokenOutput(rid, [], [], FinishReason.ABORT.value, None, len(req.prompt_ids))

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or self._in_flight is not None or bool(self._compiling)

    @property
    def idle(self) -> bool:
        """Nothing to step: at most grammars compiling (the loop then waits a little)."""
        return not self.scheduler.has_work and self._in_flight is None

    def step(self) -> list[TokenOutput]:
        """Schedule and dispatch one step; return the outputs of the step before it (overlap)
        or of this one. With overlap, the host schedules step N+1 and prepares its inputs
        while the device still runs step N; tokens step N+1 feeds from step N stay on device."""
        t0 = time.perf_counter()
        if self._step_start is not None:  # back to back: the loop's IPC since is host time too
            self.timer.record(t0 - self._step_start)
        launched = None
        outputs: list[TokenOutput] = self._admit_compiled() if self._compiling else []
        batch = self.scheduler.schedule()
        if batch is not None:
            plan = self.scheduler.plan(batch)
            inputs = self.runner.prepare(plan)
            spans = plan.logprob_spans
            if needs_bitmask(batch.entries):
                # The bitmask needs the tokens of the step in flight: take them (advancing the
                # grammars) while the device runs this step's forward, then sample.
                logits, prompt = self.runner.forward(inputs)
                self.scheduler.commit(batch)
                outputs += self._drain()
                mask = batch_bitmask(batch.entries, len(inputs.logits_indices),
                                     self.runner.arch.vocab_size)
                launched = (batch, spans, *self.runner.sample(logits, inputs, mask), prompt)
            else:
                launched = (batch, spans, *self.runner.run(inputs))
                self.scheduler.commit(batch)
            self.counters.scheduled([e.req.rid for e in batch.entries])
        done, self._in_flight = (self._in_flight, launched) if self.overlap else (launched, None)
        outputs += self._finish(*done) if done is not None else []
        self._step_start = t0 if not self.idle else None
        if self._step_start is None:
            self.timer.record(time.perf_counter() - t0)
        return outputs

    def _drain(self) -> list[TokenOutput]:
        done, self._in_flight = self._in_flight, None
        return self._finish(*done) if done is not None else []

    def _finish(self, batch: Batch, spans: list[tuple[int, int, int]], tokens: jax.Array,
                logprobs: jax.Array, top: TopLogprobs, prompt: PromptLogprobs
                ) -> list[TokenOutput]:
        n = len(batch.entries)
        t0 = time.perf_counter()
        tokens, logprobs = np.asarray(tokens)[:n].tolist(), np.asarray(logprobs)[:n].tolist()
        # The alternatives cross to the host only for steps where someone asked for them.
        entries = batch.entries
        tops: list | None = None
        id_values: list | None = None
        if any(e.req.params.return_logprob for e in entries):
            if any(_top_num(e.req) for e in entries):
                tops = list(zip(np.asarray(top.ids)[:n].tolist(),
                                np.asarray(top.values)[:n].tolist()))
            if any(_asked_ids(e.req) for e in entries):
                id_values = np.asarray(top.id_values)[:n].tolist()
        if spans:
            _store_input_logprobs(entries, spans, prompt)
        self.timer.record_wait(time.perf_counter() - t0)
        touched = self.scheduler.process(batch, tokens)
        for i in touched:
            req = entries[i].req
            if req.grammar is not None and req.params.jump_forward and not req.finished:
                self.scheduler.jump_forward(req, req.grammar.jump_forward())
        # Per request only what differs: this runs for every running request every step.
        outputs, generated, counters = [], 0, self.counters
        for i in touched:
            entry = entries[i]
            req = entry.req
            # The sampled token, then any forced ones (probability 1 under the grammar).
            new_ids = req.output_ids[entry.out_index:]
            if new_ids and new_ids[-1] == PLACEHOLDER:
                new_ids.pop()
            n_new = len(new_ids)
            new_logprobs = [logprobs[i]] + [0.0] * (n_new - 1) if n_new else []
            new_top = None
            if tops is not None and n_new and (k := _top_num(req)):
                ids, values = tops[i]
                new_top = [list(zip(ids[:k], values[:k]))] + _forced_top(req, new_ids[1:])
            reason = req.finish_reason
            message = req.abort_message
            outputs.append(TokenOutput(
                req.rid, new_ids, new_logprobs, None if reason is None else reason.value,
                req.matched_stop, len(req.prompt_ids), max(req.cached_tokens, 0),
                counters.take_queue_time(req.rid), None if message is None else 400, message,
                req.num_steps, new_top))
            if id_values is not None and n_new and (asked := _asked_ids(req)):
                outputs[-1].ids_logprobs = [id_values[i][:len(asked)]] + [
                    [0.0 if t == forced else -math.inf for t in asked] for forced in new_ids[1:]]
            if req.computes_input_logprobs:  # its prefill is done: they are all in
                req.input_logprobs_sent = True
                out = outputs[-1]
                out.input_logprobs, out.input_top, out.input_ids_logprobs = \
                    req.input_logprobs, req.input_top, req.input_ids_logprobs
            generated += n_new
            if reason is not None:
                counters.finished(req.rid, aborted=reason is FinishReason.ABORT)
        counters.generated(generated)
        return outputs

    def stats(self) -> dict[str, Any]:
        """Live counters for /get_server_info and metrics."""
        s = self.scheduler
        cached_pages = s.cache.num_cached_pages if s.cache is not None else 0
        used_pages = s.allocator.num_pages - 1 - s.allocator.num_free - cached_pages
        return {"num_running_reqs": len(s.running),
                "num_queue_reqs": len(s.waiting) + len(self._compiling),
                "num_used_tokens": used_pages * s.limits.page_size,
                "num_cached_tokens": cached_pages * s.limits.page_size,
                "prompt_tokens_total": s.prompt_tokens_total,
                "cached_tokens_total": s.cached_tokens_total,
                "num_preemptions_total": s.preemptions_total,
                "cache_hit_rate": s.cached_tokens_total / max(s.prompt_tokens_total, 1),
                "max_total_num_tokens": (s.allocator.num_pages - 1) * s.limits.page_size,
                "token_usage": used_pages / max(s.allocator.num_pages - 1, 1),
                # JAX compilations so far: after warm-up this stands still.
                "num_compiles": self.compiles.count,
                **self.counters.summary(), **self.timer.summary()}

    def call(self, method: str) -> Any:
        """Control calls from the client, answered between steps."""
        if method == "flush_cache":
            return self.scheduler.flush_cache()
        if method == "stats":
            return self.stats()
        if method == "check_integrity":  # for tests: "" when every page is accounted for
            try:
                self.scheduler.check_integrity()
            except AssertionError as e:
                return str(e) or "integrity check failed"
            return ""
        raise ValueError(f"unknown engine-core call {method!r}")

    def _matched_stop_text(self, output_ids: list[int], params: SamplingParams) -> str | None:
        """The stop string, or the text a stop_regex matched, in the output's tail."""
        stops = params.stop_strs
        window = max([len(s) + 2 for s in stops] +
                     [STOP_REGEX_WINDOW if params.stop_regexes else 0])
        tail = self.tokenizer.decode(output_ids[-window:],
                                     skip_special_tokens=params.skip_special_tokens)
        for stop in stops:
            if stop in tail:
                return stop
        for regex in params.stop_regexes:
            for match in regex.finditer(tail):
                if match.group():  # an empty match stops nothing
                    return match.group()
        return None


def _store_input_logprobs(entries: list, spans: list[tuple[int, int, int]],
                          prompt: PromptLogprobs) -> None:
    """Write a step's prompt logprobs into their requests (row order: span order)."""
    rows = sum(count for _, _, count in spans)

    def host(array: jax.Array, wanted: bool = True) -> list | None:  # the step's rows
        return np.asarray(array)[:rows].tolist() if wanted else None

    values = host(prompt.logprobs)
    wants_top = any(entries[i].req.input_top is not None for i, _, _ in spans)
    ids, tops = host(prompt.top_ids, wants_top), host(prompt.top_values, wants_top)
    id_values = host(prompt.id_values,
                     any(entries[i].req.input_ids_logprobs is not None for i, _, _ in spans))
    row = 0
    for i, first, count in spans:
        req = entries[i].req
        at = first - req.input_logprob_start
        req.input_logprobs[at:at + count] = values[row:row + count]
        if req.input_top is not None:
            k = req.params.top_logprobs_num
            req.input_top[at:at + count] = [list(zip(ids[r][:k], tops[r][:k]))
                                            for r in range(row, row + count)]
        if req.input_ids_logprobs is not None:
            m = len(req.params.token_ids_logprob)
            req.input_ids_logprobs[at:at + count] = [v[:m] for v in id_values[row:row + count]]
        row += count


def _asked_ids(req: Req) -> list[int] | None:
    p = req.params
    return p.token_ids_logprob if p.return_logprob else None


def _top_num(req: Req) -> int:
    p = req.params
    return p.top_logprobs_num if p.return_logprob else 0


def _forced_top(req: Req, forced: list[int]) -> list[list[tuple[int, float]]] | None:
    """Tokens a grammar forces have probability 1: each is its own only alternative."""
    return [[(t, 0.0)] for t in forced] if _top_num(req) else None
