"""Multi-host serving: one JAX program over the devices of several processes.

JAX is multi-controller: every process must run the same jitted programs, in the same order,
with the same inputs. Node 0 schedules (and alone serves HTTP); its model runners send each
step's inputs to the other nodes before dispatching it (`MirroredRunner`), and the followers
(`run_follower`) replay them on identical runners. Steps are host numpy arrays (StepInputs),
small next to a step's compute; the followers never read results, so they run as far ahead as
node 0 lets them.

The step channel is a multiprocessing connection on the port after --dist-init-addr's,
authenticated with a key derived from that address: like JAX's own coordinator, it belongs
on a private network.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import time
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

import jax

from jaxengine.config import EngineConfig
from jaxengine.models.checkpoint import load_checkpoint
from jaxengine.parallel.mesh import build_meshes
from jaxengine.runtime.model_runner import ModelRunner

log = logging.getLogger(__name__)


def init_distributed(config: EngineConfig) -> None:
    """Join the JAX cluster of --nnodes processes (a no-op for one node)."""
    p = config.parallel
    if p.nnodes == 1:
        return
    # Cross-process collectives on CPU need an implementation; GPU/TPU ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(p.dist_init_addr, num_processes=p.nnodes,
                               process_id=p.node_rank)
    log.info("node %d of %d joined %s: %d devices in all, %d here", p.node_rank, p.nnodes,
             p.dist_init_addr, jax.device_count(), jax.local_device_count())


def _step_address(config: EngineConfig) -> tuple[tuple[str, int], bytes]:
    host, port = config.parallel.dist_init_addr.rsplit(":", 1)
    key = hashlib.sha256(b"jaxengine-steps:" + config.parallel.dist_init_addr.encode()).digest()
    return (host, int(port) + 1), key


def accept_followers(config: EngineConfig) -> list[Connection]:
    """Node 0: wait for every other node's step channel."""
    address, key = _step_address(config)
    with Listener(address, authkey=key) as listener:
        conns = [listener.accept() for _ in range(config.parallel.nnodes - 1)]
    log.info("%d follower node(s) connected", len(conns))
    # Node 0 hosts JAX's coordination service: a follower that outlives it aborts. atexit
    # runs this before JAX's own shutdown (registered earlier), whose barrier then waits for
    # the followers to shut down too.
    atexit.register(_release, conns)
    return conns


def _release(conns: list[Connection]) -> None:
    for conn in conns:
        try:
            conn.send(("shutdown", -1, None))
            conn.close()
        except OSError:
            pass


class MirroredRunner:
    """A ModelRunner on node 0 whose every dispatch is first sent to the followers."""

    def __init__(self, runner, index: int, conns: list[Connection]):
        self._runner, self._index, self._conns = runner, index, conns

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def _send(self, message: tuple) -> None:
        for conn in self._conns:
            conn.send(message)

    def run(self, inputs):
        logits, prompt = self.forward(inputs)
        return (*self.sample(logits, inputs, None), prompt)

    def forward(self, inputs):
        self._send(("forward", self._index, inputs))
        return self._runner.forward(inputs)

    def sample(self, logits, inputs, bitmask):
        self._send(("sample", self._index, inputs, bitmask))
        return self._runner.sample(logits, inputs, bitmask)


def run_follower(config: EngineConfig) -> None:
    """Nodes 1..N-1: build the same runners as node 0, then replay its steps until it goes."""
    init_distributed(config)
    checkpoint = load_checkpoint(config.model.model_path, config.model.tokenizer_path,
                                     config.model.load_format)
    runners = [ModelRunner(config, checkpoint, mesh) for mesh in build_meshes(config)]
    if not config.server.skip_server_warmup:
        for runner in runners:
            runner.warmup()
    address, key = _step_address(config)
    conn = _connect(address, key)
    log.info("node %d follows node 0's steps", config.parallel.node_rank)
    logits: dict[int, Any] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = ("shutdown", -1, None)
        kind, index, inputs = message[:3]
        if kind == "shutdown":
            log.info("node 0 stopped; node %d stops", config.parallel.node_rank)
            jax.distributed.shutdown()
            return
        if kind == "forward":
            logits[index] = runners[index].forward(inputs)[0]
        else:
            runners[index].sample(logits.pop(index), inputs, message[3])


def _connect(address: tuple[str, int], key: bytes, timeout: float = 600.0) -> Connection:
    # Node 0 opens the channel only once it has loaded and warmed up, as the followers have.
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Client(address, authkey=key)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
