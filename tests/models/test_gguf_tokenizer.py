"""Our GGUF tokenizer against transformers' own GGUF tokenizer, on the default model.

transformers ignores the file's `tokenizer.ggml.pre = "smollm"` and splits with the plain GPT-2
regex, while llama.cpp (and SmolLM2's original tokenizer.json) first isolates every numeric
character. The two differ only around numbers: "ca  19" is ["ca", "ĠĠ", "1", "9"] for llama.cpp
and ["ca", "Ġ", "Ġ", "1", "9"] for transformers. So the reference is transformers' tokenizer
with its pre-tokenizer swapped for llama.cpp's two "smollm" regexes; the plain one must agree
wherever the text has no numerals.
"""

from __future__ import annotations

import random
import unicodedata

import pytest
from tokenizers import Regex, pre_tokenizers
from transformers import AutoTokenizer

from jaxengine.models.checkpoint import Checkpoint, load_checkpoint
from jaxengine.models.default_model import default_model_path

TEXTS = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "12345 3.14159",
    "1,000,000.00 and 2024-01-31 at 23:59:59, x²+y³, ½ ⅓ ٣",
    "abc123def 42nd 007",
    "x =  5\n\t\t0 ca  19",
    "don't I'LL we've they'RE it's",
    "def f(x):\n    return x ** 2  # square\n\n\nprint(f(3))\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }\r\n",
    "    leading spaces, trailing spaces    ",
    "tabs\tand\t\tmore\ttabs",
    "many     spaces   between\n\n\n\nnewlines\n \n",
    "Ünïcödé: café, naïve, Straße, 日本語のテキスト, 中文, العربية, עברית, русский",
    "Emoji 😀👍🏽 and 👨‍👩‍👧‍👦 family, flags 🇫🇷",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>text<|endoftext|><|im_start|>",
    "<|im_start partial <| im_end |> <repo_name>x<file_sep>",
    "https://example.com/path?q=1&r=two#frag",
    "  \n\t\r\n  ",
    "a" * 300,
]


def _random_texts(n: int, seed: int = 0) -> list[str]:
    # A mixed alphabet, so the fuzz hits digits, spaces, punctuation and multi-byte UTF-8.
    alphabet = "ab cdXYZ019²½ \n\t.,'!?-_()<>|éß日本😀\u200d'"
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(n)]


@pytest.fixture(scope="session")
def default_checkpoint() -> Checkpoint:
    return load_checkpoint(None)


# llama.cpp's pre-tokenizer for "smollm": `\p{N}` first, then GPT-2's pattern on the rest.
_LLAMA_CPP_SMOLLM = [r"\p{N}", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
                     r"|\s+(?!\S)"]


@pytest.fixture(scope="module")
def transformers_tokenizer():
    path = default_model_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def reference_tokenizer():
    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in _LLAMA_CPP_SMOLLM]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok


def _has_numeral(text: str) -> bool:
    return any(unicodedata.category(c).startswith("N") for c in text)


@pytest.mark.parametrize("text", TEXTS)
def test_same_ids_as_transformers_with_llama_cpp_split(default_checkpoint, reference_tokenizer,
                                                       text):
    assert default_checkpoint.tokenizer(text).input_ids == reference_tokenizer(text).input_ids


def test_same_ids_on_random_text(default_checkpoint, reference_tokenizer):
    texts = _random_texts(500)
    assert default_checkpoint.tokenizer(texts).input_ids == reference_tokenizer(texts).input_ids


def test_same_ids_as_plain_transformers_without_numerals(default_checkpoint,
                                                         transformers_tokenizer):
    texts = [t for t in TEXTS + _random_texts(300, seed=2) if not _has_numeral(t)]
    assert len(texts) > 50
    assert default_checkpoint.tokenizer(texts).input_ids == transformers_tokenizer(texts).input_ids


def test_whitespace_before_digits_follows_llama_cpp(default_checkpoint, transformers_tokenizer):
    tok = default_checkpoint.tokenizer
    assert tok.convert_ids_to_tokens(tok("ca  19").input_ids) == ["ca", "ĠĠ", "1", "9"]
    plain = transformers_tokenizer.convert_ids_to_tokens(transformers_tokenizer("ca  19").input_ids)
    assert plain == ["ca", "Ġ", "Ġ", "1", "9"]  # the known transformers divergence


def test_digits_split_individually(default_checkpoint):
    tok = default_checkpoint.tokenizer
    assert tok.convert_ids_to_tokens(tok("12345").input_ids) == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("text", TEXTS + _random_texts(50, seed=1))
def test_decode_round_trips(default_checkpoint, text):
    tok = default_checkpoint.tokenizer
    assert tok.decode(tok(text).input_ids) == text


def test_special_tokens(default_checkpoint):
    tok = default_checkpoint.tokenizer
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == (
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_end|>")
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    assert len(tok) == default_checkpoint.hf_config["vocab_size"] == 49152
    assert tok("hi").input_ids[0] != tok.bos_token_id  # add_bos_token is false in the file
    assert tok("<|im_start|>user").input_ids == [1, 4093]
    assert tok.decode([1, 4093, 2], skip_special_tokens=True) == "user"


def test_chat_template_renders_chatml(default_checkpoint):
    tok = default_checkpoint.tokenizer
    assert default_checkpoint.chat_template == tok.chat_template
    messages = [{"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    with_system = [{"role": "system", "content": "Be brief."}, *messages]
    text = tok.apply_chat_template(with_system, tokenize=False, add_generation_prompt=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
