"""Two processes on this machine (--nnodes 2 over loopback, one CPU device each, tp=2 across
them) serve a request; its output equals one process on one device."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [[1, 2, 3, 4, 5], list(range(100, 140))]


def _free_port_pair() -> int:
    while True:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def _one_device(options: dict, params: dict) -> list[list[int]]:
    """The reference in this process (one device): no second engine process to start."""
    from jaxengine.config import EngineConfig
    from jaxengine.core.engine_core import EngineCore
    from jaxengine.core.messages import AddRequest
    from jaxengine.sampling_params import SamplingParams

    core = EngineCore(EngineConfig.from_kwargs(**options))
    for i, prompt in enumerate(PROMPTS):
        core.add_request(AddRequest(str(i), prompt, SamplingParams(**params), seed=0))
    out: dict[str, list[int]] = {str(i): [] for i in range(len(PROMPTS))}
    while core.has_work:
        for o in core.step():
            out[o.rid] += o.new_ids
    return [out[str(i)] for i in range(len(PROMPTS))]


def test_two_nodes_serve_what_one_device_serves(random_model_dir):
    import jaxengine as je

    common = dict(model_path=random_model_dir, context_length=128, max_running_requests=4,
                  chunked_prefill_size=32, max_total_tokens=512, skip_server_warmup=True,
                  dtype="float32")
    params = {"temperature": 0, "max_new_tokens": 8, "ignore_eos": True}
    want = _one_device(common, params)
    addr = f"127.0.0.1:{_free_port_pair()}"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    flags = ["--model-path", random_model_dir, "--context-length", "128",
             "--max-running-requests", "4", "--chunked-prefill-size", "32",
             "--max-total-tokens", "512", "--skip-server-warmup", "--dtype", "float32",
             "--tp", "2", "--nnodes", "2", "--dist-init-addr", addr]
    follower = subprocess.Popen([sys.executable, "-m", "jaxengine.serve", *flags,
                                 "--node-rank", "1"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with je.Engine(**common, tp_size=2, nnodes=2, node_rank=0,
                       dist_init_addr=addr) as engine:
            got = [engine.generate(input_ids=p, sampling_params=params)["output_ids"]
                   for p in PROMPTS]
            assert engine.get_server_info()["device"].endswith("(cpu)")
        assert got == want
        assert follower.wait(60) == 0, follower.stdout.read()[-3000:]
    finally:
        if follower.poll() is None:
            follower.kill()
