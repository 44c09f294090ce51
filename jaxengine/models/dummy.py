"""`--load-format dummy`: seeded random weights for a model's config, made on the device.

For benchmarks and checks where the weights do not matter but their shapes do (an 8B model
on a machine no checkpoint can reach, a CI run of the engine on a GPU): only config.json and a
tokenizer are needed. Each parameter is drawn from its own key (the seed folded with a hash
of its name), so the same config gives the same weights on every platform, up to the last
bits of the float conversion:
  - norm weights are 1, biases 0;
  - the embedding (also the LM head when tied) is N(0, 1), so that logits are far apart and
    greedy tokens do not hinge on rounding;
  - every other matrix is N(0, 1/fan_in), fan_in being its input dimension.
"""

from __future__ import annotations

import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxengine.models.params import ParamTable, params_of

SEED = 0


class DummySource:
    """A checkpoint without tensors: the model is drawn at random (see `dummy_model`)."""

    def __init__(self, hf_config: dict[str, Any]) -> None:
        self.hf_config = hf_config

    def names(self) -> list[str]:
        return []

    def read(self, name: str) -> np.ndarray:
        raise KeyError(f"--load-format dummy reads no tensors (asked for {name})")


def dummy_model(model: nnx.Module, table: ParamTable, dtype: jnp.dtype, tp=None) -> nnx.Module:
    """Fill the parameters of an abstract model (shapes only) with seeded random values as
    its parameter table says (`Param.init`), in their tensor-parallel sharding when `tp` is
    given."""
    for name, var in params_of(model):
        param = table[name]
        key = jax.random.fold_in(jax.random.PRNGKey(SEED), zlib.crc32(name.encode()))
        sharding = tp.sharding(param, len(var.shape)) if tp is not None else None
        init = jax.jit(lambda k, p=param, s=tuple(var.shape): _draw(k, p.init, s, dtype),
                       out_shardings=sharding)
        var.set_value(init(key))
    return model


def _draw(key: jax.Array, init: str, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    if init == "ones":
        return jnp.ones(shape, dtype)
    if init == "zeros":
        return jnp.zeros(shape, dtype)
    x = jax.random.normal(key, shape, jnp.float32)
    if init == "normal":  # [.., in, out]: our layout is x @ w
        x = x * shape[-2] ** -0.5
    return x.astype(dtype)
