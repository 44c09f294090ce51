"""The Llama family: Llama, Mistral, Qwen2 (q/k/v bias) and Qwen3 (q/k RMSNorm) in one module.

Variants are flags on LlamaArch. The decoder layers are one module whose parameters carry a
leading layer axis [L, ...], run under `lax.scan`, so compile time does not grow with depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxengine.models.rope import apply_rope, inverse_frequencies
from jaxengine.runtime.attention import AttentionMetadata, paged_attention
from jaxengine.runtime.kv_cache import KVCache


@dataclass(frozen=True)
class LlamaArch:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: tuple[tuple[str, Any], ...] | None
    tie_word_embeddings: bool
    attention_bias: bool
    qk_norm: bool
    max_position_embeddings: int
    sliding_window: int | None

    @classmethod
    def from_hf_config(cls, c: dict[str, Any]) -> LlamaArch:
        arch = c["architectures"][0]
        heads = c["num_attention_heads"]
        scaling = c.get("rope_scaling") or c.get("rope_parameters")
        if scaling and (scaling.get("rope_type") or scaling.get("type")) == "default":
            scaling = None
        return cls(
            architecture=arch,
            vocab_size=c["vocab_size"],
            hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"],
            num_layers=c["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=c.get("num_key_value_heads") or heads,
            head_dim=c.get("head_dim") or c["hidden_size"] // heads,
            rms_norm_eps=c.get("rms_norm_eps", 1e-6),
            rope_theta=c.get("rope_theta") or (scaling or {}).get("rope_theta", 10000.0),
            rope_scaling=tuple(sorted(scaling.items())) if scaling else None,
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            attention_bias=arch == "Qwen2ForCausalLM" or bool(c.get("attention_bias", False)),
            qk_norm=arch == "Qwen3ForCausalLM",
            max_position_embeddings=c.get("max_position_embeddings", 4096),
            sliding_window=c.get("sliding_window") if c.get("use_sliding_window", True) else None,
        )


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (x32 * weight.astype(jnp.float32)).astype(x.dtype)


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], dtype: jnp.dtype, scale: float = 0.02):
    return nnx.Param(scale * jax.random.normal(rngs.params(), shape, dtype))


class DecoderLayers(nnx.Module):
    """All L decoder layers; every parameter has a leading layer axis."""

    def __init__(self, a: LlamaArch, dtype: jnp.dtype, rngs: nnx.Rngs):
        L, D, F = a.num_layers, a.hidden_size, a.intermediate_size
        NH, KH = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
        self.input_norm = nnx.Param(jnp.ones((L, D), dtype))
        self.post_attention_norm = nnx.Param(jnp.ones((L, D), dtype))
        self.q_proj = _param(rngs, (L, D, NH), dtype)
        self.k_proj = _param(rngs, (L, D, KH), dtype)
        self.v_proj = _param(rngs, (L, D, KH), dtype)
        self.o_proj = _param(rngs, (L, NH, D), dtype)
        self.gate_proj = _param(rngs, (L, D, F), dtype)
        self.up_proj = _param(rngs, (L, D, F), dtype)
        self.down_proj = _param(rngs, (L, F, D), dtype)
        if a.attention_bias:
            self.q_bias = nnx.Param(jnp.zeros((L, NH), dtype))
            self.k_bias = nnx.Param(jnp.zeros((L, KH), dtype))
            self.v_bias = nnx.Param(jnp.zeros((L, KH), dtype))
        if a.qk_norm:
            self.q_norm = nnx.Param(jnp.ones((L, a.head_dim), dtype))
            self.k_norm = nnx.Param(jnp.ones((L, a.head_dim), dtype))


def _layer(a: LlamaArch, p: dict[str, jax.Array], x: jax.Array, cache: KVCache,
           layer: jax.Array, positions: jax.Array, meta: AttentionMetadata,
           inv_freq: jax.Array, attention_backend: str, mesh=None) -> tuple[jax.Array, KVCache]:
    """One decoder layer on x [T, D]; p holds this layer's parameters (layer axis removed)."""
    T = x.shape[0]
    h = rms_norm(x, p["input_norm"], a.rms_norm_eps)
    q, k, v = h @ p["q_proj"], h @ p["k_proj"], h @ p["v_proj"]
    if a.attention_bias:
        q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
    q = q.reshape(T, a.num_heads, a.head_dim)       # [T, N, H]
    k = k.reshape(T, a.num_kv_heads, a.head_dim)    # [T, K, H]
    v = v.reshape(T, a.num_kv_heads, a.head_dim)
    if a.qk_norm:
        q = rms_norm(q, p["q_norm"], a.rms_norm_eps)
        k = rms_norm(k, p["k_norm"], a.rms_norm_eps)
    q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
    attn, cache = paged_attention(q, k, v, cache, layer, meta, sm_scale=a.head_dim ** -0.5,
                                  sliding_window=a.sliding_window, backend=attention_backend,
                                  mesh=mesh)
    x = x + attn.reshape(T, -1) @ p["o_proj"]
    h = rms_norm(x, p["post_attention_norm"], a.rms_norm_eps)
    x = x + (jax.nn.silu(h @ p["gate_proj"]) * (h @ p["up_proj"])) @ p["down_proj"]
    return x, cache


class LlamaForCausalLM(nnx.Module):
    """forward(tokens, positions, cache, meta) -> (hidden [T, D], cache); logits(hidden)."""

    def __init__(self, arch: LlamaArch, dtype: jnp.dtype = jnp.float32,
                 rngs: nnx.Rngs | None = None, attention_backend: str = "auto", mesh=None):
        rngs = rngs or nnx.Rngs(0)
        self.arch = arch
        self.attention_backend = attention_backend  # see jaxengine/runtime/attention.py
        # A tensor-parallel ("tp",) mesh: GSPMD shards the jnp code by itself, but Pallas
        # kernels are opaque to it and must run per device (attention.py); None: one device.
        self.attention_mesh = mesh
        self.embed = _param(rngs, (arch.vocab_size, arch.hidden_size), dtype)
        self.layers = DecoderLayers(arch, dtype, rngs)
        self.norm = nnx.Param(jnp.ones((arch.hidden_size,), dtype))
        if not arch.tie_word_embeddings:
            self.lm_head = _param(rngs, (arch.hidden_size, arch.vocab_size), dtype)

    def __call__(self, tokens: jax.Array, positions: jax.Array, cache: KVCache,
                 meta: AttentionMetadata) -> tuple[jax.Array, KVCache]:
        """tokens, positions [T] -> final-normed hidden states [T, D] and the updated cache."""
        a = self.arch
        x = self.embed[...][tokens]
        stacked = {name: var[...] for name, var in vars(self.layers).items()
                   if isinstance(var, nnx.Param)}
        scaling = dict(a.rope_scaling) if a.rope_scaling else None
        inv_freq = jnp.asarray(inverse_frequencies(a.head_dim, a.rope_theta, scaling))

        def body(carry, xs):
            x, cache = carry
            layer, params = xs
            x, cache = _layer(a, params, x, cache, layer, positions, meta, inv_freq,
                              self.attention_backend, self.attention_mesh)
            return (x, cache), None

        layer_ids = jnp.arange(a.num_layers, dtype=jnp.int32)
        (x, cache), _ = jax.lax.scan(body, (x, cache), (layer_ids, stacked))
        return rms_norm(x, self.norm[...], a.rms_norm_eps), cache

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [B, D] -> float32 logits [B, V]."""
        if self.arch.tie_word_embeddings:
            out = hidden @ self.embed[...].T
        else:
            out = hidden @ self.lm_head[...]
        return out.astype(jnp.float32)


# HF parameter names -> (our parameter, whether the HF [out, in] matrix is transposed).
# `{i}` marks per-layer tensors, stacked along our leading layer axis.
HF_NAMES: dict[str, tuple[str, bool]] = {
    "model.embed_tokens.weight": ("embed", False),
    "model.norm.weight": ("norm", False),
    "lm_head.weight": ("lm_head", True),
    "model.layers.{i}.input_layernorm.weight": ("layers.input_norm", False),
    "model.layers.{i}.post_attention_layernorm.weight": ("layers.post_attention_norm", False),
    "model.layers.{i}.self_attn.q_proj.weight": ("layers.q_proj", True),
    "model.layers.{i}.self_attn.k_proj.weight": ("layers.k_proj", True),
    "model.layers.{i}.self_attn.v_proj.weight": ("layers.v_proj", True),
    "model.layers.{i}.self_attn.o_proj.weight": ("layers.o_proj", True),
    "model.layers.{i}.self_attn.q_proj.bias": ("layers.q_bias", False),
    "model.layers.{i}.self_attn.k_proj.bias": ("layers.k_bias", False),
    "model.layers.{i}.self_attn.v_proj.bias": ("layers.v_bias", False),
    "model.layers.{i}.self_attn.q_norm.weight": ("layers.q_norm", False),
    "model.layers.{i}.self_attn.k_norm.weight": ("layers.k_norm", False),
    "model.layers.{i}.mlp.gate_proj.weight": ("layers.gate_proj", True),
    "model.layers.{i}.mlp.up_proj.weight": ("layers.up_proj", True),
    "model.layers.{i}.mlp.down_proj.weight": ("layers.down_proj", True),
}
