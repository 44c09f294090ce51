"""Real models by name: the table is consistent, the CLI lists them and refuses unknown ones,
and a name is a --model-path (the fetch itself runs in test_gemma3_gguf.py)."""

from __future__ import annotations

import pytest

from jaxengine.models.checkpoint import _resolve
from jaxengine.models.known_models import ALIASES, KNOWN_MODELS
from tools import fetch_model


def test_table_is_consistent():
    assert set(ALIASES.values()) <= set(KNOWN_MODELS)
    for model in KNOWN_MODELS.values():
        assert model.filename.endswith(".gguf") and len(model.sha256) == 64
        packages = [package for package, _ in model.parts]
        assert len(set(packages)) == len(packages)
        assert all(member.count("/") >= 1 for _, member in model.parts)


def test_cli_lists_and_refuses(capsys):
    fetch_model.main(["--list"])
    out = capsys.readouterr().out
    assert all(name in out for name in KNOWN_MODELS)
    with pytest.raises(SystemExit):
        fetch_model.main(["no-such-model"])
    assert "unknown model" in capsys.readouterr().err


def test_unknown_path_error_names_the_known_models():
    with pytest.raises(ValueError, match="gemma3-270m"):
        _resolve("./no/such/model")
