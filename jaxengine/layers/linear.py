"""`linear`: the one place a matmul on a weight happens.

Model files never write `x @ w` on a parameter; they call `linear`, so that a weight format
other than a plain [in, out] array (quantized blocks with scales, a LoRA pair) is handled here
and nowhere else.
"""

from __future__ import annotations

import jax


def linear(x: jax.Array, w: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """x [..., in] @ w [in, out] (+ bias [out]) -> [..., out]."""
    y = x @ w
    return y if bias is None else y + bias
