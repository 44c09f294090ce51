"""Run in a fresh interpreter with 8 virtual CPU devices (XLA_FLAGS must precede JAX's start):
    python -m tests.parallel.tp_script MODEL_PATH '[[tp, dp(, mode(, path))], ...]' [backend [max_new]]
Prints one JSON line: per layout ("TPxDP", "-mode" appended unless the mode is "tokens"), the
greedy tokens of a few prompts and sharding facts; mode "errors": the message the layout
fails with; mode "compile": also warm up, and count the compilations while serving."""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

from jaxengine.config import EngineConfig  # noqa: E402
from jaxengine.core.loop import make_core  # noqa: E402
from jaxengine.core.messages import AddRequest  # noqa: E402
from jaxengine.sampling_params import SamplingParams  # noqa: E402

COMPILES: list[str] = []


def _record(event: str, *args, **kwargs) -> None:
    if event.startswith(("/jax/core/compile/", "/jax/compilation_cache/")):
        COMPILES.append(event)


jax.monitoring.register_event_listener(_record)
jax.monitoring.register_event_duration_secs_listener(_record)
PROMPTS = [[1, 2, 3, 4, 5], list(range(100, 140)), [7] * 20 + [9, 11, 13]]


def run(model: str, tp: int, dp: int, backend: str, max_new: int, mode: str) -> dict:
    config = EngineConfig.from_kwargs(
        model_path=None if model == "default" else model, tp_size=tp, dp_size=dp,
        context_length=128, max_running_requests=4, chunked_prefill_size=32,
        max_total_tokens=512, skip_server_warmup=mode != "compile", attention_backend=backend,
        dtype="float32")
    if mode == "orbax":
        mode = "tokens"
    if mode == "errors":
        try:
            make_core(config)
        except ValueError as e:
            return {"error": str(e)}
        return {"error": None}
    core = make_core(config)
    COMPILES.clear()
    if mode == "prefix":
        return prefix_routing(core)
    params = SamplingParams(temperature=0, max_new_tokens=max_new, ignore_eos=True)
    for i, prompt in enumerate(PROMPTS):
        core.add_request(AddRequest(f"r{i}", prompt, params, seed=0))
    tokens: dict[str, list[int]] = {f"r{i}": [] for i in range(len(PROMPTS))}
    while core.has_work:
        for out in core.step():
            tokens[out.rid] += out.new_ids
    runner = core.runner
    facts = {}
    if runner.tp is not None:
        state = jax.tree.leaves(runner.state)
        q = runner.state["layers"]["q_proj"][...]
        facts = {
            "q_spec": str(q.sharding.spec),
            "q_device_bytes": q.addressable_shards[0].data.nbytes, "q_bytes": q.nbytes,
            "kv_spec": str(runner.cache.k.sharding.spec),
            "kv_device_bytes": runner.cache.k.addressable_shards[0].data.nbytes,
            "kv_bytes": runner.cache.k.nbytes,
            "weights_device_bytes": sum(x.addressable_shards[0].data.nbytes for x in state),
            "weights_bytes": sum(x.nbytes for x in state),
            "devices": sorted({d.id for x in state for d in x.sharding.device_set}),
        }
    if dp > 1:
        facts["replica_devices"] = [sorted(d.id for d in r.runner.cache.k.sharding.device_set)
                                    for r in core.replicas]
    facts["compiles"] = len(COMPILES)
    return {"tokens": [tokens[f"r{i}"] for i in range(len(PROMPTS))], **facts}


def prefix_routing(core) -> dict:
    """Two prompt families start on different replicas; later requests of each family must
    follow their prefix (the idlest-replica rule alone would send both to replica 0)."""
    params = SamplingParams(temperature=0, max_new_tokens=2, ignore_eos=True)
    p, q = list(range(1000, 1048)), list(range(2000, 2048))
    out: dict = {"replica": {}, "cached": {}}

    def serve(batch: dict[str, list[int]]) -> None:
        for rid, prompt in batch.items():
            core.add_request(AddRequest(rid, prompt, params, seed=0))
            out["replica"][rid] = core._owner[rid]
        while core.has_work:
            for o in core.step():
                out["cached"][o.rid] = o.cached_tokens

    serve({"p1": p + [5, 6], "q1": q + [5, 6]})
    serve({"q2": q + [7, 8, 9]})
    serve({"p2": p + [7, 8, 9]})
    out["routed_by_prefix"] = core.routed_by_prefix
    out["cache_hit_rate"] = core.stats()["cache_hit_rate"]
    return out


def main() -> None:
    model, layouts = sys.argv[1], json.loads(sys.argv[2])
    backend = sys.argv[3] if len(sys.argv) > 3 else "auto"
    max_new = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    results = {}
    for tp, dp, *rest in layouts:
        mode = rest[0] if rest else "tokens"
        path = rest[1] if len(rest) > 1 else model  # another checkpoint of the same model
        key = f"{tp}x{dp}" + ("" if mode == "tokens" else f"-{mode}")
        t0 = time.perf_counter()
        results[key] = run(path, tp, dp, backend, max_new, mode)
        results[key]["seconds"] = round(time.perf_counter() - t0, 1)
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
