"""Orbax checkpoints of our parameter tree (made by tools/convert_checkpoint.py).

Layout of a checkpoint directory:
    jaxengine_orbax.json   marker: format version, stored dtype, parameter paths
    config.json            the HF-style config (Checkpoint.hf_config)
    tokenizer files        the tokenizer (and its chat template), as save_pretrained writes them
    params/                orbax PyTree: our parameter tree (stacked layers, [in, out] matrices)

The tree is stored unsharded and unpadded: one checkpoint serves any --tp. Loading restores
each array straight into its sharding (tensorstore reads each device's slice only), with no
HF-name mapping, transposes or stacking; only tensors whose query heads --tp pads pass
through the host.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxengine.models.params import ParamTable, param_arrays, params_of

MARKER = "jaxengine_orbax.json"
FORMAT = 1


def is_orbax_dir(path: Path) -> bool:
    return (path / MARKER).is_file()


class OrbaxSource:
    """A converted checkpoint directory; its parameters are restored by `restore_model`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = json.loads((self.path / MARKER).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.path}: orbax checkpoint format {meta.get('format')} is not "
                             f"{FORMAT}; convert it again with tools/convert_checkpoint.py")
        self.meta = meta
        self.hf_config: dict[str, Any] = json.loads((self.path / "config.json").read_text())

    def names(self) -> list[str]:
        return list(self.meta["params"])

    def read(self, name: str) -> np.ndarray:
        raise ValueError(f"{self.path} is an orbax checkpoint of our parameter tree: it has no "
                         f"HF tensor {name!r} (load it with jaxengine.models.registry.load_model)")


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _get(tree: dict[str, Any], path: str) -> Any:
    for p in path.split("."):
        tree = tree[p]
    return tree


def save(checkpoint, table: ParamTable, out: str | Path, dtype: str = "float32") -> Path:
    """Write `checkpoint` (any load_checkpoint source), whose model has the parameter table
    `table` (registry.table_for_config), as an orbax checkpoint at `out`."""
    import orbax.checkpoint as ocp

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    store = jnp.dtype(dtype)
    flat = {path: array.astype(store)
            for path, array in param_arrays(checkpoint.tensors(), table)}
    missing = sorted(set(table.params) - set(flat))
    if missing:
        raise ValueError(f"checkpoint lacks parameters for {missing}")
    with ocp.PyTreeCheckpointer() as saver:
        saver.save(out / "params", _nest(flat), force=True)
    (out / "config.json").write_text(json.dumps(checkpoint.hf_config, indent=1))
    checkpoint.tokenizer.save_pretrained(out)
    (out / MARKER).write_text(json.dumps({"format": FORMAT, "dtype": dtype,
                                          "params": sorted(flat)}))
    return out


def restore_model(model, table: ParamTable, path: Path, dtype: jnp.dtype, tp=None):
    """Fill the abstract `model` (parameter table `table`) from the orbax checkpoint at
    `path`, each array restored in its final sharding (`tp`'s, or the default device) and
    dtype."""
    import orbax.checkpoint as ocp
    from jax.sharding import SingleDeviceSharding

    wanted = dict(params_of(model))
    padded = tp is not None and tp.padded_group != tp.group
    host = {p for p in wanted if padded and table[p].query_heads}
    default = SingleDeviceSharding(jax.devices()[0])

    def restore_args(path: str, var) -> ocp.RestoreArgs:
        if path in host:
            return ocp.RestoreArgs(restore_type=np.ndarray)
        sharding = default if tp is None else tp.sharding(table[path], len(var.shape))
        return ocp.ArrayRestoreArgs(restore_type=jax.Array, sharding=sharding,
                                    global_shape=var.shape, dtype=dtype)

    args = _nest({p: restore_args(p, v) for p, v in wanted.items()})
    with ocp.PyTreeCheckpointer() as restorer:
        restored = restorer.restore(path / "params", args=ocp.args.PyTreeRestore(
            restore_args=args))
    for p, var in wanted.items():
        array = _get(restored, p)
        if p in host:  # stacked [L, ...]: pad each layer's heads, then place slice by slice
            param = table[p]
            array = tp.place(param, np.stack([tp.transform(param, a) for a in array]), dtype)
        if tuple(array.shape) != tuple(var.shape):
            raise ValueError(f"parameter {p}: checkpoint shape {array.shape} != model shape "
                             f"{var.shape}")
        var.set_value(array)
    return model
