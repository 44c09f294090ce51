"""What the device-check sections share: a result row, timing, sizes by mode."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import jax


@dataclass
class Row:
    """One line of the summary table (the device kind is added when printed)."""

    section: str
    name: str
    value: str
    status: str = "ok"      # ok | FAIL | skip | info
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Mode:
    """What the sections may spend: `quick` trims sizes; `cpu` shrinks models to toys."""

    quick: bool
    platform: str

    @property
    def cpu(self) -> bool:
        return self.platform == "cpu"


def timed(fn: Callable, *args, iters: int = 10, warmup: int = 1) -> float:
    """Median seconds of `fn(*args)`, each call waited for (the first calls compile)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fmt_bytes_s(x: float) -> str:
    return f"{x / 1e9:.1f} GB/s"
