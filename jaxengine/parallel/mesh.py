"""Device meshes: one global ("dp", "tp") mesh, and per data-parallel replica its "tp" row."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

DP, TP = "dp", "tp"


def make_mesh(tp: int, dp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (dp, tp) mesh over the first dp * tp devices (all processes' devices, in
    jax.devices() order, so a tp group stays on one host when tp divides the local count)."""
    devices = list(jax.devices() if devices is None else devices)
    wanted = tp * dp
    if tp < 1 or dp < 1:
        raise ValueError(f"--tp-size and --dp-size must be >= 1 (got tp={tp}, dp={dp})")
    if wanted > len(devices):
        kind = devices[0].platform if devices else "none"
        raise ValueError(
            f"--tp-size {tp} x --dp-size {dp} needs {wanted} devices, but only "
            f"{len(devices)} {kind} device(s) are visible"
            + (" (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)"
               if kind == "cpu" else ""))
    return Mesh(np.asarray(devices[:wanted], dtype=object).reshape(dp, tp), (DP, TP))


def replica_meshes(mesh: Mesh) -> list[Mesh]:
    """One ("tp",) mesh per data-parallel replica: replicas never talk to each other."""
    return [Mesh(row, (TP,)) for row in mesh.devices]
