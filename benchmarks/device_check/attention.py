"""Section attention: decode and prefill attention speed, the platform's kernel (Pallas on GPU
and TPU) and the blocked jnp loops against the jnp reference on the same device, at head dim
128 and GQA 8 (32 query heads, 8 KV heads, Llama-3.1-8B's), over batch x context x page size.

Decode: every sequence has one query token at the end of its context. Prefill: every sequence
has a PREFILL_CHUNK-token chunk ending at its context (the chunked-prefill shape). Bytes are
the K/V bytes a kernel must read once (sum of contexts x K x H x 2 x itemsize); divided by the
copy bandwidth of section env they say how near the memory ceiling a kernel runs. The
reference gathers every query token's pages, so it is skipped where that gather would not fit.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.bench_kernels import make_batch, timed
from jaxengine.layers.attention import ragged_attention_fn, resolve_backend

from .common import Mode, Row, fmt_bytes_s

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
PREFILL_CHUNK = 256     # 32 on CPU
REFERENCE_GATHER_LIMIT = 8 << 30   # bytes of pages the reference may gather per call


def _sizes(mode: Mode, kind: str) -> tuple[list[int], list[int], list[int]]:
    """(batches, contexts, page sizes); --quick drops the middle context and the largest
    prefill batch (each case compiles three programs)."""
    if mode.cpu:
        return ([1, 4], [256], [16]) if mode.quick else ([1, 4], [256, 1024], [16, 64])
    if mode.quick:
        return [1, 32, 256] if kind == "decode" else [1, 32], [1024, 16384], [16, 64]
    return [1, 32, 256], [1024, 4096, 16384], [16, 64]


def _backends(platform: str) -> list[str]:
    """The reference, the blocked loops and the platform's kernel (Pallas on GPU and TPU)."""
    kernel = resolve_backend("auto", platform=platform, page_size=16, head_dim=HEAD_DIM)
    return list(dict.fromkeys(["reference", "blocked", kernel]))


def _jitted(backend: str):
    attend = ragged_attention_fn(backend)
    return jax.jit(lambda *a: attend(*a, layer=jnp.int32(0), sm_scale=HEAD_DIM ** -0.5))


def run(mode: Mode, ctx: dict[str, Any]) -> list[Row]:
    backends = _backends(mode.platform)
    dtype = jnp.float32 if mode.cpu else jnp.bfloat16
    itemsize = jnp.dtype(dtype).itemsize
    ceiling = ctx.get("copy_bandwidth")
    iters = 3 if mode.cpu else 5 if mode.quick else 10
    fns = {b: _jitted(b) for b in backends}
    rows, table = [], []
    for kind in ("decode", "prefill"):
        batches, contexts, pages = _sizes(mode, kind)
        for ps in pages:
            for context in contexts:
                for B in batches:
                    chunk = 1 if kind == "decode" else 32 if mode.cpu else PREFILL_CHUNK
                    q_lens, kv_lens = [chunk] * B, [context] * B
                    kv_bytes = B * context * KV_HEADS * HEAD_DIM * 2 * itemsize
                    gather = B * chunk * context * KV_HEADS * HEAD_DIM * 2 * itemsize
                    batch, _ = make_batch(q_lens, kv_lens, heads=HEADS, kv_heads=KV_HEADS,
                                          head_dim=HEAD_DIM, page_size=ps, dtype=dtype)
                    times: dict[str, float | str] = {}
                    for b in backends:
                        if b == "reference" and gather > REFERENCE_GATHER_LIMIT:
                            times[b] = "skipped: gather too large"
                            continue
                        try:
                            times[b] = timed(fns[b], *batch, iters=iters)
                        except Exception as e:  # reported; the other cases still run
                            times[b] = f"{type(e).__name__}: {str(e)[:200]}"
                    del batch
                    ref = times.get("reference")
                    for b, t in times.items():
                        entry = {"kind": kind, "batch": B, "context": context,
                                 "page_size": ps, "backend": b}
                        if isinstance(t, str):
                            table.append({**entry, "error": t})
                            continue
                        entry.update(ms=t * 1e3, kv_bytes_per_s=kv_bytes / t)
                        if ceiling:
                            entry["of_copy_ceiling"] = kv_bytes / t / ceiling
                        if isinstance(ref, float) and b != "reference":
                            entry["vs_reference"] = ref / t
                        table.append(entry)
    failures = [e for e in table if "error" in e and not e["error"].startswith("skipped")]
    # One summary row per backend and kind: the largest case it ran, and its best ratio.
    for b in backends:
        for kind in ("decode", "prefill"):
            done = [e for e in table if e["backend"] == b and e["kind"] == kind and "ms" in e]
            if not done:
                continue
            big = max(done, key=lambda e: (e["batch"] * e["context"], e["page_size"]))
            value = (f"B={big['batch']} ctx={big['context']} ps={big['page_size']}: "
                     f"{big['ms']:.3f} ms, {fmt_bytes_s(big['kv_bytes_per_s'])}")
            if "of_copy_ceiling" in big:
                value += f" ({100 * big['of_copy_ceiling']:.0f}% of copy)"
            ratios = [e["vs_reference"] for e in done if "vs_reference" in e]
            if ratios:
                value += f"; vs reference {min(ratios):.2f}x..{max(ratios):.2f}x"
            rows.append(Row("attention", f"{kind} {b}", value, "info",
                            {"cases": done}))
    rows.append(Row("attention", f"{len(table)} timings", f"{len(failures)} failed",
                    "FAIL" if failures else "ok", {"cases": table}))
    return rows
