"""Section engine: the whole engine on the device, in float32 and bfloat16, with the default
model's architecture (seeded random weights, the real tokenizer; a tiny model on CPU):
  - its greedy tokens and top logprobs for fixed prompts equal the CPU golden of the bundle,
    within the dtype's tolerance (the golden and the workload are one Engine call each, so a
    bfloat16 golden also runs with nothing compiled after warm-up);
  - a 64-request mixed workload (shared prefixes, prompts longer than a prefill chunk, a JSON
    grammar when llguidance is installed, sampling, stop tokens) ends without an error, with
    every KV page accounted for and no compilation after warm-up;
  - start-up with full warm-up, with an empty compilation cache and then a warm one.
"""

from __future__ import annotations

import importlib.util
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from .bundle import compare, golden_outputs, model_dir
from .common import Mode, Row

# (atol, rtol) on logprobs per dtype: GPUs run float32 dots in TF32 by default.
TOLERANCE = {("cpu", "float32"): (1e-3, 1e-4), ("accel", "float32"): (0.1, 0.02),
             ("cpu", "bfloat16"): (0.5, 0.05), ("accel", "bfloat16"): (0.5, 0.05)}


def _workload(llm, rng: random.Random, grammar: bool) -> list[dict[str, Any]]:
    shared = [rng.randrange(1000, 20000) for _ in range(200)]
    jobs = []
    for k in range(64):
        ids = shared[:rng.choice([0, 64, 200])] + [rng.randrange(1000, 20000)
                                                     for _ in range(rng.randint(1, 300))]
        p: dict[str, Any] = {"max_new_tokens": rng.randint(1, 24), "ignore_eos": True}
        kind = k % 5
        if kind == 1:
            p.update(temperature=0.8, top_p=0.9, seed=k)
        elif kind == 2:
            p.update(temperature=0.7, top_k=40, repetition_penalty=1.1)
        elif kind == 3:
            p.update(temperature=0.0, stop_token_ids=[rng.randrange(100, 200)])
        elif kind == 4 and grammar:
            p.update(temperature=0.0, ignore_eos=False, json_schema='{"type": "object", '
                     '"properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}')
        else:
            p.update(temperature=0.0)
        jobs.append((ids, p))
    outs = llm.generate(input_ids=[ids for ids, _ in jobs],
                        sampling_params=[p for _, p in jobs])
    return outs


def _start(path: Path, dtype: str, cache_dir: str, mode: Mode):
    """An Engine with full warm-up and the workload's limits, and its start-up seconds."""
    import jaxengine as je

    t0 = time.perf_counter()
    llm = je.Engine(model_path=str(path), load_format="dummy", dtype=dtype,
                    compilation_cache_dir=cache_dir, context_length=1024,
                    max_running_requests=4 if mode.cpu else 16,
                    chunked_prefill_size=32 if mode.cpu else 128,
                    max_total_tokens=8192 if mode.cpu else 32768)
    return llm, time.perf_counter() - t0


def _versus_golden(name: str, dtype: str, golden: dict | None, got: dict, kind: str) -> Row:
    if golden is None:
        return Row("engine", f"{name} {dtype} vs golden", "the bundle has no golden for it",
                   "skip")
    atol, rtol = TOLERANCE[(kind, dtype)]
    verdict = compare(golden, got, atol, rtol)
    return Row("engine", f"{name} {dtype} greedy + logprobs vs CPU golden",
               f"{verdict['compared_steps']} steps compared, {len(verdict['mismatches'])} "
               f"mismatches, worst logprob error "
               f"{verdict['worst_logprob_error_in_tolerances']:.2f} of tolerance",
               "ok" if verdict["ok"] else "FAIL", verdict)


def run(mode: Mode, ctx: dict[str, Any]) -> list[Row]:
    """float32 golden on an Engine without warm-up; then bfloat16 with full warm-up, started
    with an empty compilation cache (cold, shut down at once) and again with it (warm): the
    warm one runs the bfloat16 golden and the workload, and must compile nothing."""
    bundle = ctx.get("bundle")
    if bundle is None:
        return [Row("engine", "bundle", "no --bundle given (make one with --make-bundle)",
                    "skip")]
    name = "tiny" if mode.cpu else "smollm2-135m"
    golden = json.loads((Path(bundle) / "golden.json").read_text()).get(name)
    path = model_dir(Path(bundle), name)
    kind = "cpu" if mode.cpu else "accel"
    grammar = importlib.util.find_spec("llguidance") is not None
    rows = [_versus_golden(name, "float32", golden,
                           golden_outputs(path, "float32", skip_server_warmup=True), kind)]
    with tempfile.TemporaryDirectory() as cache:
        llm, cold = _start(path, "bfloat16", cache, mode)
        programs = llm.core_info["warmup_programs"]
        llm.shutdown()
        llm, warm = _start(path, "bfloat16", cache, mode)
        try:
            before = llm.get_server_info()["num_compiles"]
            rows.append(_versus_golden(name, "bfloat16", golden, golden_outputs(llm), kind))
            t0 = time.perf_counter()
            outs = _workload(llm, random.Random(0), grammar)
            took = time.perf_counter() - t0
            info = llm.get_server_info()
            compiles = info["num_compiles"] - before
            reasons = sorted({o["meta_info"]["finish_reason"]["type"] for o in outs})
            integrity = llm.check_integrity() or "ok"
        finally:
            llm.shutdown()
    ok = reasons and "abort" not in reasons and integrity == "ok" and compiles == 0
    rows.append(Row("engine", "64-request mixed workload" + (
        "" if grammar else " (no llguidance: no grammar)"),
        f"{took:.1f} s, finish {reasons}, pages {integrity}, {compiles} compiles after "
        "warm-up", "ok" if ok else "FAIL",
        {"seconds": took, "finish_reasons": reasons, "integrity": integrity,
         "compiles_after_warmup": compiles, "cached_tokens_total": info["cached_tokens_total"]}))
    rows.append(Row("engine", f"start-up with warm-up ({programs} programs)",
                    f"cold cache {cold:.1f} s, warm {warm:.1f} s", "info",
                    {"cold_s": cold, "warm_s": warm, "programs": programs}))
    return rows
