"""GrammarBackend: compiles grammars with llguidance for one tokenizer, with a cache."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

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
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from e
        if not isinstance(schema, dict):
            raise ValueError("a schema must be a JSON object")
        return llguidance.LLMatcher.grammar_from_json_schema(close_objects(schema),
                                                             defaults=JSON_OPTIONS)
    if kind == "regex":
        # As in JSON schema and JavaScript: \d and \w are ASCII (Rust's are Unicode).
        return llguidance.LLMatcher.grammar_from_lark(
            f"start: /{llguidance.regex_to_lark(spec, 'dw')}/")
    if kind == "ebnf":
        return llguidance.grammar_from("ebnf", spec)  # GBNF (`root ::= ...`) or Lark
    raise ValueError(f"unknown grammar kind {kind!r}")


class GrammarBackend:
    """Compiled grammars for one tokenizer, cached by (kind, spec); each request gets a copy.

    Building llguidance's view of the tokenizer takes about a second, so it happens on the
    first grammar. EOS is allowed exactly where the grammar accepts.
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
            import llguidance.hf

            self._lltokenizer = llguidance.hf.from_tokenizer(
                self._tokenizer, n_vocab=self.vocab_size, eos_token=self._eos_ids)
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
