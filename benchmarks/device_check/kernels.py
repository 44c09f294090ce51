"""Section kernels: every attention kernel of pallas_kernels/ compiled for this device against
the pure-jnp reference run on the same device, over the batch kinds of tests/pallas_kernels
(decode / prefill / mixed / chunked), GQA 1, 4 and 8, head dims 64 and 128, page sizes 16 and
64 with kv lengths off the page boundary, soft cap, sliding window, return_lse and the cascade.

Inputs are fresh random numbers every run (seeded from the clock, reported). Before each call
the device's allocator is handed NaN buffers of the output's size and given them back, so an
output row a kernel forgets to write is likely to read NaN rather than a stale right answer;
any NaN fails the case. Error: max |kernel - reference| / max |reference| (and the same for
lse).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxengine.layers.attention import ragged_attention_fn
from pallas_kernels.cascade_attention import cascade_attention
from pallas_kernels.ragged_paged_attention import ragged_paged_attention_reference
from tests.pallas_kernels.cases import BATCHES, make_case

from .common import Mode, Row

# Relative error allowed against the reference on the same device. On GPUs XLA and Triton run
# float32 dots in TF32 by default, hence the looser float32 bound off CPU.
TOLERANCE = {("cpu", "float32"): 1e-4, ("accel", "float32"): 1e-2,
             ("cpu", "bfloat16"): 3e-2, ("accel", "bfloat16"): 3e-2}

CPU_QUICK_CASES = ("decode gqa4 h128 ps16", "mixed gqa4 h128 ps64", "sliding window",
                   "return_lse")


def kernels_for(platform: str) -> dict[str, tuple[str, str | None]]:
    """backend name -> (ragged attention backend, cascade impl or None) to check here."""
    if platform == "gpu":
        return {"pallas-gpu": ("pallas-gpu", "gpu"), "blocked": ("blocked", None)}
    if platform == "tpu":
        return {"pallas-tpu": ("pallas-tpu", "tpu"), "blocked": ("blocked", None)}
    # On CPU the Pallas kernels run in their interpret modes: correct, slow.
    return {"pallas-interpret": ("pallas-interpret", None),
            "pallas-tpu-interpret": ("pallas-tpu-interpret", None),
            "blocked": ("blocked", None)}


def _poison(shape: tuple[int, ...], dtype) -> None:
    jnp.full(shape, jnp.nan, dtype).block_until_ready().delete()


def _rel_error(got: jax.Array, want: jax.Array) -> float:
    got = np.asarray(jnp.asarray(got, jnp.float32))
    want = np.asarray(jnp.asarray(want, jnp.float32))
    if np.isnan(got).any():
        return float("nan")
    both_inf = np.isneginf(got) & np.isneginf(want)
    got, want = np.where(both_inf, 0, got), np.where(both_inf, 0, want)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-6))


def _cases(mode: Mode, seed: int) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, make_case keywords, attention keywords)."""
    heads = [(8, 8, 64), (8, 2, 128), (8, 1, 64)]
    dtypes = [jnp.float32] if mode.cpu else [jnp.float32, jnp.bfloat16]
    out = []
    for dtype in dtypes:
        for kind, (q_lens, kv_lens) in BATCHES.items():
            for n, k, h in heads:
                for page in (16, 64):
                    if mode.quick and (page == 64 or n // k == 4) and kind != "mixed":
                        continue
                    # kv lengths scaled past the page size, off its boundary
                    kvs = [kv * page // 8 + 3 for kv in kv_lens]
                    qs = [min(q, kv) for q, kv in zip(q_lens, kvs)]
                    out.append((f"{kind} gqa{n // k} h{h} ps{page} {jnp.dtype(dtype).name}",
                                dict(q_lens=qs, kv_lens=kvs, num_heads=n, num_kv_heads=k,
                                     head_dim=h, page_size=page, num_slots=len(qs) + 2,
                                     dtype=dtype, seed=seed), {}))
        mixed = dict(q_lens=BATCHES["mixed"][0], kv_lens=[7, 40, 5, 70], num_heads=8,
                     num_kv_heads=2, head_dim=128, page_size=16, num_slots=6, dtype=dtype,
                     seed=seed + 1)
        name = jnp.dtype(dtype).name
        out += [(f"soft cap {name}", mixed, {"soft_cap": 30.0}),
                (f"sliding window 24 {name}", mixed, {"sliding_window": 24}),
                (f"return_lse non-causal {name}", mixed, {"return_lse": True, "causal": False})]
    return out


def _check(backend: str, case_kw: dict, attn_kw: dict) -> float:
    case = make_case(**case_kw)
    fn = ragged_attention_fn(backend)
    if backend == "blocked" and (attn_kw.get("return_lse") or "causal" in attn_kw):
        return float("-inf")  # the blocked loops serve the causal engine path only
    kw = dict(layer=case.layer, sm_scale=case.q.shape[-1] ** -0.5, **attn_kw)
    want = jax.jit(functools.partial(ragged_paged_attention_reference, **kw))(*case.args)
    _poison(case.q.shape, case.q.dtype)
    got = jax.jit(functools.partial(fn, **kw))(*case.args)
    if attn_kw.get("return_lse"):
        return max(_rel_error(got[0], want[0]), _rel_error(got[1], want[1]))
    return _rel_error(got, want)


def _check_cascade(impl: str, dtype, seed: int) -> float:
    """Eight sequences sharing a 4-page prefix, decoding and one prefill chunk."""
    page, prefix = 16, 4
    q_lens = [1] * 7 + [9]
    kv_lens = [prefix * page + 1 + 5 * i for i in range(8)]
    case = make_case(q_lens, kv_lens, num_heads=8, num_kv_heads=2, head_dim=128,
                     page_size=page, num_slots=9, dtype=dtype, seed=seed)
    pages = np.asarray(case.page_indices).copy()
    pages[:8, :prefix] = pages[0, :prefix]
    case = case._replace(page_indices=jnp.asarray(pages))
    mask = jnp.asarray([True] * 8 + [False])
    scale = case.q.shape[-1] ** -0.5
    want = jax.jit(functools.partial(ragged_paged_attention_reference, layer=case.layer,
                                     sm_scale=scale))(*case.args)
    _poison(case.q.shape, case.q.dtype)
    got = cascade_attention(*case.args, jnp.asarray(pages[0, :prefix]),
                            jnp.int32(prefix * page), mask, layer=case.layer, sm_scale=scale,
                            impl=impl)
    return _rel_error(got, want)


def run(mode: Mode, ctx: dict[str, Any]) -> list[Row]:
    seed = int(time.time()) % 100_000
    kind = "cpu" if mode.cpu else "accel"
    rows = []
    for label, (backend, cascade) in kernels_for(mode.platform).items():
        cases = _cases(mode, seed)
        if mode.cpu and mode.quick:  # CPU runs only show the section works: a few cases
            cases = [c for c in cases if c[0].startswith(CPU_QUICK_CASES)]
        errors = {}
        for name, case_kw, attn_kw in cases:
            try:
                err = _check(backend, case_kw, attn_kw)
            except Exception as e:  # a kernel that does not compile is a failure, not a crash
                errors[name] = f"{type(e).__name__}: {str(e)[:300]}"
                continue
            if err != float("-inf"):
                errors[name] = err
        if cascade is not None:
            for dtype in (jnp.float32, jnp.bfloat16):
                try:
                    errors[f"cascade {jnp.dtype(dtype).name}"] = _check_cascade(
                        cascade, dtype, seed)
                except Exception as e:
                    errors[f"cascade {jnp.dtype(dtype).name}"] = \
                        f"{type(e).__name__}: {str(e)[:300]}"
        bad = {}
        for name, err in errors.items():
            tol = TOLERANCE[(kind, "bfloat16" if "bfloat16" in name else "float32")]
            if isinstance(err, str) or not err <= tol:  # NaN fails too
                bad[name] = err
        numeric = [e for e in errors.values() if isinstance(e, float) and e == e]
        worst = max(numeric, default=float("nan"))
        rows.append(Row("kernels", f"{label}: {len(errors)} cases vs reference",
                        f"max rel err {worst:.1e}; {len(bad)} failed",
                        "FAIL" if bad else "ok",
                        {"seed": seed, "errors": errors, "failed": bad}))
    return rows
