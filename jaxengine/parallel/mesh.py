"""Device meshes: one global ("dp", "tp") mesh, and per data-parallel replica its "tp" row."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from jaxengine.config import EngineConfig

DP, TP = "dp", "tp"


def make_mesh(tp: int, dp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (dp, tp) mesh over the first dp * tp devices (all processes' devices, in
    jax.devices() order, so a tp group stays on one host when tp divides the local count)."""
    if tp < 1 or dp < 1:
        raise ValueError(f"--tp-size and --dp-size must be >= 1 (got tp={tp}, dp={dp})")
    if devices is None and jax.process_count() > 1:
        return _multi_process_mesh(tp, dp)
    devices = list(jax.devices() if devices is None else devices)
    wanted = tp * dp
    if wanted > len(devices):
        kind = devices[0].platform if devices else "none"
        raise ValueError(
            f"--tp-size {tp} x --dp-size {dp} needs {wanted} devices, but only "
            f"{len(devices)} {kind} device(s) are visible"
            + (" (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)"
               if kind == "cpu" else ""))
    return Mesh(np.asarray(devices[:wanted], dtype=object).reshape(dp, tp), (DP, TP))


def _multi_process_mesh(tp: int, dp: int) -> Mesh:
    """Each tensor-parallel group takes tp / nodes devices from every node, so that every node
    holds a copy of each replica's sampled tokens (node 0 reads them without a gather)."""
    nodes = jax.process_count()
    if tp % nodes:
        raise ValueError(f"with --nnodes {nodes}, --tp-size must be a multiple of {nodes} (each "
                         f"tensor-parallel group spans every node); got --tp-size {tp}")
    local = tp // nodes
    by_node = [sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
               for p in range(nodes)]
    fewest = min(len(x) for x in by_node)
    if local * dp > fewest:
        raise ValueError(f"--tp-size {tp} x --dp-size {dp} over {nodes} nodes needs "
                         f"{local * dp} devices per node, but a node has only {fewest}")
    rows = [[d for node in by_node for d in node[r * local:(r + 1) * local]] for r in range(dp)]
    return Mesh(np.asarray(rows, dtype=object).reshape(dp, tp), (DP, TP))


def replica_meshes(mesh: Mesh) -> list[Mesh]:
    """One ("tp",) mesh per data-parallel replica: replicas never talk to each other."""
    return [Mesh(row, (TP,)) for row in mesh.devices]


def build_meshes(config: EngineConfig) -> list:
    """One ("tp",) mesh per replica; [None] for one device, whose programs carry no sharding."""
    p = config.parallel
    if p.tp_size == 1 and p.dp_size == 1 and p.nnodes == 1:
        return [None]
    return replica_meshes(make_mesh(p.tp_size, p.dp_size))
