"""Section env: versions, the device, and the two ceilings every later figure is divided by:
device-to-device copy bandwidth (bytes read + written) and bf16 matmul FLOP/s."""

from __future__ import annotations

import importlib
import platform
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.bench_kernels import timed

from .common import Mode, Row, fmt_bytes_s


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "present")
    except ImportError:
        return "missing"


def copy_bandwidth(nbytes: int, iters: int) -> float:
    """Bytes read + written per second by an elementwise pass over `nbytes`."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(lambda a: a * 1.0000001)  # one read, one write; not folded away
    return 2 * x.nbytes / timed(f, x, iters=iters)


def matmul_flops(n: int, iters: int) -> float:
    """bf16 [n, n] @ [n, n] FLOP/s (f32 accumulation)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.bfloat16)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    return 2 * n ** 3 / timed(f, a, b, iters=iters)


def run(mode: Mode, ctx: dict[str, Any]) -> list[Row]:
    device = jax.devices()[0]
    stats = (device.memory_stats() or {}) if device.platform != "cpu" else {}
    memory = stats.get("bytes_limit")
    versions = {m: _version(m) for m in ("jax", "jaxlib", "flax", "numpy", "transformers",
                                         "tokenizers", "llguidance", "gguf", "fastapi")}
    small = mode.cpu or mode.quick
    bw = copy_bandwidth((64 if mode.cpu else 512 if mode.quick else 2048) << 20,
                        iters=3 if mode.cpu else 10)
    flops = matmul_flops(1024 if mode.cpu else 4096 if small else 8192,
                         iters=3 if mode.cpu else 10)
    ctx["copy_bandwidth"], ctx["matmul_flops"] = bw, flops
    info = {"python": platform.python_version(), **versions, "platform": device.platform,
            "device_kind": device.device_kind, "device_count": jax.device_count(),
            "memory_bytes": memory}
    return [
        Row("env", "versions", f"jax {versions['jax']}, flax {versions['flax']}, python "
            f"{info['python']}", "info", info),
        Row("env", "devices", f"{jax.device_count()} x {device.device_kind} "
            f"({device.platform})" + (f", {memory / 2**30:.1f} GiB" if memory else ""), "info"),
        Row("env", "copy bandwidth (read + write)", fmt_bytes_s(bw), "info",
            {"bytes_per_s": bw}),
        Row("env", "bf16 matmul", f"{flops / 1e12:.1f} TFLOP/s", "info", {"flops": flops}),
    ]
