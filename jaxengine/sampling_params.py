"""SamplingParams: how one request samples and when it stops (SGLang's names)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

# Most top alternatives a request may ask for per token (OpenAI's limit), and most
# logit_bias entries: both are fixed widths of the on-device sampling inputs.
MAX_TOP_LOGPROBS = 20
# Most token ids a request may ask the logprobs of at every position (token_ids_logprob).
MAX_TOKEN_IDS_LOGPROB = 32
MAX_LOGIT_BIAS = 64
# Most distinct token ids min_new_tokens holds back (stop_token_ids plus the EOS ids).
MAX_SUPPRESSED = 64
# Token counts beyond this are nonsense (and would overflow the device's int32 counters); seeds
# are 64-bit, as OpenAI's.
MAX_TOKENS = 2**31 - 1
# A stop_regex is searched in the decoded text of this many last output tokens.
STOP_REGEX_WINDOW = 64
INT64 = 2**63


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
    # Stop when the output's tail (the last STOP_REGEX_WINDOW tokens) matches one of these
    # regexes; the text is cut at the match, as at a stop string.
    stop_regex: str | list[str] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    n: int = 1
    seed: int | None = None
    # Structured output (at most one): a JSON schema as a JSON string, a regex, an EBNF grammar.
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    # Append the tokens a grammar forces in one step instead of sampling each (jaxengine's
    # own switch; outputs are the same either way under greedy decoding).
    jump_forward: bool = True
    # Added to the logits before sampling, {token id: bias in [-100, 100]} (JSON keys may be
    # strings); -100 bans a token, +100 all but forces it.
    logit_bias: dict[int, float] | None = None
    # Report each output token's logprob (meta_info["output_token_logprobs"]), and the
    # top_logprobs_num most likely alternatives at each position ("output_top_logprobs").
    return_logprob: bool = False
    top_logprobs_num: int = 0
    # With return_logprob, also each prompt token's logprob from this position on
    # (meta_info["input_token_logprobs"], and "input_top_logprobs"); -1: output tokens only.
    # Past the prompt it means its last token, as SGLang clamps it.
    logprob_start_len: int = -1
    # With return_logprob, these tokens' logprobs at every reported position (SGLang's
    # "output_token_ids_logprobs" / "input_token_ids_logprobs").
    token_ids_logprob: list[int] | None = None
    stop_strs: list[str] = field(default_factory=list, init=False, repr=False)
    stop_regexes: list[re.Pattern] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.stop_strs = _as_list(self.stop)
        try:  # validate() names a bad one
            self.stop_regexes = [_compile_stop_regex(r) for r in _as_list(self.stop_regex)]
        except ValueError:
            self.stop_regexes = []

    @property
    def stops_on_text(self) -> bool:
        return bool(self.stop_strs or self.stop_regexes)

    @property
    def wants_prompt_logprobs(self) -> bool:
        """Prompt tokens' logprobs are reported (from logprob_start_len on)."""
        return self.return_logprob and self.logprob_start_len >= 0

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
            try:
                params = cls(**value)
            except TypeError as e:
                raise ValueError(str(e)) from e
        else:
            raise ValueError(f"sampling_params must be a dict or SamplingParams, not {type(value)}")
        params.validate()
        return params

    def validate(self) -> None:
        """Raise ValueError naming the first parameter of the wrong type or out of range."""
        self._check_types()
        checks = [
            ("max_new_tokens", 0 <= self.max_new_tokens <= MAX_TOKENS,
             f"must be in [0, {MAX_TOKENS}]"),
            ("min_new_tokens", 0 <= self.min_new_tokens <= MAX_TOKENS,
             f"must be in [0, {MAX_TOKENS}]"),
            ("temperature", self.temperature >= 0.0, "must be >= 0"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("top_k", -1 <= self.top_k < INT64, "must be -1 (off) or >= 0"),
            ("min_p", 0.0 <= self.min_p <= 1.0, "must be in [0, 1]"),
            ("frequency_penalty", -2.0 <= self.frequency_penalty <= 2.0, "must be in [-2, 2]"),
            ("presence_penalty", -2.0 <= self.presence_penalty <= 2.0, "must be in [-2, 2]"),
            ("repetition_penalty", 0.0 < self.repetition_penalty <= 2.0, "must be in (0, 2]"),
            ("n", 1 <= self.n <= 128, "must be in [1, 128]"),
            ("seed", self.seed is None or -INT64 <= self.seed < INT64, "must be a 64-bit integer"),
            ("stop", all(isinstance(s, str) and s for s in self.stop_strs),
             "must be a non-empty string or a list of them"),
            ("stop_token_ids", all(not isinstance(t, bool) and isinstance(t, int) and t >= 0
                                   for t in self.stop_token_ids or []),
             "must be a list of non-negative token ids"),
            ("json_schema", sum(g is not None for g in (self.json_schema, self.regex, self.ebnf))
             <= 1, "cannot be combined with regex or ebnf: give one grammar"),
            ("top_logprobs_num", 0 <= self.top_logprobs_num <= MAX_TOP_LOGPROBS,
             f"must be in [0, {MAX_TOP_LOGPROBS}]"),
            ("logprob_start_len", -1 <= self.logprob_start_len <= MAX_TOKENS,
             "must be -1 (output tokens only) or a prompt position >= 0"),
            ("token_ids_logprob", all(not isinstance(t, bool) and isinstance(t, int) and t >= 0
                                      for t in self.token_ids_logprob or [])
             and len(self.token_ids_logprob or []) <= MAX_TOKEN_IDS_LOGPROB,
             f"must be a list of at most {MAX_TOKEN_IDS_LOGPROB} token ids"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"{name} {why} (got {getattr(self, name)!r})")
        self.stop_regexes = [_compile_stop_regex(r) for r in _as_list(self.stop_regex)]
        if self.logit_bias is not None:
            self.logit_bias = _check_logit_bias(self.logit_bias)

    def _check_types(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = _TYPES.get(f.name)
            if kind is None or value is None:
                continue
            ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
            if not ok:
                want = "a number" if kind is _NUMBER else f"of type {kind.__name__}"
                raise ValueError(f"{f.name} must be {want}, not {type(value).__name__}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number (got {value!r})")
        if self.stop is not None and not isinstance(self.stop, (str, list)):
            raise ValueError("stop must be a string or a list of strings")
        if self.stop_token_ids is not None and not isinstance(self.stop_token_ids, list):
            raise ValueError("stop_token_ids must be a list of token ids")

    @property
    def grammar(self) -> tuple[str, str] | None:
        """(kind, spec) of the request's grammar, if it has one."""
        for kind in ("json_schema", "regex", "ebnf"):
            spec = getattr(self, kind)
            if spec is not None:
                return kind, spec
        return None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


def _check_logit_bias(bias: Any) -> dict[int, float]:
    """{token id: bias} with int keys; ids past the vocabulary are the engine's check."""
    if not isinstance(bias, dict):
        raise ValueError("logit_bias must be a dict of token id -> bias")
    if len(bias) > MAX_LOGIT_BIAS:
        raise ValueError(f"logit_bias may hold at most {MAX_LOGIT_BIAS} tokens "
                         f"(got {len(bias)})")
    out = {}
    for key, value in bias.items():
        try:
            token = int(key) if not isinstance(key, bool) else -1
        except (TypeError, ValueError):
            token = -1
        if token < 0:
            raise ValueError(f"logit_bias key {key!r} is not a token id")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not -100.0 <= value <= 100.0:  # NaN fails the range too
            raise ValueError(f"logit_bias value {value!r} for token {key} must be a number in "
                             "[-100, 100]")
        out[token] = float(value)
    return out


_NUMBER = (int, float)
_TYPES: dict[str, type | tuple[type, ...]] = {
    "max_new_tokens": int, "min_new_tokens": int, "temperature": _NUMBER, "top_p": _NUMBER,
    "top_k": int, "min_p": _NUMBER, "frequency_penalty": _NUMBER, "presence_penalty": _NUMBER,
    "repetition_penalty": _NUMBER, "ignore_eos": bool, "skip_special_tokens": bool,
    "spaces_between_special_tokens": bool, "no_stop_trim": bool, "n": int, "seed": int,
    "json_schema": str, "regex": str, "ebnf": str, "jump_forward": bool,
    "return_logprob": bool, "top_logprobs_num": int, "logprob_start_len": int,
    "stop_regex": (str, list), "token_ids_logprob": list,
}


def _as_list(value: str | list[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value) if isinstance(value, list) else []


def _compile_stop_regex(pattern: Any) -> re.Pattern:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"stop_regex must be a non-empty regex or a list of them (got "
                         f"{pattern!r})")
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"stop_regex {pattern!r} is not a valid regex: {e}") from None


def suppressed_ids(p: SamplingParams, eos_ids) -> list[int]:
    """The token ids held back while fewer than min_new_tokens are out: the stop token ids
    and, unless ignore_eos, the EOS ids."""
    banned = set(p.stop_token_ids or [])
    if not p.ignore_eos:
        banned.update(eos_ids)
    return sorted(banned)
