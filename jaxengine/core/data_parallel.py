"""Data parallelism: independent replicas behind a prefix-aware request balancer.

Each replica is a whole EngineCore (its own scheduler, radix cache, KV pool and copy of the
weights, tensor-parallel over its row of the ("dp", "tp") mesh). One host thread drives them
all: `step` dispatches each replica's step in turn and JAX dispatch is asynchronous, so the
replicas' devices compute at the same time while the host schedules the next one.

Why replicas and not data-parallel attention inside one program: replicas need no collective
at all, each keeps its own radix tree (so a prefix is cached where its requests run), a
replica's batch never waits for a busier one, and the single-device program is reused as is.
"""

from __future__ import annotations

from typing import Any

from jaxengine.config import EngineConfig
from jaxengine.core.engine_core import EngineCore
from jaxengine.models.checkpoint import load_checkpoint


class DataParallelCore:
    """dp EngineCores with EngineCore's interface (add_request, abort, step, has_work, call,
    stats, info). A request is routed once, at arrival, and stays on its replica."""

    def __init__(self, config: EngineConfig, meshes: list):
        checkpoint = load_checkpoint(config.model.model_path, config.model.tokenizer_path,
                                     config.model.load_format)
        self.replicas = [EngineCore(config, mesh, checkpoint) for mesh in meshes]
        self.tokenizer = self.replicas[0].tokenizer
        self.max_context = self.replicas[0].max_context
        # A replica holding the prefix takes the request unless it is this many requests
        # busier than the idlest one: past that, recomputing the prefix costs less than queueing.
        self.balance_slack = config.scheduler.max_running_requests
        self._owner: dict[str, int] = {}
        self.routed_by_prefix = 0

    @property
    def runner(self):
        return self.replicas[0].runner

    @property
    def has_work(self) -> bool:
        return any(r.has_work for r in self.replicas)

    @property
    def idle(self) -> bool:
        return all(r.idle for r in self.replicas)

    def info(self) -> dict[str, Any]:
        return {**self.replicas[0].info(), "dp_size": len(self.replicas)}

    def route(self, prompt_ids: list[int]) -> int:
        """The replica whose radix cache holds the longest prefix of the prompt, unless it is
        much busier than the idlest replica; with no cached prefix, the idlest replica."""
        loads = [len(r.scheduler.running) + len(r.scheduler.waiting) for r in self.replicas]
        idlest = min(range(len(loads)), key=loads.__getitem__)
        matched = [r.scheduler.cache.match_prefix(prompt_ids[:-1]).num_pages
                   if r.scheduler.cache is not None else 0 for r in self.replicas]
        best = max(range(len(loads)), key=lambda i: (matched[i], -loads[i]))
        if matched[best] > 0 and loads[best] <= loads[idlest] + self.balance_slack:
            self.routed_by_prefix += 1
            return best
        return idlest

    def add_request(self, add):
        i = self.route(add.prompt_ids)
        out = self.replicas[i].add_request(add)
        if out is None or out.finish_reason is None:
            self._owner[add.rid] = i
        return out

    def abort(self, rid: str):
        # A request the step loop aborted wholesale (_abort_all) may linger here: harmless,
        # its replica answers None.
        i = self._owner.pop(rid, None)
        return None if i is None else self.replicas[i].abort(rid)

    def step(self) -> list:
        outputs = []
        for replica in self.replicas:
            outputs += replica.step()
        for out in outputs:
            if out.finish_reason is not None:
                self._owner.pop(out.rid, None)
        return outputs

    def stats(self) -> dict[str, Any]:
        per = [r.stats() for r in self.replicas]
        total = {k: sum(s[k] for s in per) for k, v in per[0].items()
                 if isinstance(v, int | float)}
        for k in total:
            if k.endswith("_ms"):
                total[k] /= len(per)
        total["num_compiles"] = per[0]["num_compiles"]  # one count for the process
        total["cache_hit_rate"] = total["cached_tokens_total"] / max(total["prompt_tokens_total"], 1)
        total["token_usage"] = total["num_used_tokens"] / max(total["max_total_num_tokens"], 1)
        total["requests_routed_by_prefix"] = self.routed_by_prefix
        total["dp_replicas"] = [{k: s[k] for k in ("num_running_reqs", "num_queue_reqs",
                                                   "cache_hit_rate")} for s in per]
        return total

    def call(self, method: str) -> Any:
        if method == "stats":
            return self.stats()
        if method == "flush_cache":
            if any(r.scheduler.has_work for r in self.replicas):
                return False
            return all([r.call(method) for r in self.replicas])
        if method == "check_integrity":
            return "; ".join(filter(None, (r.call(method) for r in self.replicas)))
        return self.replicas[0].call(method)  # raises for unknown calls
