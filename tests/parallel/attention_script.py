"""`python -m tests.parallel.attention_script` with 4 virtual CPU devices: the Pallas
attention under shard_map (KV heads split, and replicated) against the one-device reference.
Prints RESULT and the largest error per layout."""

from __future__ import annotations

import functools
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxengine.layers.attention import _attend, _per_device  # noqa: E402
from tests.pallas_kernels.cases import make_case  # noqa: E402


def _run(attend, mesh, *args):
    return _per_device(attend, mesh, args[:-1], args[-1], None)


def main() -> None:
    case = make_case([5, 1, 17], [21, 9, 17], num_heads=4, num_kv_heads=2, head_dim=16,
                     page_size=8)
    want = _attend("reference", *case.args, case.layer, None, sm_scale=0.25, soft_cap=None,
                   sliding_window=None)
    errors = {}
    for tp in (2, 4):   # 2 KV heads: split over 2 devices, replicated over 4
        mesh = Mesh(np.asarray(jax.devices()[:tp]), ("tp",))
        split = 2 % tp == 0
        q = jax.device_put(case.q, NamedSharding(mesh, P(None, "tp", None)))
        pages = NamedSharding(mesh, P(None, None, None, "tp", None) if split else P())
        args = (q, jax.device_put(case.k_pages, pages), jax.device_put(case.v_pages, pages),
                *case.args[3:])
        attend = functools.partial(_attend, "pallas-interpret", sm_scale=0.25, soft_cap=None,
                                   sliding_window=None)
        run = functools.partial(_run, attend, mesh)
        got = jax.jit(run)(*args, case.layer)
        live = int(case.cu_q_lens[-1])
        errors[tp] = float(np.max(np.abs(np.asarray(got)[:live] - np.asarray(want)[:live])))
    print("RESULT", errors)


if __name__ == "__main__":
    main()
