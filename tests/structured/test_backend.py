"""The llguidance backend on the default tokenizer: compile, cache, masks, jump-forward."""

from __future__ import annotations

import numpy as np
import pytest

from jaxengine.structured import batch_bitmask
from jaxengine.structured.bitmask import bitmask_words

from .conftest import job_schema_json


def allowed(row: np.ndarray) -> list[int]:
    return np.nonzero(np.unpackbits(row.view(np.uint8), bitorder="little"))[0].tolist()


def test_compiled_grammars_are_cached(grammar_backend):
    a = grammar_backend.compile("json_schema", job_schema_json())
    assert grammar_backend.compile("json_schema", job_schema_json()) is a
    assert grammar_backend.matcher("json_schema", job_schema_json())._m is not a  # a copy


@pytest.mark.parametrize("kind,spec,reason", [
    ("json_schema", "{not json", "not valid JSON"),
    ("json_schema", '{"type": "foo"}', "foo"),
    ("regex", "(abc", "unclosed group"),
    ("ebnf", "root ::= (", "ebnf"),
])
def test_bad_grammars_raise_with_the_reason(grammar_backend, kind, spec, reason):
    with pytest.raises(ValueError, match=reason):
        grammar_backend.compile(kind, spec)
    with pytest.raises(ValueError):  # failures are cached and raise again
        grammar_backend.compile(kind, spec)


def test_mask_allows_only_the_grammar_and_eos_where_it_accepts(grammar_backend, default_checkpoint):
    tok = default_checkpoint.tokenizer
    m = grammar_backend.matcher("regex", "(yes|no)")
    row = np.zeros(bitmask_words(49152), np.int32)
    assert m.fill_bitmask(row)
    starts = {tok.decode([t]) for t in allowed(row)}
    assert starts and all("yes".startswith(s) or "no".startswith(s) for s in starts)
    for t in tok.encode("yes", add_special_tokens=False):
        assert m.accept(t)
    assert m.done
    assert m.fill_bitmask(row) and allowed(row) == [2]  # only EOS


def test_regex_digits_are_ascii(grammar_backend, default_checkpoint):
    m = grammar_backend.matcher("regex", r"\d")
    row = np.zeros(bitmask_words(49152), np.int32)
    m.fill_bitmask(row)
    assert {default_checkpoint.tokenizer.decode([t]) for t in allowed(row)} == set("0123456789")


def test_jump_forward_returns_the_forced_text(grammar_backend, default_checkpoint):
    tok = default_checkpoint.tokenizer
    m = grammar_backend.matcher("json_schema", job_schema_json())
    # Forced text up to where its last token could merge with what follows ('":"' + name).
    assert tok.decode(m.jump_forward()) == '{"candidate":{"name'
    assert m.jump_forward() == []
    for t in tok.encode('":"Al","', add_special_tokens=False):
        assert m.accept(t)
    assert tok.decode(m.jump_forward()) == 'age'
    row = np.zeros(bitmask_words(49152), np.int32)
    m.fill_bitmask(row)
    assert 2 not in allowed(row)  # inside an object: no EOS


class _Entry:
    def __init__(self, grammar, samples=True):
        self.samples = samples
        self.req = type("R", (), {"grammar": grammar, "finished": False})()


def test_batch_bitmask_rows(grammar_backend):
    g = grammar_backend.matcher("regex", "a+")
    dead = grammar_backend.matcher("regex", "a")
    dead.accept(0)  # a token outside the grammar: the matcher is in error
    mask = batch_bitmask([_Entry(g), _Entry(None), _Entry(g, samples=False), _Entry(dead)], 8,
                         49152)
    assert mask.shape == (8, bitmask_words(49152))
    assert 0 < len(allowed(mask[0])) < 1000
    assert (mask[1:] == -1).all()  # no grammar, not sampling, a dead end, padding


def test_vocab_rows_past_the_tokenizer_are_never_allowed(default_checkpoint):
    from jaxengine.structured import GrammarBackend

    tok = default_checkpoint.tokenizer
    padded = len(tok) + 64  # models often pad the embedding past the tokenizer
    m = GrammarBackend(tok, padded, [2]).matcher("regex", r"(.|\n)+")  # nearly any text
    row = np.zeros(bitmask_words(padded), np.int32)
    assert m.fill_bitmask(row)
    assert len(tok) // 2 < len(allowed(row)) and max(allowed(row)) < len(tok)
