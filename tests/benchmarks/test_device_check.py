"""benchmarks/device_check must never rot between the rare runs on a GPU: its CPU run goes
through every section (the bundle made on the way) and must come out green, and its golden
comparison must catch a wrong token."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.device_check.__main__ import SECTIONS
from benchmarks.device_check.bundle import compare
from benchmarks.device_check.kernels import TOLERANCE

ROOT = Path(__file__).resolve().parents[2]


def test_the_cpu_quick_run_passes_every_section(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.device_check", "--platform", "cpu", "--quick",
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((out / "results.json").read_text())
    rows = result["rows"]
    assert result["device_kind"] == "cpu" and result["sections"] == list(SECTIONS)
    assert {r["section"] for r in rows} == set(SECTIONS)
    assert [r for r in rows if r["status"] in ("FAIL", "skip")] == []
    # Every kernel case ran and is within its tolerance (NaN is not).
    kernels = [r for r in rows if r["section"] == "kernels"]
    assert {r["name"].split(":")[0] for r in kernels} == {
        "pallas-interpret", "pallas-tpu-interpret", "blocked"}
    for r in kernels:
        errors = r["detail"]["errors"]
        assert errors and all(isinstance(e, float) and e <= TOLERANCE[("cpu", "bfloat16")]
                              for e in errors.values()), errors
    engine = {r["name"]: r for r in rows if r["section"] == "engine"}
    for dtype in ("float32", "bfloat16"):
        verdict = engine[f"tiny {dtype} greedy + logprobs vs CPU golden"]["detail"]
        assert verdict["ok"] and verdict["mismatches"] == [] and verdict["compared_steps"] > 0
    workload = next(r for name, r in engine.items() if name.startswith("64-request"))
    assert workload["detail"]["compiles_after_warmup"] == 0
    assert workload["detail"]["integrity"] == "ok"
    assert workload["detail"]["cached_tokens_total"] > 0  # the shared prefixes hit
    model = {r["name"]: r["detail"] for r in rows if r["section"] == "model"}
    assert all(model[f"decode B={b} ctx~120"]["tok_per_s"] > 0 for b in (1, 4, 8))
    assert (out / "summary.md").read_text().count("| cpu |") == len(rows)


def _golden(tokens, tops):
    return {"tokens": tokens, "top": tops}


def test_the_golden_comparison_catches_a_wrong_token_and_forgives_a_near_tie():
    tops = [[[5, -0.1], [7, -3.0]], [[9, -0.2], [4, -2.5]], [[1, -0.7], [2, -0.71]]]
    golden = _golden([[5, 9, 1]], [tops])
    assert compare(golden, golden, 1e-3, 1e-4)["ok"]
    wrong = _golden([[5, 4, 1]], [tops])
    verdict = compare(golden, wrong, 1e-3, 1e-4)
    assert not verdict["ok"] and verdict["mismatches"] == [(0, 1, 9, 4)]
    # Step 2 is a near-tie (0.01 apart): a flip there is not a failure.
    flipped = _golden([[5, 9, 2]], [tops[:2] + [[[2, -0.7], [1, -0.71]]]])
    assert compare(golden, flipped, 0.05, 0.0)["ok"]
    # Logprobs off by more than the tolerance fail even with the same tokens.
    off = _golden([[5, 9, 1]], [[[[5, -0.5], [7, -3.0]]] + tops[1:]])
    assert not compare(golden, off, 1e-3, 1e-4)["ok"]
