"""Attention kernel benchmark: every backend available on this machine, decode / mixed /
shared-prefix batches, achieved K/V bandwidth next to the device's measured copy bandwidth.

    python -m benchmarks.bench_kernels                       # defaults for the platform
    python -m benchmarks.bench_kernels --batch 64 --context 4096 --page-size 64

On a GPU it times the Pallas (Triton) kernel and the jnp reference; on a TPU the Mosaic kernel
and the reference; on a CPU only the reference is timed (the Pallas kernels' interpret mode
runs them as slow emulations, useless for speed: real numbers need a GPU or TPU).
Bandwidth counts the K/V bytes a kernel must read once: sum(kv_len) x K x H x 2 x itemsize.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxengine.layers.attention import ragged_attention_fn, resolve_backend
from pallas_kernels.cascade_attention import cascade_attention


def timed(fn: Callable, *args, iters: int = 10, warmup: int = 1) -> float:
    """Median seconds of `fn(*args)`, each call waited for (the first calls compile)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _plain(backend: str, sm_scale: float) -> Callable:
    attn = ragged_attention_fn(backend)
    return jax.jit(lambda *a: attn(*a, layer=jnp.int32(0), sm_scale=sm_scale))


def copy_bandwidth(nbytes: int, iters: int) -> float:
    """Device-to-device copy (read + write) bytes per second."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(lambda a: a * 1.0000001)  # not elided; one read, one write
    return 2 * x.nbytes / timed(f, x, iters=iters)


def make_batch(q_lens: list[int], kv_lens: list[int], *, heads: int, kv_heads: int,
               head_dim: int, page_size: int, dtype, shared_prefix: int = 0, seed: int = 0):
    """Random q and paged cache [1, P, S, K, H]; with shared_prefix > 0 every sequence's
    first shared_prefix // page_size pages are the same pages."""
    rng = np.random.default_rng(seed)
    B = len(q_lens)
    pb = max(-(-kv // page_size) for kv in kv_lens)
    shared = shared_prefix // page_size
    own = pb - shared
    num_pages = 1 + shared + B * own
    table = np.zeros((B, pb), np.int32)
    table[:, :shared] = 1 + np.arange(shared)
    table[:, shared:] = 1 + shared + rng.permutation(B * own).reshape(B, own)
    shape = (1, num_pages, page_size, kv_heads, head_dim)
    key = jax.random.PRNGKey(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    cu = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    args = (jax.random.normal(k1, (int(cu[-1]), heads, head_dim), dtype),
            jax.random.normal(k2, shape, dtype), jax.random.normal(k3, shape, dtype),
            jnp.asarray(kv_lens, jnp.int32), jnp.asarray(table), jnp.asarray(cu),
            jnp.asarray([B], jnp.int32))
    prefix = (jnp.asarray(1 + np.arange(max(shared, 1)), jnp.int32),
              jnp.asarray([shared * page_size], jnp.int32), jnp.ones((B,), bool))
    return args, prefix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    platform = jax.default_backend()
    small = platform == "cpu"
    ap.add_argument("--batch", type=int, nargs="+", default=[4] if small else [1, 16, 64, 256])
    ap.add_argument("--context", type=int, nargs="+",
                    default=[512] if small else [512, 4096, 8192])
    ap.add_argument("--page-size", type=int, nargs="+", default=[16] if small else [16, 64])
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--prefill-chunk", type=int, default=128 if small else 512,
                    help="query tokens of the one prefill chunk in a mixed batch")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--iters", type=int, default=3 if small else 20)
    ap.add_argument("--ref-max-gib", type=float, default=8.0,
                    help="skip the reference where its page gather would exceed this")
    args = ap.parse_args()
    dtype = jnp.dtype(args.dtype)

    backends = ["reference"]
    kernel = resolve_backend("auto", platform=platform, page_size=16, head_dim=args.head_dim)
    if kernel != "reference":
        backends.append(kernel)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({platform}), jax {jax.__version__}, "
          f"backends: {', '.join(backends)}")
    if small:
        print("note: on CPU only the jnp reference is timed; the Pallas kernels need a GPU or "
              "TPU for meaningful numbers (interpret mode is a correctness emulation).")
    bw = copy_bandwidth((64 if small else 2048) << 20, args.iters)
    print(f"measured copy bandwidth: {bw / 1e9:.1f} GB/s (read + write)")
    print(f"{'case':<34}{'backend':<18}{'ms':>10}{'KV GB/s':>10}{'% copy':>8}{'vs ref':>8}")

    def report(name, timings, kv_bytes):
        ref = timings.get("reference")
        for b, t in timings.items():
            speed = f"{ref / t:.2f}x" if ref and b != "reference" else ""
            print(f"{name:<34}{b:<18}{t * 1e3:>10.3f}{kv_bytes / t / 1e9:>10.1f}"
                  f"{100 * kv_bytes / t / bw:>7.0f}%{speed:>8}")

    itemsize = dtype.itemsize
    common = dict(heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim,
                  dtype=dtype)
    scale = args.head_dim ** -0.5
    for ps in args.page_size:
        for ctx in args.context:
            for B in args.batch:
                cases = {
                    f"decode B={B} ctx={ctx} ps={ps}": ([1] * B, [ctx] * B),
                    f"mixed B={B} ctx={ctx} ps={ps}": (
                        [1] * (B - 1) + [args.prefill_chunk], [ctx] * B),
                }
                for name, (q_lens, kv_lens) in cases.items():
                    batch, _ = make_batch(q_lens, kv_lens, page_size=ps, **common)
                    kv_bytes = sum(kv_lens) * args.kv_heads * args.head_dim * 2 * itemsize
                    gather = sum(q_lens) * max(kv_lens) * args.kv_heads * args.head_dim * 2
                    timings = {}
                    for b in backends:
                        if b == "reference" and gather * itemsize > args.ref_max_gib * 2**30:
                            continue
                        timings[b] = timed(_plain(b, scale), *batch, iters=args.iters)
                    report(name, timings, kv_bytes)
            # Shared prefix: B sequences decoding after one prefix of ctx tokens.
            for B in args.batch:
                if B < 8:
                    continue
                suffix = 64
                batch, prefix = make_batch([1] * B, [ctx + suffix] * B, page_size=ps,
                                           shared_prefix=ctx, **common)
                kv_bytes = B * (ctx + suffix) * args.kv_heads * args.head_dim * 2 * itemsize
                timings = {}
                for b in backends:
                    impl = {"reference": "reference", "pallas-gpu": "gpu",
                            "pallas-tpu": "tpu"}[b]
                    plain = _plain(b, scale)
                    casc = jax.jit(lambda *a, _i=impl: cascade_attention(
                        *a, layer=jnp.int32(0), sm_scale=scale, impl=_i))
                    timings[b + " plain"] = timed(plain, *batch, iters=args.iters)
                    timings[b + " cascade"] = timed(casc, *batch, *prefix, iters=args.iters)
                ref = timings.get("reference plain")
                for b, t in timings.items():
                    extra = f"{ref / t:.2f}x" if ref and b != "reference plain" else ""
                    name = f"prefix B={B} ctx={ctx} ps={ps}"
                    print(f"{name:<34}{b:<18}"
                          f"{t * 1e3:>10.3f}{kv_bytes / t / 1e9:>10.1f}"
                          f"{100 * kv_bytes / t / bw:>7.0f}%{extra:>8}")


if __name__ == "__main__":
    main()
