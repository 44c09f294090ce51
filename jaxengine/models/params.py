"""A model family's parameter table: every parameter once, with what the loaders, the
tensor-parallel layout, the orbax restore and the dummy initialiser need to know about it.
No parameter name is spelled outside its model file.

Our layout: linear weights are [in, out] (`x @ w`); parameters under "layers." carry a
leading layer axis [L, ...] (the decoder runs under `lax.scan`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# How a parameter is split over the tensor-parallel axis (Megatron):
#   column      output features split (q/gate/up projections, their biases)
#   kv          output features over KV heads: split when tp divides the KV heads, else replicated
#   row         input features split (o/down projections; XLA adds the all-reduce)
#   vocab       the vocabulary axis split when tp divides it (embedding, LM head)
#   replicated  every device holds all of it (norms)
ROLES = ("column", "kv", "row", "vocab", "replicated")
INITS = ("normal", "embed", "ones", "zeros")
_LAYER = re.compile(r"^(.*)\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Param:
    path: str                     # our name, e.g. "layers.q_proj"
    shape: tuple[int, ...]
    hf: str                       # the HF tensor name; "{i}" stands for the layer index
    transpose: bool = False       # HF stores [out, in]
    role: str = "replicated"
    query_heads: bool = False     # the split axis holds query heads (--tp may pad them)
    init: str = "normal"          # --load-format dummy: N(0, 1/fan_in), N(0, 1), 1 or 0
    axis: int | None = None       # the split axis, when not the role's (-1; row: -2)

    def __post_init__(self) -> None:
        assert self.role in ROLES and self.init in INITS, self

    @property
    def stacked(self) -> bool:
        return "{i}" in self.hf

    @property
    def split_axis(self) -> int | None:
        """The axis --tp splits (negative, so it holds with or without the layer axis)."""
        if self.role == "replicated":
            return None
        if self.axis is not None:
            return self.axis
        return -2 if self.role == "row" else -1


class ParamTable:
    """The parameters of one model instance (its arch decides which exist and their shapes)."""

    def __init__(self, params: Iterable[Param]) -> None:
        self.params = {p.path: p for p in params}
        self._hf = {p.hf: p for p in self.params.values()}

    def __getitem__(self, path: str) -> Param:
        return self.params[path]

    def __iter__(self):
        return iter(self.params.values())

    def from_hf(self, name: str) -> tuple[Param, int | None] | None:
        """(our parameter, layer index or None) for an HF tensor name; None if not ours
        (e.g. rotary buffers, or the LM head of a tied model)."""
        if name in self._hf:
            return self._hf[name], None
        match = _LAYER.match(name)
        if match:
            p = self._hf.get(f"{match.group(1)}.{{i}}.{match.group(3)}")
            if p is not None:
                return p, int(match.group(2))
        return None


def projection_params(a) -> list[Param]:
    """The attention and gated-MLP matrices of a Llama-shaped decoder `a` (num_layers,
    hidden_size, intermediate_size, num_heads, num_kv_heads, head_dim), under HF's names."""
    L, D, F = a.num_layers, a.hidden_size, a.intermediate_size
    NH, KH = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    attn, mlp = "model.layers.{i}.self_attn.", "model.layers.{i}.mlp."
    return [
        Param("layers.q_proj", (L, D, NH), attn + "q_proj.weight", True, "column",
              query_heads=True),
        Param("layers.k_proj", (L, D, KH), attn + "k_proj.weight", True, "kv"),
        Param("layers.v_proj", (L, D, KH), attn + "v_proj.weight", True, "kv"),
        Param("layers.o_proj", (L, NH, D), attn + "o_proj.weight", True, "row",
              query_heads=True),
        Param("layers.gate_proj", (L, D, F), mlp + "gate_proj.weight", True, "column"),
        Param("layers.up_proj", (L, D, F), mlp + "up_proj.weight", True, "column"),
        Param("layers.down_proj", (L, F, D), mlp + "down_proj.weight", True, "row"),
    ]


class StackedLayers(nnx.Module):
    """All L decoder layers' parameters (the table's "layers." ones), each with a leading
    layer axis."""

    def __init__(self, table: ParamTable, dtype: jnp.dtype):
        create_params(self, table, "layers.", dtype)

    def arrays(self) -> dict[str, jax.Array]:
        return {name: var[...] for name, var in vars(self).items()
                if isinstance(var, nnx.Param)}


def create_params(owner: nnx.Module, table: ParamTable, prefix: str, dtype: jnp.dtype) -> None:
    """Set the table's parameters under `prefix` ("" or "layers.") on `owner`, as zeros:
    models are built under nnx.eval_shape and filled by a loader (registry.load_model)."""
    for p in table:
        if p.path.startswith(prefix) and "." not in p.path[len(prefix):]:
            setattr(owner, p.path[len(prefix):], nnx.Param(jnp.zeros(p.shape, dtype)))


def param_arrays(tensors: Iterable[tuple[str, np.ndarray]], table: ParamTable,
                 tp=None) -> Iterator[tuple[str, np.ndarray]]:
    """(our parameter path, float32 array in our layout) from HF-named tensors: transposed,
    per-layer tensors stacked (yielded once complete, at the end), heads padded for `tp`."""
    stacked: dict[str, np.ndarray] = {}
    for name, array in tensors:
        target = table.from_hf(name)
        if target is None:
            continue  # e.g. rotary inv_freq buffers, or lm_head of a tied model
        param, layer = target
        array = np.asarray(array, np.float32)
        if param.transpose:
            array = array.T
        if tp is not None:
            array = tp.transform(param, array)
        if layer is None:
            yield param.path, array
            continue
        buf = stacked.setdefault(param.path, np.zeros(param.shape, np.float32))
        check_shape(param.path, buf[layer].shape, array.shape)
        buf[layer] = array
    yield from stacked.items()


def params_of(model: nnx.Module) -> Iterator[tuple[str, nnx.Param]]:
    """(path, variable) of every parameter of a model."""
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            yield ".".join(str(p) for p in path), var


def check_shape(path: str, want: tuple[int, ...], got: tuple[int, ...]) -> None:
    if tuple(want) != tuple(got):
        raise ValueError(f"parameter {path}: checkpoint shape {got} != model shape {want}")
