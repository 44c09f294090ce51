"""Architecture registry: HF `architectures` name -> model family, and weight placement."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxengine.models.llama import HF_NAMES as LLAMA_HF_NAMES
from jaxengine.models.llama import LlamaArch, LlamaForCausalLM

# name -> (arch config class, model class, HF name table)
ARCHITECTURES: dict[str, tuple[type, type, dict[str, tuple[str, bool]]]] = {
    name: (LlamaArch, LlamaForCausalLM, LLAMA_HF_NAMES)
    for name in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
}

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def lookup(hf_config: dict[str, Any]) -> tuple[type, type, dict[str, tuple[str, bool]]]:
    names = hf_config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise ValueError(f"unsupported architecture {names}; supported: {sorted(ARCHITECTURES)}")


def arch_from_hf_config(hf_config: dict[str, Any]):
    arch_cls, _, _ = lookup(hf_config)
    return arch_cls.from_hf_config(hf_config)


def abstract_model(hf_config: dict[str, Any], dtype: jnp.dtype,
                   attention_backend: str = "auto", tp=None) -> nnx.Module:
    """The model's structure with shapes only (no memory): what checkpoints are placed into."""
    arch_cls, model_cls, _ = lookup(hf_config)
    arch = arch_cls.from_hf_config(tp.model_config(hf_config) if tp else hf_config)
    mesh = tp.mesh if tp else None
    return nnx.eval_shape(lambda: model_cls(arch, dtype, attention_backend=attention_backend,
                                            mesh=mesh))


def load_model(checkpoint, dtype: jnp.dtype, attention_backend: str = "auto",
               tp=None) -> nnx.Module:
    """The model of a Checkpoint: from an orbax checkpoint each array is restored straight
    into its sharding; with --load-format dummy drawn at random on the device; from anything
    else, see build_model."""
    from jaxengine.models.dummy import DummySource, dummy_model
    from jaxengine.models.orbax_checkpoint import OrbaxSource, restore_model

    if isinstance(checkpoint.source, DummySource):
        return dummy_model(abstract_model(checkpoint.hf_config, dtype, attention_backend, tp),
                           dtype, tp)
    if isinstance(checkpoint.source, OrbaxSource):
        model = abstract_model(checkpoint.hf_config, dtype, attention_backend, tp)
        return restore_model(model, checkpoint.source.path, dtype, tp)
    return build_model(checkpoint.hf_config, checkpoint.tensors(), dtype, attention_backend, tp)


def build_model(hf_config: dict[str, Any], tensors: Iterable[tuple[str, np.ndarray]],
                dtype: jnp.dtype, attention_backend: str = "auto", tp=None) -> nnx.Module:
    """Place checkpoint tensors (HF names, numpy) into a model of `dtype`; no random init.
    `tp` (a jaxengine.parallel.TensorParallel) pads heads and places each tensor in its
    sharding, slice by slice; None keeps everything on the default device."""
    model = abstract_model(hf_config, dtype, attention_backend, tp)
    wanted = dict(_params(model))
    shapes = {path: var.shape for path, var in wanted.items()}
    for path, array in param_arrays(hf_config, tensors, shapes, tp):
        _set(wanted.pop(path), path, array, dtype, tp)
    missing = sorted(wanted)
    if missing:
        raise ValueError(f"checkpoint lacks parameters for {missing}")
    return model


def param_arrays(hf_config: dict[str, Any], tensors: Iterable[tuple[str, np.ndarray]],
                 shapes: dict[str, tuple[int, ...]], tp=None) -> Iterator[tuple[str, np.ndarray]]:
    """(our parameter path, float32 array in our layout) from HF-named tensors: transposed,
    per-layer tensors stacked (yielded once complete, at the end), heads padded for `tp`."""
    _, _, table = lookup(hf_config)
    stacked: dict[str, np.ndarray] = {}
    for name, array in tensors:
        target = _target(name, table)
        if target is None or target[0] not in shapes:
            continue  # e.g. rotary inv_freq buffers, or lm_head of a tied model
        path, transpose, layer = target
        array = np.asarray(array, np.float32)
        if transpose:
            array = array.T
        if tp is not None:
            array = tp.transform(path, array)
        if layer is None:
            yield path, array
            continue
        buf = stacked.setdefault(path, np.zeros(shapes[path], np.float32))
        _check_shape(path, buf[layer].shape, array.shape)
        buf[layer] = array
    yield from stacked.items()


def _params(model: nnx.Module) -> Iterator[tuple[str, nnx.Param]]:
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            yield ".".join(str(p) for p in path), var


def _target(name: str, table: dict[str, tuple[str, bool]]):
    match = _LAYER.match(name)
    if match:
        entry = table.get("model.layers.{i}." + match.group(2))
        return (entry[0], entry[1], int(match.group(1))) if entry else None
    entry = table.get(name)
    return (entry[0], entry[1], None) if entry else None


def _check_shape(path: str, want: tuple[int, ...], got: tuple[int, ...]) -> None:
    if tuple(want) != tuple(got):
        raise ValueError(f"parameter {path}: checkpoint shape {got} != model shape {want}")


def _set(var: nnx.Param, path: str, array: np.ndarray, dtype: jnp.dtype, tp) -> None:
    _check_shape(path, var.shape, array.shape)
    var.set_value(jnp.asarray(array, dtype) if tp is None else tp.place(path, array, dtype))
