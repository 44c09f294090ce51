"""EngineCore: the scheduler loop around the ModelRunner, run in its own process.

It speaks token ids only. Messages in (over a socket): ("add", AddRequest), ("abort", rid),
("call", (call_id, method)), ("shutdown", None). Messages out: ("ready", info),
("outputs", [TokenOutput]), ("reply", (call_id, result)), ("error", text) when start-up fails.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxengine.config import EngineConfig
from jaxengine.sampling_params import SamplingParams
from jaxengine.scheduler.req import FinishReason, Req
from jaxengine.scheduler.scheduler import Scheduler, SchedulerLimits

log = logging.getLogger(__name__)

# Most (tokens in a step) x (longest context) the reference attention gathers at once.
ATTENTION_BUDGET = 1 << 18


@dataclass
class AddRequest:
    rid: str
    prompt_ids: list[int]
    params: SamplingParams
    seed: int


@dataclass
class TokenOutput:
    """What one step produced for one request."""

    rid: str
    new_ids: list[int]
    logprobs: list[float]
    finish_reason: str | None = None   # "stop" | "length" | "abort"
    matched_stop: int | str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0


def eos_token_ids(hf_config: dict[str, Any], tokenizer) -> set[int]:
    ids = hf_config.get("eos_token_id")
    ids = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class EngineCore:
    def __init__(self, config: EngineConfig):
        from jaxengine.models.checkpoint import load_checkpoint
        from jaxengine.runtime.model_runner import ModelRunner

        checkpoint = load_checkpoint(config.model.model_path, config.model.tokenizer_path)
        self.tokenizer = checkpoint.tokenizer
        self.runner = ModelRunner(config, checkpoint)
        self.eos_ids = eos_token_ids(checkpoint.hf_config, self.tokenizer)
        r = self.runner
        self.max_context = min(r.context_length, r.max_total_tokens)
        limits = SchedulerLimits(
            page_size=r.page_size, num_pages=r.num_pages,
            max_running=config.scheduler.max_running_requests,
            chunk_tokens=config.scheduler.chunked_prefill_size,
            max_context=self.max_context,
            attention_budget=max(ATTENTION_BUDGET, self.max_context),
            radix_cache=not config.cache.disable_radix_cache,
            policy=config.scheduler.schedule_policy)
        self.scheduler = Scheduler(limits, self.eos_ids, self._matched_stop_text)
        self._sorted_eos = sorted(self.eos_ids)

    def info(self) -> dict[str, Any]:
        r = self.runner
        return {"device": f"{r.device.device_kind} ({r.platform})", "dtype": str(r.dtype.name),
                "context_length": r.context_length, "max_total_tokens": r.max_total_tokens,
                "num_pages": r.num_pages, "page_size": r.page_size,
                "architecture": r.arch.architecture, "vocab_size": r.arch.vocab_size,
                "eos_token_ids": self._sorted_eos}

    def add_request(self, add: AddRequest) -> TokenOutput | None:
        """Queue a request; an immediate TokenOutput if it can never run."""
        if len(add.prompt_ids) >= self.max_context:
            return TokenOutput(add.rid, [], [], "abort", None, len(add.prompt_ids))
        self.scheduler.add(Req(add.rid, list(add.prompt_ids), add.params, add.seed))
        return None

    def abort(self, rid: str) -> TokenOutput | None:
        req = self.scheduler.abort(rid)
        if req is None:
            return None
        return TokenOutput(rid, [], [], FinishReason.ABORT.value, None, len(req.prompt_ids))

    def step(self) -> list[TokenOutput]:
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        inputs = self.runner.prepare(batch, self._sorted_eos)
        tokens, logprobs = self.runner.run(inputs)
        n = len(batch.entries)
        tokens, logprobs = np.asarray(tokens)[:n].tolist(), np.asarray(logprobs)[:n].tolist()
        lp = {e.req.rid: p for e, p in zip(batch.entries, logprobs)}
        outputs = []
        for req in self.scheduler.process(batch, tokens):
            reason = req.finish_reason.value if req.finish_reason else None
            outputs.append(TokenOutput(req.rid, [req.output_ids[-1]], [lp[req.rid]], reason,
                                       req.matched_stop, len(req.prompt_ids),
                                       max(req.cached_tokens, 0)))
        return outputs

    def stats(self) -> dict[str, Any]:
        """Live counters for /get_server_info and metrics."""
        s = self.scheduler
        cached_pages = s.cache.num_cached_pages if s.cache is not None else 0
        used_pages = s.allocator.num_pages - 1 - s.allocator.num_free - cached_pages
        return {"num_running_reqs": len(s.running), "num_queue_reqs": len(s.waiting),
                "num_used_tokens": used_pages * s.limits.page_size,
                "num_cached_tokens": cached_pages * s.limits.page_size,
                "prompt_tokens_total": s.prompt_tokens_total,
                "cached_tokens_total": s.cached_tokens_total,
                "cache_hit_rate": s.cached_tokens_total / max(s.prompt_tokens_total, 1)}

    def call(self, method: str) -> Any:
        """Control calls from the client, answered between steps."""
        if method == "flush_cache":
            return self.scheduler.flush_cache()
        if method == "stats":
            return self.stats()
        raise ValueError(f"unknown engine-core call {method!r}")

    def _matched_stop_text(self, req: Req) -> str | None:
        stops = req.params.stop_strs
        window = max(len(s) for s in stops) + 2
        tail = self.tokenizer.decode(req.output_ids[-window:],
                                     skip_special_tokens=req.params.skip_special_tokens)
        for stop in stops:
            if stop in tail:
                return stop
        return None


def run_engine_core(config: EngineConfig, conn) -> None:
    """Process entry point: build the core, then serve the pipe until told to shut down."""
    logging.basicConfig(level=config.server.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # JAX reports every backend it could not find (TPU on a GPU box, ...) at INFO.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    try:
        core = EngineCore(config)
        info = core.info()
    except Exception as e:  # start-up failures go back to the client as a clear error
        log.error("engine core failed to start:\n%s", traceback.format_exc())
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", info))
    while True:
        outputs: list[TokenOutput] = []
        wait = not core.scheduler.has_work
        while wait or conn.poll():
            try:
                kind, payload = conn.recv()
            except EOFError:
                return  # the client is gone
            wait = False
            if kind == "shutdown":
                return
            if kind == "call":
                call_id, method = payload
                conn.send(("reply", (call_id, core.call(method))))
                continue
            out = core.add_request(payload) if kind == "add" else core.abort(payload)
            if out is not None:
                outputs.append(out)
        try:
            outputs.extend(core.step())
        except Exception:
            log.error("step failed; aborting its requests:\n%s", traceback.format_exc())
            outputs.extend(_abort_all(core))
        if outputs:
            conn.send(("outputs", outputs))


def _abort_all(core: EngineCore) -> list[TokenOutput]:
    rids = [r.rid for r in list(core.scheduler.running) + list(core.scheduler.waiting)]
    return [out for rid in rids if (out := core.abort(rid)) is not None]

