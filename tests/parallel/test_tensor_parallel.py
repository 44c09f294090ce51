"""Tensor and data parallelism on 8 virtual CPU devices, each case in a fresh interpreter
(the device count is fixed when JAX starts, and the suite's JAX is already up)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(model: str, layouts: list, *extra: str, timeout: float = 600) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "tests.parallel.tp_script", model,
                           json.dumps(layouts), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_tiny_model_tp_dp_tokens_sharding_compiles_and_errors(random_model_dir, tmp_path):
    from jaxengine.models.checkpoint import load_checkpoint
    from jaxengine.models.orbax_checkpoint import save
    from jaxengine.models.registry import table_for_config

    ck = load_checkpoint(random_model_dir)
    orbax_dir = str(save(ck, table_for_config(ck.hf_config), tmp_path / "orbax"))
    r = run_script(random_model_dir, [[1, 1], [2, 1], [4, 1], [1, 2], [2, 2], [2, 1, "compile"],
                                      [16, 1, "errors"], [4, 4, "errors"], [3, 1, "errors"],
                                      [8, 1, "errors"], [1, 2, "prefix"],
                                      [4, 1, "orbax", orbax_dir]])
    want = r["1x1"]["tokens"]
    assert all(len(set(t)) > 2 for t in want), want   # the test can tell layouts apart
    for layout in ("2x1", "4x1", "1x2", "2x2", "2x1-compile", "4x1-orbax"):
        assert r[layout]["tokens"] == want, layout
    tp2, tp4 = r["2x1"], r["4x1"]
    assert "'tp'" in tp2["q_spec"] and tp2["q_device_bytes"] * 2 == tp2["q_bytes"]
    assert tp2["devices"] == [0, 1]
    # 2 KV heads: split over tp=2, replicated over tp=4.
    assert "'tp'" in tp2["kv_spec"] and tp2["kv_device_bytes"] * 2 == tp2["kv_bytes"]
    assert tp4["kv_spec"] == "P()" and tp4["kv_device_bytes"] == tp4["kv_bytes"]
    assert tp4["q_device_bytes"] * 4 == tp4["q_bytes"]
    # Norms stay whole, everything else splits: well under half the bytes per device.
    assert tp2["weights_device_bytes"] < 0.55 * tp2["weights_bytes"]
    assert r["1x2"]["replica_devices"] == [[0], [1]]
    assert r["2x2"]["replica_devices"] == [[0, 1], [2, 3]]
    # The orbax checkpoint restores each array straight into its sharding.
    assert r["4x1-orbax"]["q_spec"] == tp4["q_spec"]
    assert r["4x1-orbax"]["weights_device_bytes"] == tp4["weights_device_bytes"]
    # Warm-up compiled every sharded program: serving compiled nothing.
    assert r["2x1-compile"]["compiles"] == 0
    assert "needs 16 devices, but only 8 cpu" in r["16x1-errors"]["error"]
    assert "needs 16 devices" in r["4x4-errors"]["error"]
    assert "does not divide the model's MLP intermediate size 128" in r["3x1-errors"]["error"]
    assert "exceeds the model's 4 attention heads" in r["8x1-errors"]["error"]
    # dp: a request goes to the replica whose radix cache holds its prefix.
    routing = r["1x2-prefix"]
    assert routing["replica"] == {"p1": 0, "q1": 1, "q2": 1, "p2": 0}, routing
    assert routing["cached"]["q2"] == routing["cached"]["p2"] == 48
    assert routing["routed_by_prefix"] == 2


def test_default_model_tp2_dp2_equals_one_device():
    """9 query heads / 3 KV heads: tp=2 pads to 12 heads and replicates the KV heads."""
    r = run_script("default", [[1, 1], [2, 2]], "auto", "6")
    assert r["2x2"]["tokens"] == r["1x1"]["tokens"]
    layers, hidden = 30, 576
    assert r["2x2"]["q_bytes"] == layers * hidden * (hidden * 12 // 9) * 4  # padded heads
    assert r["2x2"]["kv_spec"] == "P()"


def test_pallas_attention_under_shard_map_matches_the_reference():
    """The kernels are opaque to GSPMD: per device under shard_map, KV split or replicated."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "tests.parallel.attention_script"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    errors = ast.literal_eval(lines[-1][len("RESULT "):])
    assert set(errors) == {2, 4} and max(errors.values()) < 2e-5, errors
