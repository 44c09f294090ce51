"""What the device-check sections share: a result row and sizes by mode."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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


def fmt_bytes_s(x: float) -> str:
    return f"{x / 1e9:.1f} GB/s"
