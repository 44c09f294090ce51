"""Section model: an 8B-shaped model (Llama-3.1-8B's config, seeded random bf16 weights drawn on
the device, so no checkpoint travels) through the real engine core step (scheduler, ModelRunner,
sampling), in this process:
  - decode tok/s at batch 1, 32 and 256 with about 1k tokens of context, measured over decode-
    only steps once every request has prefilled (compiles fall before the timing);
  - MBU at batch 1: bytes a decode step must read (weights + the KV of the context) per step
    time, over the copy ceiling of section env;
  - prefill tok/s of a 2k-token prompt taken in one chunk;
  - host time per step (everything but waiting for the device) with overlap on and off, at the
    middle batch.
On CPU the same runs with the tiny untied model of the bundle and small sizes.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

import jax

from .bundle import model_dir
from .common import Mode, Row


def _sizes(mode: Mode) -> dict[str, Any]:
    if mode.cpu:
        return dict(model="tiny-untied", batches=[1, 4, 8], context=120, steps=8,
                    prefill=256, dtype="float32")
    return dict(model="llama-3.1-8b", batches=[1, 32, 256], context=1000,
                steps=16 if mode.quick else 48, prefill=2048, dtype="bfloat16")


def _core(path: Path, s: dict[str, Any]):
    from jaxengine.config import EngineConfig
    from jaxengine.core.engine_core import EngineCore

    longest = max(s["context"] + s["steps"] + 16, s["prefill"] + 16)
    config = EngineConfig.from_kwargs(
        model_path=str(path), load_format="dummy", dtype=s["dtype"], skip_server_warmup=True,
        max_running_requests=max(s["batches"]), chunked_prefill_size=s["prefill"],
        context_length=longest, disable_radix_cache=True,
        max_total_tokens=max(s["batches"]) * (s["context"] + s["steps"] + 48) + 2 * longest)
    return EngineCore(config)


def _requests(core, rng: random.Random, n: int, length: int, max_new: int) -> list[str]:
    from jaxengine.core.messages import AddRequest
    from jaxengine.sampling_params import SamplingParams

    rids = []
    for _ in range(n):
        rid = f"r{rng.getrandbits(48)}"
        prompt = [rng.randrange(1000, 30000) for _ in range(length)]
        core.add_request(AddRequest(rid, prompt, SamplingParams(
            max_new_tokens=max_new, temperature=0.0, ignore_eos=True), seed=0))
        rids.append(rid)
    return rids


def _clear(core, rids: list[str]) -> None:
    for rid in rids:
        core.abort(rid)
    while core.has_work:
        core.step()


def decode(core, rng: random.Random, batch: int, context: int, steps: int) -> dict[str, Any]:
    """Decode-only tok/s and the step timer at `batch` sequences of about `context` tokens."""
    from jaxengine.core.stats import StepTimer

    rids = _requests(core, rng, batch, context, max_new=steps + 40)
    seen: dict[str, int] = {}
    t0 = time.perf_counter()
    while len([r for r in rids if seen.get(r, 0) >= 2]) < batch:  # all prefilled, decoding
        for out in core.step():
            seen[out.rid] = seen.get(out.rid, 0) + len(out.new_ids)
    for _ in range(3):  # the decode-only programs compile here, outside the timing
        core.step()
    warm_s = time.perf_counter() - t0
    core.timer = StepTimer()
    tokens, t0 = 0, time.perf_counter()
    for _ in range(steps):
        tokens += sum(len(o.new_ids) for o in core.step())
    took = time.perf_counter() - t0
    timer = core.timer.summary()
    _clear(core, rids)
    return {"batch": batch, "context": context, "tokens": tokens, "seconds": took,
            "tok_per_s": tokens / took, "step_ms": took / steps * 1e3,
            "host_time_ms": timer["host_time_ms"], "device_wait_ms": timer["device_wait_ms"],
            "prefill_and_compile_s": warm_s}


def prefill(core, rng: random.Random, length: int, repeats: int = 3) -> dict[str, Any]:
    """Seconds from adding one `length`-token prompt to its first token (the first run
    compiles; the median of the others is reported)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rids = _requests(core, rng, 1, length, max_new=1)
        while core.has_work:
            core.step()
        times.append(time.perf_counter() - t0)
        del rids
    t = statistics.median(times[1:])
    return {"tokens": length, "seconds": t, "tok_per_s": length / t, "first_run_s": times[0]}


def _read_bytes(core, context: int) -> tuple[int, int]:
    """(weight bytes, KV bytes) one decode step of one sequence must read: every weight but
    an untied embedding table (its one row is gathered), and the context's K and V."""
    r = core.runner
    weights = sum(x.nbytes for x in jax.tree.leaves(r.state))
    if not r.arch.tie_word_embeddings:
        weights -= sum(x.nbytes for x in jax.tree.leaves(r.state["embed"]))
    a = r.arch
    kv = context * a.num_layers * a.num_kv_heads * a.head_dim * 2 * r.cache.k.dtype.itemsize
    return weights, kv


def run(mode: Mode, ctx: dict[str, Any]) -> list[Row]:
    bundle = ctx.get("bundle")
    if bundle is None:
        return [Row("model", "bundle", "no --bundle given (make one with --make-bundle)",
                    "skip")]
    s = _sizes(mode)
    t0 = time.perf_counter()
    core = _core(model_dir(Path(bundle), s["model"]), s)
    load_s = time.perf_counter() - t0
    rng = random.Random(0)
    rows = [Row("model", f"{s['model']} ({s['dtype']}, dummy weights) loaded",
                f"{load_s:.1f} s, {core.runner.backend} attention", "info",
                {"seconds": load_s, "backend": core.runner.backend})]
    runs = {}
    for B in s["batches"]:
        r = decode(core, rng, B, s["context"], s["steps"])
        runs[B] = r
        rows.append(Row("model", f"decode B={B} ctx~{s['context']}",
                        f"{r['tok_per_s']:.0f} tok/s, step {r['step_ms']:.2f} ms, host "
                        f"{r['host_time_ms']:.2f} ms", "info", r))
    weights, kv = _read_bytes(core, s["context"])
    step = runs[s["batches"][0]]["step_ms"] / 1e3
    ceiling = ctx.get("copy_bandwidth")
    mbu = {"weight_bytes": weights, "kv_bytes": kv, "step_s": step,
           "bytes_per_s": (weights + kv) / step}
    value = f"{(weights + kv) / 2**30:.2f} GiB per step in {step * 1e3:.2f} ms"
    if ceiling:
        mbu["mbu"] = mbu["bytes_per_s"] / ceiling
        value += f": MBU {100 * mbu['mbu']:.0f}% of copy"
    rows.append(Row("model", "MBU at batch 1", value, "info", mbu))
    p = prefill(core, rng, s["prefill"])
    rows.append(Row("model", f"prefill {s['prefill']}-token prompt",
                    f"{p['tok_per_s']:.0f} tok/s ({p['seconds'] * 1e3:.0f} ms)", "info", p))
    mid = s["batches"][len(s["batches"]) // 2]
    overlap = {}
    for on in (True, False):
        core.overlap = on  # the core is idle here: nothing is in flight
        overlap[on] = decode(core, rng, mid, s["context"], s["steps"])
    core.overlap = True
    on, off = overlap[True], overlap[False]
    rows.append(Row("model", f"host time per step B={mid}, overlap on / off",
                    f"{on['host_time_ms']:.2f} / {off['host_time_ms']:.2f} ms; "
                    f"{on['tok_per_s']:.0f} / {off['tok_per_s']:.0f} tok/s "
                    f"({on['tok_per_s'] / off['tok_per_s']:.2f}x)", "info",
                    {"on": on, "off": off}))
    leaks = core.call("check_integrity")
    rows.append(Row("model", "pages after the runs", leaks or "all accounted for",
                    "FAIL" if leaks else "ok"))
    return rows
