"""The engine's per-token logprobs (meta_info "output_token_logprobs" / "output_top_logprobs")
in OpenAI's shapes: chat `logprobs.content`, completions `tokens` / `token_logprobs` /
`top_logprobs` / `text_offset`.

A request that ends on a stop token (EOS or one of stop_token_ids) does not report it: its text
is not part of the answer, as with OpenAI. Tokens of a matched stop string are reported even
though the text trims it (the token boundaries need not fall where the stop string starts).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins for the 256 byte values (GPT-2's table), reversed."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars)}


class TokenStrings:
    """Token id -> (text, bytes), cached: the same few thousand tokens come back all the time."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def get(self, token: int) -> tuple[str, list[int]]:
        hit = self._cache.get(token)
        if hit is None:
            hit = self._cache[token] = self._lookup(token)
        return hit

    def _lookup(self, token: int) -> tuple[str, list[int]]:
        # A byte-level piece holds the token's exact bytes, also half of a UTF-8 character,
        # which decode() would turn into U+FFFD.
        piece = self.tokenizer.convert_ids_to_tokens(token)
        table = _byte_decoder()
        if token not in self.special and isinstance(piece, str) and piece \
                and all(c in table for c in piece):
            raw = bytes(table[c] for c in piece)
        else:
            raw = self.tokenizer.decode([token]).encode()
        return raw.decode("utf-8", errors="replace"), list(raw)


def token_strings(app_state: Any, tokenizer: Any) -> TokenStrings:
    strings = getattr(app_state, "token_strings", None)
    if strings is None:
        strings = app_state.token_strings = TokenStrings(tokenizer)
    return strings


def reported(meta: dict[str, Any], end: int | None = None
             ) -> tuple[list[tuple], list[list[tuple]] | None]:
    """(token entries, top entries or None) of the first `end` output tokens, without a
    final stop token once the request has finished on one."""
    tokens = meta.get("output_token_logprobs") or []
    tops = meta.get("output_top_logprobs")
    n = len(tokens) if end is None else end
    fr = meta.get("finish_reason") or {}
    matched = fr.get("matched")
    if n == len(tokens) and tokens and isinstance(matched, int) and not isinstance(matched, bool) \
            and tokens[-1][1] == matched:
        n -= 1
    return tokens[:n], (tops[:n] if tops is not None else None)


def prompt_reported(meta: dict[str, Any]) -> tuple[list[tuple], list | None]:
    """(token entries, top entries or None) of the prompt (echo with logprobs)."""
    return meta.get("input_token_logprobs") or [], meta.get("input_top_logprobs")


def chat_content(strings: TokenStrings, tokens: list[tuple], tops: list[list[tuple]] | None,
                 k: int) -> list[dict[str, Any]]:
    """OpenAI chat `logprobs.content` entries; k top alternatives each."""
    def item(lp: float, token: int) -> dict[str, Any]:
        text, raw = strings.get(token)
        return {"token": text, "logprob": lp, "bytes": raw}

    out = []
    for i, (lp, token, _) in enumerate(tokens):
        entry = item(lp, token)
        entry["top_logprobs"] = [item(a_lp, a) for a_lp, a, _ in (tops[i][:k] if tops else [])]
        out.append(entry)
    return out


class CompletionLogprobs:
    """OpenAI completions `logprobs` of one choice, built up chunk by chunk; text offsets count
    from the start of the choice's text (`offset`: the echoed prompt's length)."""

    def __init__(self, strings: TokenStrings, k: int, offset: int = 0):
        self.strings, self.k, self.offset = strings, k, offset

    def build(self, tokens: list[tuple], tops: list[list[tuple]] | None) -> dict[str, Any]:
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                                "text_offset": []}
        for i, (lp, token, _) in enumerate(tokens):
            text, _ = self.strings.get(token)
            out["tokens"].append(text)
            out["token_logprobs"].append(lp)
            out["text_offset"].append(self.offset)
            self.offset += len(text)
            if lp is None:  # an echoed prompt's first token: nothing predicts it
                out["top_logprobs"].append(None)
                continue
            # OpenAI always includes the chosen token, so up to k + 1 entries.
            alternatives = {self.strings.get(a)[0]: a_lp
                            for a_lp, a, _ in (tops[i][:self.k] if tops else [])}
            alternatives.setdefault(text, lp)
            out["top_logprobs"].append(alternatives)
        return out
