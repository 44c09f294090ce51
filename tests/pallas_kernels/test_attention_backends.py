"""The one attention op: backend selection, and a tiny model decoding the same greedy tokens
with the Pallas kernels (interpret mode) as with the reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxengine.cache.mha_pool import MHAPool, MHAPoolSpec
from jaxengine.layers.attention import (
    AttentionMetadata,
    SharedPrefix,
    paged_attention,
    resolve_backend,
)
from tests.pallas_kernels.cases import assert_close


def test_resolve_backend():
    assert resolve_backend("auto", platform="cpu") == "blocked"
    assert resolve_backend("auto", platform="gpu", page_size=16, head_dim=128) == "pallas-gpu"
    assert resolve_backend("auto", platform="gpu", page_size=16, head_dim=80) == "reference"
    assert resolve_backend("auto", platform="tpu") == "pallas-tpu"
    assert resolve_backend("pallas", platform="cpu") == "pallas-interpret"
    assert resolve_backend("pallas-tpu-interpret") == "pallas-tpu-interpret"
    with pytest.raises(ValueError):
        resolve_backend("triton")


def _step(T, B, Pb, seqs, page_size):
    """Metadata for sequences [(pages, start, length)] packed into T tokens / B slots."""
    slots = np.zeros(T, np.int32)
    positions = np.zeros(T, np.int32)
    kv_lens = np.zeros(B, np.int32)
    page_indices = np.zeros((B, Pb), np.int32)
    cu = np.zeros(B + 1, np.int32)
    t = 0
    for i, (pages, start, length) in enumerate(seqs):
        pos = np.arange(start, start + length)
        slots[t:t + length] = np.asarray(pages)[pos // page_size] * page_size + pos % page_size
        positions[t:t + length] = pos
        t += length
        kv_lens[i] = start + length
        page_indices[i, :len(pages)] = pages
        cu[i + 1] = t
    cu[len(seqs) + 1:] = t
    meta = AttentionMetadata(jnp.asarray(slots), jnp.asarray(kv_lens), jnp.asarray(page_indices),
                             jnp.asarray(cu), jnp.asarray([len(seqs)], np.int32))
    return jnp.asarray(positions), meta


@pytest.mark.parametrize("backend", ["blocked", "pallas-interpret", "pallas-tpu-interpret"])
def test_tiny_model_same_greedy_tokens(backend):
    pytest.importorskip("flax")
    from flax import nnx

    from jaxengine.models.dummy import dummy_model
    from jaxengine.models.llama import LlamaArch, LlamaForCausalLM, param_table

    arch = LlamaArch(architecture="LlamaForCausalLM", vocab_size=97, hidden_size=64,
                     intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=16, rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None,
                     tie_word_embeddings=True, attention_bias=False, qk_norm=False,
                     max_position_embeddings=256, sliding_window=None)
    page_size, T, B, Pb = 8, 16, 4, 4
    prompts = [[5, 17, 3, 60, 22, 9, 41, 8, 13, 2, 77], [1, 90, 33]]
    pages = [[1, 2, 3, 4], [5, 6, 7, 8]]

    def generate(attention_backend, steps=4):
        model = dummy_model(nnx.eval_shape(lambda: LlamaForCausalLM(
            arch, jnp.float32, attention_backend=attention_backend)), param_table(arch),
            jnp.float32)

        @jax.jit
        def forward(tokens, positions, cache, meta, last):
            hidden, cache = model(tokens, positions, cache, meta)
            return jnp.argmax(model.logits(hidden[last]), axis=-1), cache

        cache = MHAPoolSpec(arch.num_layers, arch.num_kv_heads, arch.head_dim,
                            jnp.float32).zeros(9, page_size)
        # Prefill both prompts in one ragged step, then decode them together.
        seqs = [(pages[i], 0, len(p)) for i, p in enumerate(prompts)]
        tokens = np.zeros(T, np.int32)
        tokens[:sum(map(len, prompts))] = np.concatenate(prompts)
        lens = [len(p) for p in prompts]
        out = [[] for _ in prompts]
        for _ in range(steps):
            positions, meta = _step(T, B, Pb, seqs, page_size)
            last = jnp.asarray(np.cumsum([n for _, _, n in seqs]) - 1)
            nxt, cache = forward(jnp.asarray(tokens), positions, cache, meta, last)
            tokens = np.zeros(T, np.int32)
            for i, tok in enumerate(np.asarray(nxt)):
                out[i].append(int(tok))
                tokens[i] = tok
            seqs = [(pages[i], lens[i] + len(out[i]) - 1, 1) for i in range(len(prompts))]
        return out

    assert generate(backend) == generate("reference")


def test_paged_attention_with_shared_prefix_matches_plain():
    rng = np.random.default_rng(1)
    L, P, S, K, H, N = 2, 12, 8, 2, 64, 4
    cache = MHAPool(jnp.asarray(rng.standard_normal((L, P, S, K, H)), jnp.float32),
                    jnp.asarray(rng.standard_normal((L, P, S, K, H)), jnp.float32))
    # Three sequences share pages [1, 2] (16 tokens); each decodes one token.
    seqs = [([1, 2, 3], 20, 1), ([1, 2, 4], 17, 1), ([1, 2, 5], 16, 1)]
    positions, meta = _step(4, 4, 3, seqs, S)
    q = jnp.asarray(rng.standard_normal((4, N, H)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((4, K, H)), jnp.float32)
    plain, _ = paged_attention(q, k, k, cache, jnp.int32(1), meta, sm_scale=0.2,
                               backend="reference")
    shared = meta._replace(shared_prefix=SharedPrefix(
        jnp.asarray([1, 2], jnp.int32), jnp.asarray([16], jnp.int32),
        jnp.asarray([True, True, True, False])))
    for backend in ("reference", "pallas-interpret"):
        got, _ = paged_attention(q, k, k, cache, jnp.int32(1), shared, sm_scale=0.2,
                                 backend=backend)
        assert_close(got, plain, jnp.float32)
