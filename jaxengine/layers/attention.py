"""The one attention op the models call; it picks the implementation for the backend.

Model code never knows which kernel runs: the model passes on the backend it was built with
(`--attention-backend`, resolved while tracing). Backends:
  auto                  by jax.default_backend(): gpu -> pallas-gpu, tpu -> pallas-tpu,
                        anything else -> blocked
  blocked               query blocks x key chunks in plain jnp, the CPU implementation:
                        memory and work follow the live context
                        (pallas_kernels/ragged_paged_attention_blocked.py)
  reference             the pure-jnp oracle (pallas_kernels/ragged_paged_attention.py): every
                        token gathers its sequence's pages up to the step's page bucket
  pallas                the Pallas kernel of the current platform (interpret mode on CPU)
  pallas-gpu            the Triton-lowered kernel (ragged_paged_attention_gpu.py)
  pallas-tpu            the Mosaic TPU kernel (ragged_paged_attention_tpu.py)
  pallas-interpret      the GPU kernel in Pallas' interpret mode (runs anywhere; slow)
  pallas-tpu-interpret  the TPU kernel under the TPU interpret mode (runs on CPU; slower)

When a shape does not suit the platform's kernel (the Triton kernel needs power-of-two page
size and head dim) `auto` falls back to the reference.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax

from jaxengine.cache.mha_pool import MHAPool
from pallas_kernels.cascade_attention import cascade_attention
from pallas_kernels.ragged_paged_attention import ragged_paged_attention_reference
from pallas_kernels.ragged_paged_attention_blocked import ragged_paged_attention_blocked

BACKENDS = ("auto", "blocked", "reference", "pallas", "pallas-gpu", "pallas-tpu",
            "pallas-interpret", "pallas-tpu-interpret")


class SharedPrefix(NamedTuple):
    """A radix prefix shared by several sequences of the step (cascade attention)."""

    pages: jax.Array     # [Pp] int32 the prefix's pages (the first pages of each sharer)
    length: jax.Array    # [1] int32 prefix tokens (used rounded down to whole pages)
    seq_mask: jax.Array  # [B] bool sequences that share it (queries past the prefix)


class AttentionMetadata(NamedTuple):
    """Per-step layout of the ragged batch, shared by every layer."""

    slots: jax.Array         # [T] int32 flat KV slot each new token is written to (0: dummy)
    kv_lens: jax.Array       # [B] int32
    page_indices: jax.Array  # [B, Pb] int32
    cu_q_lens: jax.Array     # [B + 1] int32
    num_seqs: jax.Array      # [1] int32
    shared_prefix: SharedPrefix | None = None  # set by the scheduler past its threshold


def _pow2(x: int) -> bool:
    return x > 0 and not x & (x - 1)


def resolve_backend(name: str, *, page_size: int | None = None,
                    head_dim: int | None = None, platform: str | None = None) -> str:
    """The concrete implementation for `name` on `platform` (default: jax.default_backend()):
    blocked, reference, pallas-gpu, pallas-tpu, pallas-interpret or pallas-tpu-interpret."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is not one of {BACKENDS}")
    if name not in ("auto", "pallas"):
        return name
    platform = platform or jax.default_backend()
    if platform == "gpu":
        fits = page_size is None or head_dim is None or (_pow2(page_size) and _pow2(head_dim))
        return "pallas-gpu" if fits or name == "pallas" else "reference"
    if platform == "tpu":
        return "pallas-tpu"
    return "blocked" if name == "auto" else "pallas-interpret"


def ragged_attention_fn(backend: str):
    """The ragged paged attention function of a concrete backend (reference signature)."""
    if backend == "reference":
        return ragged_paged_attention_reference
    if backend == "blocked":
        return ragged_paged_attention_blocked
    if backend in ("pallas-gpu", "pallas-interpret"):
        from pallas_kernels.ragged_paged_attention_gpu import ragged_paged_attention_gpu
        return functools.partial(ragged_paged_attention_gpu,
                                 interpret=backend == "pallas-interpret")
    if backend in ("pallas-tpu", "pallas-tpu-interpret"):
        from pallas_kernels.ragged_paged_attention_tpu import ragged_paged_attention_tpu
        return functools.partial(ragged_paged_attention_tpu,
                                 interpret=backend == "pallas-tpu-interpret")
    raise ValueError(f"not a concrete attention backend: {backend!r}")


_CASCADE_IMPL = {"reference": ("reference", False), "pallas-gpu": ("gpu", False),
                 "pallas-interpret": ("gpu", True), "pallas-tpu": ("tpu", False),
                 "pallas-tpu-interpret": ("tpu", True)}


def paged_attention(q: jax.Array, k: jax.Array, v: jax.Array, cache: MHAPool, layer: jax.Array,
                    meta: AttentionMetadata, *, sm_scale: float,
                    sliding_window: int | None = None, soft_cap: float | None = None,
                    backend: str = "auto", mesh=None) -> tuple[jax.Array, MHAPool]:
    """q [T, N, H], new k/v [T, K, H] -> (attention output [T, N, H], cache with k/v stored).
    `backend` is one of BACKENDS (see the module docstring); `mesh` a tensor-parallel
    ("tp",) mesh the arrays are sharded over, or None."""
    cache = cache.write(layer, k, v, meta.slots)
    impl = resolve_backend(backend, page_size=cache.k.shape[2], head_dim=cache.k.shape[-1])
    args = (q, cache.k, cache.v, meta.kv_lens, meta.page_indices, meta.cu_q_lens, meta.num_seqs)
    prefix = getattr(meta, "shared_prefix", None)
    attend = functools.partial(_attend, impl, sm_scale=sm_scale, soft_cap=soft_cap,
                               sliding_window=sliding_window)
    if mesh is None or impl == "reference":
        return attend(*args, layer, prefix), cache
    return _per_device(attend, mesh, args, layer, prefix), cache


def _per_device(attend, mesh, args, layer, prefix) -> jax.Array:
    """Run a kernel (Pallas, or the blocked loops, which GSPMD would not split by head)
    under shard_map: on each device, its query heads against its KV heads when the pool is
    split by KV head; otherwise (KV replicated) every device computes all heads, as the
    kernels need whole GQA groups."""
    from jax.sharding import PartitionSpec as P

    tp = mesh.shape["tp"]
    split = args[1].shape[3] % tp == 0
    heads = P(None, "tp", None) if split else P()
    pages = P(None, None, None, "tp", None) if split else P()
    specs = (heads, pages, pages, P(), P(), P(), P(), P())
    if prefix is None:
        fn = jax.shard_map(lambda *a: attend(*a, None), mesh=mesh, in_specs=specs,
                           out_specs=heads, check_vma=False)
        return fn(*args, layer)
    fn = jax.shard_map(attend, mesh=mesh, in_specs=(*specs, P()), out_specs=heads,
                       check_vma=False)
    return fn(*args, layer, prefix)


def _attend(impl: str, q, k_pages, v_pages, kv_lens, page_indices, cu_q_lens, num_seqs, layer,
            prefix, *, sm_scale: float, soft_cap: float | None,
            sliding_window: int | None) -> jax.Array:
    args = (q, k_pages, v_pages, kv_lens, page_indices, cu_q_lens, num_seqs)

    def plain():
        return ragged_attention_fn(impl)(*args, layer=layer, sm_scale=sm_scale,
                                         soft_cap=soft_cap, sliding_window=sliding_window)

    if prefix is None or sliding_window is not None or impl not in _CASCADE_IMPL:
        return plain()
    kernel, interpret = _CASCADE_IMPL[impl]

    def cascade():
        return cascade_attention(*args, prefix.pages, prefix.length, prefix.seq_mask,
                                 layer=layer, sm_scale=sm_scale, soft_cap=soft_cap,
                                 impl=kernel, interpret=interpret)

    # Steps without a prefix worth sharing (length 0) take the plain kernel in the same program.
    return jax.lax.cond(prefix.length[0] > 0, cascade, plain)
