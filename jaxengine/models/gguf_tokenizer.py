"""Build a Hugging Face fast tokenizer from a GGUF file's `tokenizer.*` metadata.

A GGUF carries no `tokenizer.json`, only llama.cpp's description of it: the vocabulary
(`tokenizer.ggml.tokens`, already spelled in GPT-2's byte-to-unicode alphabet for byte-level
BPE), the merges, a token type per id, the special token ids, and the name of the
pre-tokenizer (`tokenizer.ggml.pre`), which llama.cpp maps to a fixed splitting recipe. We
rebuild the same pipeline with the `tokenizers` library.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

# llama.cpp token types (llama_token_type): 1 normal, 2 unknown, 3 control, 4 user-defined,
# 5 unused, 6 byte.
_CONTROL = 3
_USER_DEFINED = 4

# Splitting regexes of the BPE vocabularies whose `pre` names we support. The GPT-2 one is
# what `ByteLevel(use_regex=True)` already applies.
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _gpt2_split() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2() -> pre_tokenizers.PreTokenizer:
    # SmolLM / StarCoder: every digit is its own word, then the GPT-2 regex. This is what
    # llama.cpp's "smollm" pre type does (`\p{N}` split before the GPT-2 pattern) and what the
    # original SmolLM2 tokenizer.json says.
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    _gpt2_split()])


def _regex_then_bytes(regex: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


_PRE_TOKENIZERS = {
    "default": _gpt2_split,
    "gpt-2": _gpt2_split,
    "smollm": _digits_then_gpt2,
    "starcoder": _digits_then_gpt2,
    "llama3": lambda: _regex_then_bytes(_LLAMA3_REGEX),
    "llama-bpe": lambda: _regex_then_bytes(_LLAMA3_REGEX),
    "qwen2": lambda: _regex_then_bytes(_QWEN2_REGEX),
}


def build_gguf_tokenizer(meta: Mapping[str, Any],
                         model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` equivalent to the one the GGUF metadata `meta` describes.

    `meta` maps GGUF keys to plain Python values. Only byte-level BPE (`tokenizer.ggml.model
    == "gpt2"`, used by SmolLM, Llama 3, Qwen) is supported; others raise ValueError.
    """
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"GGUF tokenizer model {kind!r} is not supported (only byte-level BPE, "
                         "'gpt2'); pass --tokenizer-path to a HF tokenizer directory instead.")
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types: list[int] = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))

    backend = Tokenizer(models.BPE(
        vocab={tok: i for i, tok in enumerate(tokens)},
        merges=[_split_merge(m) for m in meta.get("tokenizer.ggml.merges", [])],
        fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre", "default"))
    backend.decoder = decoders.ByteLevel()
    # Control and user-defined tokens must be matched whole in raw text before splitting, or
    # "<|im_start|>" would be cut into "<", "|", ... They already have ids in the vocabulary,
    # so adding them assigns no new ids.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, ty in zip(tokens, types, strict=True) if ty == _CONTROL])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, ty in zip(tokens, types, strict=True) if ty == _USER_DEFINED])

    def token(key: str) -> str | None:
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[idx] if idx is not None and 0 <= idx < len(tokens) else None

    extra: dict[str, Any] = {}
    if model_max_length is not None:
        extra["model_max_length"] = model_max_length
    # PreTrainedTokenizerFast turns add_bos_token/add_eos_token into the post-processor.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=token("bos"), eos_token=token("eos"),
        unk_token=token("unknown"), pad_token=token("padding"),
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        add_eos_token=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        chat_template=meta.get("tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
        **extra)


def _split_merge(merge: str) -> tuple[str, str]:
    # Byte-level tokens spell a space as "Ġ", so the single space is the separator.
    left, right = merge.split(" ", 1)
    return left, right


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    factory = _PRE_TOKENIZERS.get(pre)
    if factory is None:
        logger.warning("Unknown GGUF pre-tokenizer %r; falling back to GPT-2 splitting, "
                       "token ids may differ from llama.cpp's.", pre)
        factory = _gpt2_split
    return factory()
