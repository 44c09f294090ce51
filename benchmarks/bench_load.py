"""Weight load time by checkpoint format: `python -m benchmarks.bench_load DIR [--tp N]`.

DIR gets the default model as an HF safetensors directory (float32) and as an orbax checkpoint
(tools/convert_checkpoint.py); each is then loaded into a ModelRunner's parameter tree (read,
converted and placed on the device(s)) in a fresh process, best of --repeat."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def _export_safetensors(out: Path) -> None:
    from safetensors.numpy import save_file

    from jaxengine.models.checkpoint import load_checkpoint

    ck = load_checkpoint(None)
    out.mkdir(parents=True, exist_ok=True)
    save_file(dict(ck.tensors()), str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(ck.hf_config))
    ck.tokenizer.save_pretrained(out)


def _time_load(path: str, tp: int) -> float:
    code = f"""
import time, jax
from jaxengine.models.checkpoint import load_checkpoint
from jaxengine.models.registry import load_model
from jaxengine.parallel import TensorParallel, make_mesh, replica_meshes
from jaxengine.models.registry import arch_from_hf_config
t0 = time.perf_counter()
ck = load_checkpoint({path!r})
tp = None
if {tp} > 1:
    mesh = replica_meshes(make_mesh({tp}))[0]
    tp = TensorParallel.for_model(mesh, ck.hf_config, arch_from_hf_config(ck.hf_config))
model = load_model(ck, jax.numpy.float32, tp=tp)
jax.block_until_ready(jax.tree.leaves(model))
print("SECONDS", time.perf_counter() - t0)
"""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={max(tp, 1)}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    return float(out.split("SECONDS")[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.dir)
    st, ob = root / "safetensors", root / "orbax"
    if not (st / "model.safetensors").exists():
        _export_safetensors(st)
    if not (ob / "jaxengine_orbax.json").exists():
        subprocess.run([sys.executable, "-m", "tools.convert_checkpoint", str(st), str(ob)],
                       check=True)
    for name, path in (("gguf (default)", None), ("safetensors", str(st)), ("orbax", str(ob))):
        best = min(_time_load(path, args.tp) for _ in range(args.repeat))
        print(f"{name:16s} tp={args.tp}: {best:.2f} s")


if __name__ == "__main__":
    main()
