"""Validate and measure jaxengine on whatever platform JAX finds, in one command.

    python -m benchmarks.device_check --bundle DIR [--out DIR] [--quick] [--only SECTION,...]
    python -m benchmarks.device_check --make-bundle DIR      # on CPU, before a device run
    python -m benchmarks.device_check --platform cpu --quick # every section on CPU, ~2 min

Sections (each independent: a failure is reported and the next one runs):
  env        versions, device, copy bandwidth and bf16 matmul ceilings
  kernels    every attention kernel vs the jnp reference on this device
  engine     the engine end to end vs the CPU golden of the bundle; a mixed workload; start-up
  attention  decode / prefill attention speed vs the reference
  model      an 8B-shaped model's decode, prefill, MBU and host time per step
The summary table comes last (the device kind in every row); --out gets results.json and
summary.md. The recipe for a GPU machine without network is in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

SECTIONS = ("env", "kernels", "engine", "attention", "model")
# What a section needs beyond jax and numpy: missing, it is skipped with the reason.
NEEDS = {"engine": ("flax", "transformers", "tokenizers"),
         "model": ("flax", "transformers", "tokenizers")}


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.device_check",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write results.json and summary.md here")
    ap.add_argument("--quick", action="store_true",
                    help="trimmed sizes, meant to fit one 10-minute device call; ~2 min on CPU")
    ap.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    ap.add_argument("--platform", choices=("cpu", "gpu", "tpu"),
                    help="force JAX's platform (default: whatever JAX finds)")
    ap.add_argument("--bundle", type=Path,
                    help="the tokenizer, model configs and golden outputs made by "
                    "--make-bundle (on CPU without it, a quick one is made in a temp dir)")
    ap.add_argument("--make-bundle", type=Path, metavar="DIR",
                    help="write the bundle to DIR (on CPU, with the default model) and exit")
    args = ap.parse_args(argv)
    args.sections = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}: choose from {', '.join(SECTIONS)}")
    return args


def _missing(section: str) -> list[str]:
    return [m for m in NEEDS.get(section, ()) if importlib.util.find_spec(m) is None]


def _table(rows, device_kind: str) -> str:
    lines = ["| section | check | result | status | device |", "|---|---|---|---|---|"]
    for r in rows:
        value = r.value.replace("|", "/")
        lines.append(f"| {r.section} | {r.name} | {value} | {r.status} | {device_kind} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.platform:  # before jax is imported anywhere
        os.environ["JAX_PLATFORMS"] = args.platform
    # The engine section's Engine runs its core in a child process on the same device: a parent
    # that had preallocated 75% of it would leave the child too little.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.make_bundle:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the golden is a CPU float32 run
        from .bundle import make_bundle

        make_bundle(args.make_bundle, quick=args.quick)
        print(f"bundle written to {args.make_bundle}")
        return 0

    import jax

    from .common import Mode, Row

    device = jax.devices()[0]
    mode = Mode(quick=args.quick, platform=device.platform)
    ctx: dict = {"bundle": args.bundle}
    temp = None
    wants_bundle = {"engine", "model"} & set(args.sections)
    if args.bundle is None and mode.cpu and wants_bundle:
        from .bundle import make_bundle

        temp = tempfile.TemporaryDirectory(prefix="device-check-bundle-")
        ctx["bundle"] = make_bundle(Path(temp.name), quick=True)
    if "env" not in args.sections:  # later sections divide by the ceilings
        from .env import copy_bandwidth

        ctx["copy_bandwidth"] = copy_bandwidth((64 if mode.cpu else 512) << 20, iters=3)
    rows, timings = [], {}
    for section in args.sections:
        t0 = time.perf_counter()
        print(f"== {section} ({device.device_kind})", flush=True)
        if missing := _missing(section):
            rows.append(Row(section, "packages", f"skipped: needs {', '.join(missing)}", "skip"))
            continue
        try:
            module = importlib.import_module(f"benchmarks.device_check.{section}")
            new = module.run(mode, ctx)
        except Exception as e:
            traceback.print_exc()
            new = [Row(section, "section", f"crashed: {type(e).__name__}: {str(e)[:300]}",
                       "FAIL", {"traceback": traceback.format_exc()})]
        timings[section] = time.perf_counter() - t0
        for r in new:
            print(f"   {r.status:<5} {r.name}: {r.value}", flush=True)
        rows += new
    if temp is not None:
        temp.cleanup()
    table = _table(rows, device.device_kind)
    failed = [r for r in rows if r.status == "FAIL"]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {"device_kind": device.device_kind, "platform": device.platform,
                  "quick": args.quick, "date": time.strftime("%Y-%m-%d"),
                  "section_seconds": timings, "sections": list(args.sections),
                  "rows": [r.to_json() for r in rows]}
        (args.out / "results.json").write_text(json.dumps(result, indent=1, default=str))
        (args.out / "summary.md").write_text(table + "\n")
    print()
    print(table)
    print(f"\n{len(rows)} rows, {len(failed)} failed; seconds per section: "
          + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
