"""Architecture registry: HF `architectures` name -> model family, and weight placement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxengine.models import gemma, llama
from jaxengine.models.dummy import DummySource, dummy_model
from jaxengine.models.orbax_checkpoint import OrbaxSource, restore_model
from jaxengine.models.params import ParamTable, check_shape, param_arrays, params_of

# HF architecture name -> (arch config class, model class, parameter table of an arch)
ARCHITECTURES: dict[str, tuple[type, type, Any]] = {
    **{name: (llama.LlamaArch, llama.LlamaForCausalLM, llama.param_table)
       for name in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                    "Qwen3ForCausalLM")},
    **{name: (gemma.GemmaArch, gemma.GemmaForCausalLM, gemma.param_table)
       for name in ("Gemma2ForCausalLM", "Gemma3ForCausalLM")},
}


def lookup(hf_config: dict[str, Any]) -> tuple[type, type, Any]:
    names = hf_config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise ValueError(f"unsupported architecture {names}; supported: {sorted(ARCHITECTURES)}")


def arch_from_hf_config(hf_config: dict[str, Any]):
    arch_cls, _, _ = lookup(hf_config)
    return arch_cls.from_hf_config(hf_config)


def param_table(model: nnx.Module) -> ParamTable:
    """The parameter table of a model instance (of its arch, heads padded as built)."""
    for _, model_cls, table in ARCHITECTURES.values():
        if isinstance(model, model_cls):
            return table(model.arch)
    raise TypeError(f"not a registered model: {type(model).__name__}")


def table_for_config(hf_config: dict[str, Any]) -> ParamTable:
    """The parameter table of the (unpadded) model of an HF config."""
    arch_cls, _, table = lookup(hf_config)
    return table(arch_cls.from_hf_config(hf_config))


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
    if isinstance(checkpoint.source, DummySource):
        model = abstract_model(checkpoint.hf_config, dtype, attention_backend, tp)
        return dummy_model(model, param_table(model), dtype, tp)
    if isinstance(checkpoint.source, OrbaxSource):
        model = abstract_model(checkpoint.hf_config, dtype, attention_backend, tp)
        return restore_model(model, param_table(model), checkpoint.source.path, dtype, tp)
    return build_model(checkpoint.hf_config, checkpoint.tensors(), dtype, attention_backend, tp)


def build_model(hf_config: dict[str, Any], tensors: Iterable[tuple[str, np.ndarray]],
                dtype: jnp.dtype, attention_backend: str = "auto", tp=None) -> nnx.Module:
    """Place checkpoint tensors (HF names, numpy) into a model of `dtype`; no random init.
    `tp` (a jaxengine.parallel.TensorParallel) pads heads and places each tensor in its
    sharding, slice by slice; None keeps everything on the default device."""
    model = abstract_model(hf_config, dtype, attention_backend, tp)
    table = param_table(model)
    wanted = dict(params_of(model))
    for path, array in param_arrays(tensors, table, tp):
        _set(wanted.pop(path), table[path], array, dtype, tp)
    missing = sorted(wanted)
    if missing:
        raise ValueError(f"checkpoint lacks parameters for {missing}")
    return model


def _set(var: nnx.Param, param, array: np.ndarray, dtype: jnp.dtype, tp) -> None:
    check_shape(param.path, var.shape, array.shape)
    var.set_value(jnp.asarray(array, dtype) if tp is None else tp.place(param, array, dtype))
