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

from jaxengine.cache.mha_pool import MHAPool, MHAPoolSpec
from jaxengine.layers.attention import AttentionMetadata, paged_attention
from jaxengine.layers.embedding import embed, lm_head
from jaxengine.layers.linear import linear
from jaxengine.layers.mlp import gated_mlp
from jaxengine.layers.norms import rms_norm
from jaxengine.layers.rope import Rope, apply_rope, rope_frequencies
from jaxengine.models.params import (
    Param,
    ParamTable,
    StackedLayers,
    create_params,
    projection_params,
)


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
    hidden_act: str = "silu"

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
            hidden_act=c.get("hidden_act", "silu"),
        )

    def rope(self) -> Rope:
        scaling = dict(self.rope_scaling) if self.rope_scaling else None
        return rope_frequencies(self.head_dim, self.rope_theta, scaling,
                                self.max_position_embeddings)


def param_table(a: LlamaArch) -> ParamTable:
    """Every parameter of the Llama family for `a`, with its HF name and tp role."""
    L, D, V, H = a.num_layers, a.hidden_size, a.vocab_size, a.head_dim
    NH, KH = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    attn = "model.layers.{i}.self_attn."
    params = [
        Param("embed", (V, D), "model.embed_tokens.weight", role="vocab", axis=0, init="embed"),
        Param("norm", (D,), "model.norm.weight", init="ones"),
        Param("layers.input_norm", (L, D), "model.layers.{i}.input_layernorm.weight",
              init="ones"),
        Param("layers.post_attention_norm", (L, D),
              "model.layers.{i}.post_attention_layernorm.weight", init="ones"),
        *projection_params(a),
    ]
    if a.attention_bias:
        params += [
            Param("layers.q_bias", (L, NH), attn + "q_proj.bias", role="column",
                  query_heads=True, init="zeros"),
            Param("layers.k_bias", (L, KH), attn + "k_proj.bias", role="kv", init="zeros"),
            Param("layers.v_bias", (L, KH), attn + "v_proj.bias", role="kv", init="zeros"),
        ]
    if a.qk_norm:
        params += [Param("layers.q_norm", (L, H), attn + "q_norm.weight", init="ones"),
                   Param("layers.k_norm", (L, H), attn + "k_norm.weight", init="ones")]
    if not a.tie_word_embeddings:
        params.append(Param("lm_head", (D, V), "lm_head.weight", True, "vocab"))
    return ParamTable(params)


def _layer(a: LlamaArch, p: dict[str, jax.Array], x: jax.Array, cache: MHAPool,
           layer: jax.Array, positions: jax.Array, meta: AttentionMetadata,
           rope: Rope, attention_backend: str, mesh=None) -> tuple[jax.Array, MHAPool]:
    """One decoder layer on x [T, D]; p holds this layer's parameters (layer axis removed)."""
    T = x.shape[0]
    h = rms_norm(x, p["input_norm"], a.rms_norm_eps)
    q = linear(h, p["q_proj"], p.get("q_bias")).reshape(T, a.num_heads, a.head_dim)
    k = linear(h, p["k_proj"], p.get("k_bias")).reshape(T, a.num_kv_heads, a.head_dim)
    v = linear(h, p["v_proj"], p.get("v_bias")).reshape(T, a.num_kv_heads, a.head_dim)
    if a.qk_norm:
        q = rms_norm(q, p["q_norm"], a.rms_norm_eps)
        k = rms_norm(k, p["k_norm"], a.rms_norm_eps)
    q, k = apply_rope(q, positions, rope), apply_rope(k, positions, rope)
    attn, cache = paged_attention(q, k, v, cache, layer, meta, sm_scale=a.head_dim ** -0.5,
                                  sliding_window=a.sliding_window, backend=attention_backend,
                                  mesh=mesh)
    x = x + linear(attn.reshape(T, -1), p["o_proj"])
    h = rms_norm(x, p["post_attention_norm"], a.rms_norm_eps)
    return x + gated_mlp(h, p["gate_proj"], p["up_proj"], p["down_proj"], a.hidden_act), cache


class LlamaForCausalLM(nnx.Module):
    """forward(tokens, positions, cache, meta) -> (hidden [T, D], cache); logits(hidden).
    Built with zero parameters (under nnx.eval_shape, none at all): a loader fills them."""

    def __init__(self, arch: LlamaArch, dtype: jnp.dtype = jnp.float32,
                 attention_backend: str = "auto", mesh=None):
        self.arch = arch
        self.attention_backend = attention_backend  # see jaxengine/layers/attention.py
        # A tensor-parallel ("tp",) mesh: GSPMD shards the jnp code by itself, but Pallas
        # kernels are opaque to it and must run per device (attention.py); None: one device.
        self.attention_mesh = mesh
        table = param_table(arch)
        create_params(self, table, "", dtype)
        self.layers = StackedLayers(table, dtype)

    def kv_pool_spec(self, dtype: jnp.dtype) -> MHAPoolSpec:
        return MHAPoolSpec.for_arch(self.arch, dtype)

    def __call__(self, tokens: jax.Array, positions: jax.Array, cache: MHAPool,
                 meta: AttentionMetadata) -> tuple[jax.Array, MHAPool]:
        """tokens, positions [T] -> final-normed hidden states [T, D] and the updated cache."""
        a = self.arch
        x = embed(tokens, self.embed[...])
        stacked = self.layers.arrays()
        rope = a.rope()

        def body(carry, xs):
            x, cache = carry
            layer, params = xs
            x, cache = _layer(a, params, x, cache, layer, positions, meta, rope,
                              self.attention_backend, self.attention_mesh)
            return (x, cache), None

        layer_ids = jnp.arange(a.num_layers, dtype=jnp.int32)
        (x, cache), _ = jax.lax.scan(body, (x, cache), (layer_ids, stacked))
        return rms_norm(x, self.norm[...], a.rms_norm_eps), cache

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [B, D] -> float32 logits [B, V]."""
        weight = self.embed[...].T if self.arch.tie_word_embeddings else self.lm_head[...]
        return lm_head(hidden, weight)
