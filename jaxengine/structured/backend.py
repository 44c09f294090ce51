"""GrammarBackend: compiles grammars with llguidance for one tokenizer, with a cache."""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict

import numpy as np

from jaxengine.structured.matcher import GrammarMatcher
from jaxengine.structured.schema import close_objects

# JSON without free whitespace: a small model cannot wander off into blank lines, and more of
# the output is forced (jump-forward).
JSON_OPTIONS = {"whitespace_flexible": False}


def grammar_text(kind: str, spec: str) -> str:
    """The llguidance grammar for a spec; ValueError if it cannot be read at all."""
    import llguidance

    if kind == "json_schema":
        try:
            schema = json.loads(spec)
            if not isinstance(schema, dict):
                raise ValueError("a schema must be a JSON object")
            return llguidance.LLMatcher.grammar_from_json_schema(close_objects(schema),
                                                                 defaults=JSON_OPTIONS)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from e
        except RecursionError:
            raise ValueError("the schema nests too deeply") from None
    if kind == "regex":
        # As in JSON schema and JavaScript: \d and \w are ASCII (Rust's are Unicode).
        return llguidance.LLMatcher.grammar_from_lark(
            f"start: /{llguidance.regex_to_lark(spec, 'dw')}/")
    if kind == "ebnf":
        return llguidance.grammar_from("ebnf", spec)  # GBNF (`root ::= ...`) or Lark
    raise ValueError(f"unknown grammar kind {kind!r}")


def tokenizer_json(tokenizer) -> str:
    """An HF fast tokenizer as the JSON llguidance builds its own view from (what a grammar
    sandbox process receives instead of the tokenizer object)."""
    backend = copy.copy(tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    return backend.to_str()


class GrammarBackend:
    """Compiled grammars for one tokenizer, cached by (kind, spec); each request gets a copy.

    `tokenizer` is an HF fast tokenizer or its `tokenizer_json`. Building llguidance's view of
    it takes about a second, so it happens on the first grammar. EOS is allowed exactly where
    the grammar accepts.
    """

    def __init__(self, tokenizer, vocab_size: int, eos_ids: list[int], cache_size: int = 256):
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._eos_ids = list(eos_ids)
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], object] = OrderedDict()
        self._lltokenizer = None
        self._lock = threading.Lock()   # the API process may compile from several threads

    def _llt(self):
        if self._lltokenizer is None:
            import llguidance

            text = self._tokenizer if isinstance(self._tokenizer, str) else \
                tokenizer_json(self._tokenizer)
            self._lltokenizer = llguidance.LLTokenizer(text, n_vocab=self.vocab_size,
                                                       eos_token=self._eos_ids)
        return self._lltokenizer

    def compile(self, kind: str, spec: str):
        """The compiled grammar (a pristine LLMatcher); ValueError with the reason if the
        backend cannot compile it. Failures are cached too."""
        import llguidance

        key = (kind, spec)
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                try:
                    matcher = llguidance.LLMatcher(self._llt(), grammar_text(kind, spec),
                                                   log_level=0)
                    hit = ValueError(f"invalid {kind}: {matcher.get_error()}") \
                        if matcher.is_error() else matcher
                except ValueError as e:
                    hit = ValueError(f"invalid {kind}: {e}")
                self._cache[key] = hit
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
        if isinstance(hit, ValueError):
            raise ValueError(str(hit))
        return hit

    def matcher(self, kind: str, spec: str) -> GrammarMatcher:
        return GrammarMatcher(self.compile(kind, spec).deep_copy())

    def check(self, kind: str, spec: str) -> None:
        """Compile, then take the first step a request takes (the forced prefix and the first
        token mask): ValueError with the reason if either fails. A grammar that compiles but
        exhausts the backend's limits at once would otherwise end every request empty."""
        matcher = self.matcher(kind, spec)
        matcher.jump_forward()
        row = np.zeros(-(-self.vocab_size // 32), np.int32)
        if not matcher.fill_bitmask(row) and matcher.error:
            raise ValueError(f"the grammar backend cannot run this {kind}: {matcher.error}")
