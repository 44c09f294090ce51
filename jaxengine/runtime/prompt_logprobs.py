"""Prompt logprobs inside the forward program: the logits of the step's rows that predict a
prompt token, in blocks, as many blocks as the step has such rows.

A step computes logits for each sequence's last token only; a request asking for prompt
logprobs needs them at every prompt position it reports. Rather than a second program per
step shape, the forward loops over blocks of those rows with a trip count from the step, so a
step where nobody asks (almost all of them) runs the loop zero times and compiles nothing
more, and one that asks pays for its rows rounded up to a block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxengine.sampling_params import MAX_TOP_LOGPROBS

ROW_BLOCK = 16  # rows per LM-head matmul: [16, D] x [D, V] stays small at any vocabulary


class PromptLogprobs(NamedTuple):
    """Per step row [T]: the logprob of the prompt token it predicts, and the best tokens."""

    logprobs: jax.Array  # [T] f32
    top_ids: jax.Array   # [T, K] i32, most likely first
    top_values: jax.Array  # [T, K] f32
    id_values: jax.Array  # [T, M] f32 the logprobs of its request's token_ids_logprob


def prompt_logprobs(logits_fn: Callable[[jax.Array], jax.Array], hidden: jax.Array,
                    rows: jax.Array, targets: jax.Array, row_seqs: jax.Array,
                    seq_ids: jax.Array, num_rows: jax.Array) -> PromptLogprobs:
    """hidden [T, D]; rows, targets, row_seqs [T] i32 (the first num_rows real); seq_ids
    [B, M] i32 each sequence's token_ids_logprob; logits_fn: [R, D] -> float32 logits [R, V],
    the model's own head (soft-caps included)."""
    T = rows.shape[0]
    block = min(ROW_BLOCK, T)  # T is a power of two, so blocks tile it
    V = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct((1, hidden.shape[-1]), hidden.dtype)
                       ).shape[-1]
    K = min(MAX_TOP_LOGPROBS, V)

    def body(i, out):
        start = i * block
        r = jax.lax.dynamic_slice(rows, (start,), (block,))
        t = jax.lax.dynamic_slice(targets, (start,), (block,))
        asked = seq_ids[jax.lax.dynamic_slice(row_seqs, (start,), (block,))]   # [block, M]
        logprobs = jax.nn.log_softmax(logits_fn(hidden[r]), axis=-1)
        values, ids = jax.lax.top_k(logprobs, K)
        picked = jnp.take_along_axis(logprobs, t[:, None], axis=-1)[:, 0]
        return PromptLogprobs(
            jax.lax.dynamic_update_slice(out.logprobs, picked, (start,)),
            jax.lax.dynamic_update_slice(out.top_ids, ids.astype(jnp.int32), (start, 0)),
            jax.lax.dynamic_update_slice(out.top_values, values, (start, 0)),
            jax.lax.dynamic_update_slice(
                out.id_values, jnp.take_along_axis(logprobs, asked, axis=-1), (start, 0)))

    empty = PromptLogprobs(jnp.zeros(T, jnp.float32), jnp.zeros((T, K), jnp.int32),
                           jnp.zeros((T, K), jnp.float32),
                           jnp.zeros((T, seq_ids.shape[-1]), jnp.float32))
    return jax.lax.fori_loop(0, (num_rows[0] + block - 1) // block, body, empty)
