"""SamplingParams: how one request samples and when it stops (SGLang's names)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 or 0: no top-k
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    n: int = 1
    seed: int | None = None
    stop_strs: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.stop_strs = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @classmethod
    def from_any(cls, value: SamplingParams | dict[str, Any] | None) -> SamplingParams:
        """Accept a SamplingParams, a dict of its fields, or None (defaults); then validate."""
        if value is None:
            params = cls()
        elif isinstance(value, SamplingParams):
            params = dataclasses.replace(value)
        elif isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(cls) if f.init}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown sampling parameter(s) {unknown}")
            params = cls(**value)
        else:
            raise ValueError(f"sampling_params must be a dict or SamplingParams, not {type(value)}")
        params.validate()
        return params

    def validate(self) -> None:
        """Raise ValueError naming the first parameter that is out of range."""
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 0, "must be >= 0"),
            ("min_new_tokens", 0 <= self.min_new_tokens, "must be >= 0"),
            ("temperature", self.temperature >= 0.0, "must be >= 0"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("top_k", self.top_k == -1 or self.top_k >= 0, "must be -1 (off) or >= 0"),
            ("min_p", 0.0 <= self.min_p <= 1.0, "must be in [0, 1]"),
            ("frequency_penalty", -2.0 <= self.frequency_penalty <= 2.0, "must be in [-2, 2]"),
            ("presence_penalty", -2.0 <= self.presence_penalty <= 2.0, "must be in [-2, 2]"),
            ("repetition_penalty", 0.0 < self.repetition_penalty <= 2.0, "must be in (0, 2]"),
            ("n", 1 <= self.n <= 128, "must be in [1, 128]"),
            ("stop", all(isinstance(s, str) and s for s in self.stop_strs),
             "must be a non-empty string or a list of them"),
            ("stop_token_ids", all(isinstance(t, int) and t >= 0
                                   for t in self.stop_token_ids or []),
             "must be a list of non-negative token ids"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"{name} {why} (got {getattr(self, name)!r})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1
