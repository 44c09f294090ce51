"""Tensor-parallel sharding of a model's parameters (by the role its parameter table gives
each, jaxengine/models/params.py) and of the KV pool.

Megatron layout over the mesh axis "tp": q/k/v and MLP gate/up are column-parallel (output
features split), o and down row-parallel (input features split, XLA inserts the all-reduce),
embedding and LM head vocab-parallel, the KV pool split by KV head. GSPMD propagates the rest,
so the model code stays written for one device.

Head counts that tp does not divide:
- query heads are padded per KV group with zero heads (zero q columns, zero o rows) to the
  smallest group size G' with K * G' divisible by tp. A zero row of o_proj drops whatever the
  padded head attends to, so the output is exact; the cost is (G' - G) / G more attention.
  The default model (9 heads, 3 KV heads) runs 12 heads under tp=2 and tp=4, none under tp=3.
- KV heads are sharded when tp divides them, else every device holds all of them (the KV pool
  is then replicated: tp buys no KV capacity, only weight memory and matmul time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxengine.models.params import Param
from jaxengine.parallel.mesh import TP


@dataclass(frozen=True)
class TensorParallel:
    """How one model is laid out over a ("tp",) mesh."""

    mesh: Mesh
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int

    @classmethod
    def for_model(cls, mesh: Mesh, hf_config: dict[str, Any], arch) -> TensorParallel:
        tp = mesh.shape[TP]
        if tp > arch.num_heads:
            raise ValueError(f"--tp-size {tp} exceeds the model's {arch.num_heads} attention "
                             "heads; use at most that many")
        if arch.intermediate_size % tp:
            raise ValueError(f"--tp-size {tp} does not divide the model's MLP intermediate "
                             f"size {arch.intermediate_size}")
        return cls(mesh, arch.num_heads, arch.num_kv_heads, arch.head_dim, arch.vocab_size)

    @property
    def tp(self) -> int:
        return self.mesh.shape[TP]

    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def padded_group(self) -> int:
        g = self.group
        while (self.num_kv_heads * g) % self.tp:
            g += 1
        return g

    @property
    def padded_heads(self) -> int:
        return self.num_kv_heads * self.padded_group

    @property
    def kv_sharded(self) -> bool:
        return self.num_kv_heads % self.tp == 0

    def model_config(self, hf_config: dict[str, Any]) -> dict[str, Any]:
        """The HF config of the model as built: padded query heads, same head dim."""
        return {**hf_config, "num_attention_heads": self.padded_heads,
                "head_dim": self.head_dim, "num_key_value_heads": self.num_kv_heads}

    def transform(self, param: Param, array: np.ndarray) -> np.ndarray:
        """Pad the query heads of one layer's tensor (our layout, layer axis not yet added)
        with zero heads, per KV group, along the axis tp splits."""
        if self.padded_group == self.group or not param.query_heads:
            return array
        axis = param.split_axis % array.ndim
        K, G, H = self.num_kv_heads, self.group, self.head_dim
        before, after = array.shape[:axis], array.shape[axis + 1:]
        x = array.reshape(*before, K, G, H, *after)
        widths = [(0, 0)] * x.ndim
        widths[axis + 1] = (0, self.padded_group - G)
        return np.pad(x, widths).reshape(*before, -1, *after)

    def spec(self, param: Param, ndim: int) -> P:
        axis = param.split_axis
        if (param.role == "kv" and not self.kv_sharded) or (
                param.role == "vocab" and self.vocab_size % self.tp):
            axis = None
        if axis is None:
            return P()
        axis %= ndim
        return P(*(TP if i == axis else None for i in range(ndim)))

    def sharding(self, param: Param, ndim: int) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(param, ndim))

    def place(self, param: Param, array: np.ndarray, dtype: jnp.dtype) -> jax.Array:
        """A global array in its sharding: each device receives (and converts) only its slice,
        so no device ever holds a whole sharded weight."""
        sharding = self.sharding(param, array.ndim)
        return jax.make_array_from_callback(
            array.shape, sharding, lambda index: np.asarray(array[index], dtype))

    def pool_sharding(self, pool_spec) -> NamedSharding:
        """Where the KV pool of `pool_spec` (jaxengine/cache/) lives on the mesh."""
        return NamedSharding(self.mesh, pool_spec.partition_spec(self.tp, TP))

    @property
    def logits_sharding(self) -> NamedSharding:
        """[B, V] logits as the vocabulary-parallel LM head leaves them."""
        split = self.vocab_size % self.tp == 0
        return NamedSharding(self.mesh, P(None, TP) if split else P())

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())
