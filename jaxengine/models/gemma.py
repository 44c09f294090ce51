"""The Gemma family: Gemma 2 and Gemma 3 (text), by config.

What sets it apart from Llama: RMSNorm in the `(1 + w)` form, norms before and after both the
attention and the MLP, a GELU-tanh MLP, embeddings scaled by sqrt(hidden), attention scaled by
`query_pre_attn_scalar`, tied LM head, soft-capped attention and final logits (Gemma 2),
q/k norms (Gemma 3), and layers that alternate between sliding-window ("local", with their
own rope base in Gemma 3) and full attention.

The decoder runs as one `lax.scan` over blocks of the layer-type pattern (2 layers for
Gemma 2, 6 for Gemma 3), each layer of a block with its own static window and rope, so a
layer-dependent window adds no program; layers past the last whole block run unrolled.
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

SLIDING = "sliding_attention"


def _rope_dicts(c: dict[str, Any], gemma3: bool) -> tuple[dict, dict]:
    """(full-attention, sliding-attention) rope parameters, from HF's nested
    `rope_parameters` or the older flat keys."""
    params = c.get("rope_parameters") or {}
    if "full_attention" in params:
        full = dict(params["full_attention"])
        return full, dict(params.get(SLIDING) or full)
    full = dict(c.get("rope_scaling") or params or {})
    full.setdefault("rope_theta", c.get("rope_theta", 1e6 if gemma3 else 1e4))
    local = {"rope_type": "default",
             "rope_theta": c.get("rope_local_base_freq", 1e4) if gemma3 else full["rope_theta"]}
    return full, local


@dataclass(frozen=True)
class GemmaArch:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    query_pre_attn_scalar: float
    sliding_window: int | None
    layer_sliding: tuple[bool, ...]       # per layer: a local (sliding-window) layer
    rope_full: tuple[tuple[str, Any], ...]
    rope_local: tuple[tuple[str, Any], ...]
    attn_softcap: float | None
    final_softcap: float | None
    qk_norm: bool
    hidden_act: str
    max_position_embeddings: int
    tie_word_embeddings: bool = True

    @classmethod
    def from_hf_config(cls, c: dict[str, Any]) -> GemmaArch:
        arch = c["architectures"][0]
        gemma3 = arch.startswith("Gemma3")
        layers, heads = c["num_hidden_layers"], c["num_attention_heads"]
        types = c.get("layer_types") or [
            SLIDING if (i + 1) % (c.get("sliding_window_pattern") or (6 if gemma3 else 2))
            else "full_attention" for i in range(layers)]
        full, local = _rope_dicts(c, gemma3)
        return cls(
            architecture=arch, vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"], num_layers=layers, num_heads=heads,
            num_kv_heads=c.get("num_key_value_heads") or heads,
            head_dim=c.get("head_dim") or c["hidden_size"] // heads,
            rms_norm_eps=c.get("rms_norm_eps", 1e-6),
            query_pre_attn_scalar=float(c.get("query_pre_attn_scalar") or 256),
            sliding_window=c.get("sliding_window"),
            layer_sliding=tuple(t == SLIDING for t in types),
            rope_full=tuple(sorted(full.items())), rope_local=tuple(sorted(local.items())),
            attn_softcap=c.get("attn_logit_softcapping"),
            final_softcap=c.get("final_logit_softcapping"),
            qk_norm=gemma3,
            hidden_act=c.get("hidden_activation") or c.get("hidden_act") or "gelu_pytorch_tanh",
            max_position_embeddings=c.get("max_position_embeddings", 8192),
            tie_word_embeddings=bool(c.get("tie_word_embeddings", True)))

    def rope(self, sliding: bool) -> Rope:
        params = dict(self.rope_local if sliding else self.rope_full)
        scaling = params if params.get("rope_type", "default") != "default" else None
        return rope_frequencies(self.head_dim, float(params["rope_theta"]), scaling,
                                self.max_position_embeddings)

    @property
    def pattern(self) -> int:
        """The shortest period of the layer types."""
        types, n = self.layer_sliding, self.num_layers
        return next(p for p in range(1, n + 1)
                    if all(types[i] == types[i % p] for i in range(n)))


def param_table(a: GemmaArch) -> ParamTable:
    """Every parameter of the Gemma family for `a`, with its HF name and tp role."""
    L, D, V, H = a.num_layers, a.hidden_size, a.vocab_size, a.head_dim
    layer, attn = "model.layers.{i}.", "model.layers.{i}.self_attn."
    # (1 + w) norms: w = 0 is the identity.
    norms = ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
             "post_feedforward_layernorm"]
    params = [
        Param("embed", (V, D), "model.embed_tokens.weight", role="vocab", axis=0, init="embed"),
        Param("norm", (D,), "model.norm.weight", init="zeros"),
        *[Param(f"layers.{n}", (L, D), f"{layer}{n}.weight", init="zeros") for n in norms],
        *projection_params(a),
    ]
    if a.qk_norm:
        params += [Param("layers.q_norm", (L, H), attn + "q_norm.weight", init="zeros"),
                   Param("layers.k_norm", (L, H), attn + "k_norm.weight", init="zeros")]
    if not a.tie_word_embeddings:
        params.append(Param("lm_head", (D, V), "lm_head.weight", True, "vocab"))
    return ParamTable(params)


def _layer(a: GemmaArch, sliding: bool, p: dict[str, jax.Array], x: jax.Array,
           cache: MHAPool, layer: jax.Array, positions: jax.Array, meta: AttentionMetadata,
           attention_backend: str, mesh=None) -> tuple[jax.Array, MHAPool]:
    """One decoder layer on x [T, D]; p holds this layer's parameters (layer axis removed)."""
    T, eps = x.shape[0], a.rms_norm_eps

    def norm(h, name):
        return rms_norm(h, p[name], eps, offset=1.0)

    h = norm(x, "input_layernorm")
    q = linear(h, p["q_proj"]).reshape(T, a.num_heads, a.head_dim)
    k = linear(h, p["k_proj"]).reshape(T, a.num_kv_heads, a.head_dim)
    v = linear(h, p["v_proj"]).reshape(T, a.num_kv_heads, a.head_dim)
    if a.qk_norm:
        q, k = norm(q, "q_norm"), norm(k, "k_norm")
    rope = a.rope(sliding)
    q, k = apply_rope(q, positions, rope), apply_rope(k, positions, rope)
    attn, cache = paged_attention(
        q, k, v, cache, layer, meta, sm_scale=a.query_pre_attn_scalar ** -0.5,
        sliding_window=a.sliding_window if sliding else None, soft_cap=a.attn_softcap,
        backend=attention_backend, mesh=mesh)
    x = x + norm(linear(attn.reshape(T, -1), p["o_proj"]), "post_attention_layernorm")
    h = norm(x, "pre_feedforward_layernorm")
    h = gated_mlp(h, p["gate_proj"], p["up_proj"], p["down_proj"], a.hidden_act)
    return x + norm(h, "post_feedforward_layernorm"), cache


class GemmaForCausalLM(nnx.Module):
    """forward(tokens, positions, cache, meta) -> (hidden [T, D], cache); logits(hidden).
    Built with zero parameters (under nnx.eval_shape, none at all): a loader fills them."""

    def __init__(self, arch: GemmaArch, dtype: jnp.dtype = jnp.float32,
                 attention_backend: str = "auto", mesh=None):
        self.arch = arch
        self.attention_backend = attention_backend
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
        x = embed(tokens, self.embed[...], scale=a.hidden_size ** 0.5)
        stacked = self.layers.arrays()
        P = a.pattern
        blocks = a.num_layers // P

        def run(x, cache, first, params, j):
            layer = jnp.asarray(first + j, jnp.int32)
            return _layer(a, a.layer_sliding[j], params, x, cache, layer, positions, meta,
                          self.attention_backend, self.attention_mesh)

        def body(carry, xs):
            x, cache = carry
            block, params = xs
            for j in range(P):
                x, cache = run(x, cache, block * P, jax.tree.map(lambda w, j=j: w[j], params), j)
            return (x, cache), None

        head = jax.tree.map(lambda w: w[:blocks * P].reshape(blocks, P, *w.shape[1:]), stacked)
        (x, cache), _ = jax.lax.scan(body, (x, cache),
                                     (jnp.arange(blocks, dtype=jnp.int32), head))
        for i in range(blocks * P, a.num_layers):
            x, cache = run(x, cache, 0, jax.tree.map(lambda w, i=i: w[i], stacked), i)
        return rms_norm(x, self.norm[...], a.rms_norm_eps, offset=1.0), cache

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [B, D] -> float32 logits [B, V], soft-capped (Gemma 2)."""
        weight = self.embed[...].T if self.arch.tie_word_embeddings else self.lm_head[...]
        return lm_head(hidden, weight, soft_cap=self.arch.final_softcap)
