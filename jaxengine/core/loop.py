"""The engine-core process's loop: build the core `config.parallel` asks for, then serve the
client's socket (jaxengine/core/messages.py) until told to shut down."""

from __future__ import annotations

import logging
import traceback

from jaxengine.config import EngineConfig
from jaxengine.core import multihost
from jaxengine.core.data_parallel import DataParallelCore
from jaxengine.core.engine_core import EngineCore
from jaxengine.core.messages import TokenOutput, output_rows
from jaxengine.parallel.mesh import build_meshes

log = logging.getLogger(__name__)


def make_core(config: EngineConfig):
    """The engine core for `config.parallel`: a plain EngineCore on one device, one on a
    tensor-parallel mesh, or a DataParallelCore over dp of them; with --nnodes, node 0's, whose
    steps the other nodes replay (jaxengine/core/multihost.py)."""
    p = config.parallel
    if p.node_rank > 0:
        raise ValueError(f"--node-rank {p.node_rank} follows node 0 and serves no requests: "
                         "start it with `python -m jaxengine.serve`, not the Engine API")
    multihost.init_distributed(config)
    meshes = build_meshes(config)
    core = EngineCore(config, meshes[0]) if len(meshes) == 1 else \
        DataParallelCore(config, meshes)
    if p.nnodes > 1:
        conns = multihost.accept_followers(config)
        for i, replica in enumerate(getattr(core, "replicas", [core])):
            replica.runner = multihost.MirroredRunner(replica.runner, i, conns)
    return core


def run_engine_core(config: EngineConfig, conn) -> None:
    """Process entry point: build the core, then serve the pipe until told to shut down."""
    logging.basicConfig(level=config.server.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # JAX reports every backend it could not find (TPU on a GPU box, ...) at INFO.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    try:
        core = make_core(config)
        info = core.info()
    except Exception as e:  # start-up failures go back to the client as a clear error
        log.error("engine core failed to start:\n%s", traceback.format_exc())
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", info))
    while True:
        outputs: list[TokenOutput] = []
        wait = not core.has_work
        while wait or conn.poll():
            try:
                kind, payload = conn.recv()
            except EOFError:
                return  # the client is gone
            wait = False
            if kind == "shutdown":
                return
            if kind == "call":
                call_id, method = payload
                conn.send(("reply", (call_id, core.call(method))))
                continue
            out = core.add_request(payload) if kind == "add" else core.abort(payload)
            if out is not None:
                outputs.append(out)
        try:
            outputs.extend(core.step())
        except Exception:
            log.error("step failed; aborting its requests:\n%s", traceback.format_exc())
            outputs.extend(_abort_all(core))
        if outputs:
            conn.send(("outputs", output_rows(outputs)))
        elif core.idle:  # only grammars compiling: wait for them or for a message
            conn.poll(0.005)


def _abort_all(core: EngineCore) -> list[TokenOutput]:
    if hasattr(core, "replicas"):  # a DataParallelCore: every replica's requests
        return [out for replica in core.replicas for out in _abort_all(replica)]
    core._in_flight = None
    rids = [r.rid for r in list(core.scheduler.running) + list(core.scheduler.waiting)]
    rids += list(core._compiling)
    outputs = [out for rid in rids if (out := core.abort(rid)) is not None]
    for out in outputs:
        out.abort_status, out.abort_message = 500, "the engine step failed (see the server log)"
    return outputs
