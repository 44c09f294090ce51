"""load_checkpoint on HF directories (single file, sharded, bf16), hub ids and bad paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from jaxengine.models.checkpoint import _resolve, load_checkpoint
from jaxengine.models.hf_checkpoint import _bf16_to_f32, _raw_tensor_bytes

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CHAT_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


def _tiny_llama():
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rope_theta=50000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _save_tokenizer(directory: Path) -> None:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 128)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        chat_template=CHAT_TEMPLATE)
    tok.save_pretrained(directory)


def _assert_same_tensors(ckpt, state_dict, cast=None):
    ours = dict(ckpt.tensors())
    assert set(ours) == set(state_dict)
    for name, want in state_dict.items():
        want = want.float() if cast is None else want.to(cast).float()
        assert ours[name].dtype == np.float32, name
        np.testing.assert_array_equal(ours[name], want.numpy(), err_msg=name)


@pytest.fixture(scope="module")
def model():
    return _tiny_llama()


@pytest.mark.parametrize("shard", [None, "40KB"])
def test_float32_directory(tmp_path, model, shard):
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(tmp_path, **kwargs)
    _save_tokenizer(tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file() == bool(shard)

    ckpt = load_checkpoint(str(tmp_path))
    _assert_same_tensors(ckpt, model.state_dict())
    cfg = ckpt.hf_config
    expected = {"architectures": ["LlamaForCausalLM"], "vocab_size": 128, "hidden_size": 64,
                "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-5,
                "rope_theta": 50000.0, "rope_scaling": None, "max_position_embeddings": 256,
                "tie_word_embeddings": False, "attention_bias": False}
    assert {k: cfg[k] for k in expected} == expected
    assert ckpt.name == tmp_path.name and ckpt.path == str(tmp_path)
    assert ckpt.tokenizer("w5 w7").input_ids == [5, 7]
    assert ckpt.chat_template == CHAT_TEMPLATE


def test_sharding_spreads_tensors_over_files(tmp_path, model):
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2


def test_bfloat16_directory(tmp_path, model):
    bf16 = _tiny_llama().to(torch.bfloat16)
    bf16.save_pretrained(tmp_path)
    _save_tokenizer(tmp_path)
    ckpt = load_checkpoint(str(tmp_path))
    _assert_same_tensors(ckpt, bf16.state_dict())
    # The raw-bytes decoder (used when safetensors cannot return bf16 to numpy) agrees too.
    name = "model.layers.0.self_attn.q_proj.weight"
    raw = _bf16_to_f32(_raw_tensor_bytes(tmp_path / "model.safetensors", name))
    np.testing.assert_array_equal(raw, bf16.state_dict()[name].float().numpy())


def test_tied_embeddings_and_tokenizer_override(tmp_path):
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, tie_word_embeddings=True)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    _save_tokenizer(tmp_path / "tok")
    with pytest.raises(ValueError, match="Could not load a tokenizer"):
        load_checkpoint(str(tmp_path / "model"))
    ckpt = load_checkpoint(str(tmp_path / "model"), tokenizer_path=str(tmp_path / "tok"))
    assert ckpt.hf_config["tie_word_embeddings"] is True
    assert "lm_head.weight" not in ckpt.tensor_names()
    assert ckpt.tokenizer("w9").input_ids == [9]


def test_hub_id_from_local_cache(tmp_path, model, monkeypatch):
    import huggingface_hub.constants

    # The HF cache layout: models--org--name/{refs/main, snapshots/<commit>/...}.
    repo = tmp_path / "hub" / "models--tiny-org--tiny-llama"
    commit = "0" * 40
    model.save_pretrained(repo / "snapshots" / commit)
    _save_tokenizer(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    ckpt = load_checkpoint("tiny-org/tiny-llama")
    assert ckpt.name == "tiny-org/tiny-llama"
    assert ckpt.hf_config["num_hidden_layers"] == 2
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        load_checkpoint("tiny-org/not-downloaded")


def test_directory_with_one_gguf(tmp_path):
    from jaxengine.models.default_model import default_model_path

    (tmp_path / "m.Q4_1.gguf").symlink_to(default_model_path())
    ckpt = load_checkpoint(str(tmp_path))
    assert ckpt.path.endswith("m.Q4_1.gguf") and ckpt.name == tmp_path.name
    assert _resolve(str(tmp_path / "m.Q4_1.gguf"))[1] == "m"  # the quant suffix is dropped


def test_bad_paths_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint("/nonexistent/dir/model")
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        load_checkpoint("no-such-org-4f1c/no-such-model-9a7e")
    with pytest.raises(ValueError, match="not a model directory"):
        load_checkpoint(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="neither a .gguf file nor a model directory"):
        load_checkpoint(str(tmp_path / "weights.bin"))
