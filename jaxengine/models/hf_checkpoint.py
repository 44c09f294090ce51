"""Read a Hugging Face checkpoint directory (config.json + safetensors) with numpy, no torch."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


def resolve_hub_id(repo_id: str) -> Path:
    """The local snapshot directory of `repo_id` in the HF cache; never downloads."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as e:  # not cached, invalid id, offline errors: all mean "not usable"
        raise ValueError(
            f"Model {repo_id!r} is not a local path and is not in the local Hugging Face cache "
            "(jaxengine never downloads from the hub). Download it first, e.g. "
            f"`hf download {repo_id}`, or pass a local directory.") from e


def is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (
        (path / _INDEX).is_file() or (path / _SINGLE).is_file())


class HFSource:
    """A HF checkpoint directory: its config dict and its tensors as float32 numpy."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._files = _weight_map(self.path)
        raw = json.loads((self.path / "config.json").read_text())
        self.hf_config = normalize_hf_config(raw, set(self._files))

    def names(self) -> list[str]:
        return list(self._files)

    def read(self, name: str) -> np.ndarray:
        return read_safetensor(self._files[name], name)


def _weight_map(path: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, from the shard index or the single file."""
    if (path / _INDEX).is_file():
        index = json.loads((path / _INDEX).read_text())
        return {name: path / file for name, file in index["weight_map"].items()}
    if (path / _SINGLE).is_file():
        with safe_open(path / _SINGLE, framework="np") as f:
            return {name: path / _SINGLE for name in f.keys()}
    raise ValueError(f"{path} has no {_SINGLE} or {_INDEX} (only safetensors are supported)")


def read_safetensor(file: Path, name: str) -> np.ndarray:
    """One tensor as float32. bf16 needs care: numpy has no bfloat16, and older safetensors
    releases refuse to return it in numpy, so we then decode the raw bytes ourselves."""
    with safe_open(file, framework="np") as f:
        if f.get_slice(name).get_dtype() != "BF16":
            return np.asarray(f.get_tensor(name), dtype=np.float32)
        try:
            return np.asarray(f.get_tensor(name)).astype(np.float32)  # via ml_dtypes
        except (TypeError, ValueError):
            pass
    return _bf16_to_f32(_raw_tensor_bytes(file, name))


def _raw_tensor_bytes(file: Path, name: str) -> tuple[np.ndarray, list[int]]:
    # Format: u64 little-endian header length, JSON header, then the data buffer.
    with open(file, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        info = json.loads(fh.read(n))[name]
        start, end = info["data_offsets"]
        fh.seek(8 + n + start)
        return np.frombuffer(fh.read(end - start), dtype="<u2"), info["shape"]


def _bf16_to_f32(raw: tuple[np.ndarray, list[int]]) -> np.ndarray:
    # bf16 is the top half of a float32: widen the bits and shift them into place.
    bits, shape = raw
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)


def normalize_hf_config(cfg: dict[str, Any], tensor_names: set[str]) -> dict[str, Any]:
    """Fill the fields the model code relies on, whichever transformers version wrote it.

    transformers >= 5 moves `rope_theta`/`rope_scaling` into `rope_parameters`; older
    configs omit `head_dim` or `num_key_value_heads`; Qwen2 has q/k/v biases without saying so.
    """
    cfg = dict(cfg)
    rope = dict(cfg.get("rope_parameters") or {})
    heads = cfg["num_attention_heads"]
    cfg.setdefault("num_key_value_heads", heads)
    if cfg.get("head_dim") is None:
        cfg["head_dim"] = cfg["hidden_size"] // heads
    if cfg.get("rope_theta") is None:
        cfg["rope_theta"] = rope.get("rope_theta", 10000.0)
    if "rope_scaling" not in cfg:
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        cfg["rope_scaling"] = scaling if scaling.get("rope_type", "default") != "default" else None
    if "lm_head.weight" not in tensor_names:
        cfg["tie_word_embeddings"] = True  # nothing else could provide the output projection
    cfg.setdefault("tie_word_embeddings", False)
    if "attention_bias" not in cfg:
        cfg["attention_bias"] = "model.layers.0.self_attn.q_proj.bias" in tensor_names
    if not cfg.get("architectures"):
        cfg["architectures"] = [_default_architecture(cfg.get("model_type", ""))]
    return cfg


def _default_architecture(model_type: str) -> str:
    known = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
             "qwen3": "Qwen3ForCausalLM", "mistral": "MistralForCausalLM"}
    if model_type not in known:
        raise ValueError(f"config.json has no 'architectures' and unknown model_type "
                         f"{model_type!r}")
    return known[model_type]
