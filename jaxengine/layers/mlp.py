"""The gated MLP of Llama-style models: down(act(gate(x)) * up(x))."""

from __future__ import annotations

import functools

import jax

from jaxengine.layers.linear import linear

# HF `hidden_act` names -> the activation.
ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def gated_mlp(x: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array,
              act: str = "silu") -> jax.Array:
    """x [T, D] with gate, up [D, F] and down [F, D] -> [T, D]."""
    return linear(activation(act)(linear(x, gate)) * linear(x, up), down)
