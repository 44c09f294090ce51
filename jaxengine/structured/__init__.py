"""Structured output: grammars (JSON schema, regex, EBNF) compiled with llguidance, per-request
matchers, token bitmasks for the sampler and forced tokens for jump-forward. No JAX here."""

from jaxengine.structured.backend import GrammarBackend
from jaxengine.structured.bitmask import batch_bitmask, needs_bitmask
from jaxengine.structured.matcher import GrammarMatcher

__all__ = ["GrammarBackend", "GrammarMatcher", "batch_bitmask", "needs_bitmask"]
