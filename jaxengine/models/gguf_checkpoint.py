"""Read a GGUF file (llama.cpp's format) as a HF-style checkpoint, with no torch.

Everything comes from the file: the config from the `<arch>.*` metadata keys, the tokenizer
from `tokenizer.*` (see gguf_tokenizer.py) and the weights, dequantized to float32 with
`gguf.quants.dequantize` and renamed to Hugging Face's parameter names and [out, in] layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from transformers import PreTrainedTokenizerFast

from jaxengine.models.gguf_tokenizer import build_gguf_tokenizer

# general.architecture -> (HF architecture, HF model_type)
_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "gemma2": ("Gemma2ForCausalLM", "gemma2"),
    "gemma3": ("Gemma3ForCausalLM", "gemma3_text"),
}
# llama.cpp stores Gemma's (1 + w) norm weights with the 1 added.
_GEMMA_ARCHS = {"gemma2", "gemma3"}
# llama.cpp's converter interleaves the two rotary halves of each Q/K head for these
# architectures only (its Qwen converters keep HF's layout).
_PERMUTED_QK_ARCHS = {"llama"}

_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                 "output": "lm_head"}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
# Gemma has norms before and after both the attention and the MLP.
_GEMMA_BLOCK_NAMES = {**_BLOCK_NAMES, "ffn_norm": "pre_feedforward_layernorm",
                      "post_attention_norm": "post_attention_layernorm",
                      "post_ffw_norm": "post_feedforward_layernorm"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_GLOBAL_RE = re.compile(r"(\w+)\.(weight|bias)")


def hf_tensor_name(gguf_name: str, arch: str = "llama") -> str:
    """The Hugging Face parameter name of a GGUF tensor; ValueError for unknown tensors."""
    blocks = _GEMMA_BLOCK_NAMES if arch in _GEMMA_ARCHS else _BLOCK_NAMES
    if m := _BLOCK_RE.fullmatch(gguf_name):
        layer, part, kind = m.groups()
        if part in blocks:
            return f"model.layers.{layer}.{blocks[part]}.{kind}"
    elif (m := _GLOBAL_RE.fullmatch(gguf_name)) and m.group(1) in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"Unsupported GGUF tensor {gguf_name!r}")


def unpermute_rotary_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation, giving back HF's row order.

    HF orders each head's rows as [first rotary half | second half]; llama.cpp's converter
    reorders them to interleaved pairs (rows 0, d/2, 1, d/2+1, ...), i.e. it reshapes to
    (heads, 2, d/2) and swaps the last two axes. Here we reshape to (heads, d/2, 2) and swap
    back. Works for weights [rows, in] and biases [rows].
    """
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFSource:
    """An open GGUF file: its HF-style config, its tokenizer and its tensors (by HF name)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader = gguf.GGUFReader(self.path)
        self.meta: dict[str, Any] = {k: f.contents() for k, f in self._reader.fields.items()}
        self.arch = self.meta["general.architecture"]
        self._tensors = {hf_tensor_name(t.name, self.arch): t for t in self._reader.tensors}
        self.hf_config = gguf_hf_config(self.meta, set(self._tensors))

    def tokenizer(self) -> PreTrainedTokenizerFast:
        if self.meta.get("tokenizer.ggml.model") == "llama":
            # SentencePiece vocabularies (Gemma): transformers' own GGUF conversion.
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name)
        return build_gguf_tokenizer(self.meta, self.hf_config["max_position_embeddings"])

    def names(self) -> list[str]:
        return list(self._tensors)

    def read(self, name: str) -> np.ndarray:
        """Tensor `name` dequantized to float32, in HF layout ([out, in] for matrices)."""
        t = self._tensors[name]
        # GGUF lists dims fastest-first (ggml's ne); numpy/HF order is the reverse.
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        w = np.asarray(w, dtype=np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))
        if not w.flags.writeable:  # F32 tensors come back as views of the read-only mmap
            w = w.copy()
        arch = self.arch
        if arch in _GEMMA_ARCHS and name.endswith("norm.weight"):
            w = w - 1.0
        if arch in _PERMUTED_QK_ARCHS and name.endswith(("q_proj.weight", "q_proj.bias")):
            w = unpermute_rotary_rows(w, self.hf_config["num_attention_heads"])
        elif arch in _PERMUTED_QK_ARCHS and name.endswith(("k_proj.weight", "k_proj.bias")):
            w = unpermute_rotary_rows(w, self.hf_config["num_key_value_heads"])
        return w


def gguf_hf_config(meta: dict[str, Any], hf_names: set[str]) -> dict[str, Any]:
    """A HF config.json-style dict from GGUF metadata and the (HF) names of its tensors."""
    arch = meta["general.architecture"]
    if arch not in _ARCHITECTURES:
        raise ValueError(f"Unsupported GGUF architecture {arch!r}; supported: "
                         f"{sorted(_ARCHITECTURES)}")
    architecture, model_type = _ARCHITECTURES[arch]

    def key(name: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{name}", default)

    hidden = int(key("embedding_length"))
    heads = _per_model(key("attention.head_count"), "attention.head_count")
    kv_heads = _per_model(key("attention.head_count_kv", heads), "attention.head_count_kv")
    head_dim = key("attention.key_length") or key("rope.dimension_count") or hidden // heads
    rope_theta = _f32_to_decimal(key("rope.freq_base", 10000.0))
    rope_scaling = _rope_scaling(key)
    vocab = key("vocab_size") or len(meta["tokenizer.ggml.tokens"])
    config = {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": int(key("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": int(head_dim),
        "hidden_act": "silu",
        "rms_norm_eps": _f32_to_decimal(key("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": rope_theta,
        "rope_scaling": rope_scaling,
        # transformers >= 5 spells rope settings this way; keep both views in agreement.
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta,
                            **(rope_scaling or {})},
        "max_position_embeddings": int(key("context_length", 2048)),
        # llama.cpp writes `output.weight` only when it differs from the embedding.
        "tie_word_embeddings": "lm_head.weight" not in hf_names,
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in hf_names,
        "mlp_bias": False,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }
    if arch in _GEMMA_ARCHS:
        config.update(
            hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
            sliding_window=key("attention.sliding_window"),
            # llama.cpp scales queries by 1/sqrt(head_dim), i.e. query_pre_attn_scalar =
            # head_dim, for every size but Gemma 3 27B (hidden / heads), which it tells by size.
            query_pre_attn_scalar=int(head_dim),
            sliding_window_pattern=6 if arch == "gemma3" else 2,
            attn_logit_softcapping=key("attn_logit_softcapping"),
            final_logit_softcapping=key("final_logit_softcapping"))
        if arch == "gemma3":
            config["rope_local_base_freq"] = 10000.0   # llama.cpp's too: not in the file
    return config


def _per_model(value: Any, what: str) -> int:
    # Some files store a per-layer list; we only support models uniform across layers.
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise ValueError(f"GGUF {what} varies per layer ({value}); not supported")
        value = value[0]
    return int(value)


def _f32_to_decimal(x: float) -> float:
    # GGUF stores these as float32: 1e-5 comes back as 9.999999747378752e-06. The shortest
    # decimal that rounds to the same float32 is the value the original config.json held.
    return float(str(np.float32(x)))


def _rope_scaling(key: Any) -> dict[str, Any] | None:
    kind = key("rope.scaling.type")
    if kind in (None, "none"):
        return None
    scaling = {"rope_type": kind, "factor": key("rope.scaling.factor"),
               "original_max_position_embeddings": key("rope.scaling.original_context_length")}
    return {k: v for k, v in scaling.items() if v is not None}
