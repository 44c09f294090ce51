"""Token embedding and the LM head (tied or not, with an optional final logit soft-cap)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxengine.layers.linear import linear


def embed(tokens: jax.Array, table: jax.Array, scale: float | None = None) -> jax.Array:
    """tokens [T] -> rows of table [V, D]; `scale` (Gemma: sqrt(D)) is applied in the
    table's dtype, as HF does."""
    x = table[tokens]
    return x if scale is None else x * jnp.asarray(scale, x.dtype)


def lm_head(hidden: jax.Array, weight: jax.Array, soft_cap: float | None = None) -> jax.Array:
    """hidden [B, D] @ weight [D, V] (a tied model passes its embedding transposed) ->
    float32 logits [B, V], soft-capped to (-cap, cap) when `soft_cap` is set."""
    logits = linear(hidden, weight).astype(jnp.float32)
    if soft_cap:
        logits = soft_cap * jnp.tanh(logits / soft_cap)
    return logits
