"""Rotary position embedding: the frequencies of HF's rope types (default, linear, llama3,
YaRN with its attention factor) and the rotation in both layouts, rotate-half (HF Llama:
the pairs are (i, i + H/2)) and interleaved (the pairs are (2i, 2i + 1))."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Rope(NamedTuple):
    inv_freq: np.ndarray    # [H/2] float32
    attention_factor: float  # scales cos and sin (YaRN's mscale; 1 otherwise)


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None,
                     max_position_embeddings: int | None = None) -> Rope:
    """The inverse frequencies and cos/sin factor after the checkpoint's rope scaling."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    kind = (scaling or {}).get("rope_type") or (scaling or {}).get("type")
    factor = 1.0
    if kind in (None, "default"):
        pass
    elif kind == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    elif kind == "llama3":
        inv_freq = _llama3(inv_freq, scaling)
    elif kind == "yarn":
        inv_freq, factor = _yarn(head_dim, theta, scaling, max_position_embeddings)
    else:
        raise ValueError(f"unsupported rope scaling {kind!r}; supported: linear, llama3, yarn")
    return Rope(inv_freq.astype(np.float32), float(factor))


def _llama3(inv_freq: np.ndarray, s: dict) -> np.ndarray:
    # Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
    factor, low, high = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old_ctx = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = np.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
    middle = (wavelen <= old_ctx / low) & (wavelen >= old_ctx / high)
    return np.where(middle, blended, out)


def _yarn(dim: int, base: float, s: dict, max_positions: int | None) -> tuple[np.ndarray, float]:
    # Dimensions that rotate fewer than beta_slow times over the original context are
    # interpolated by `factor`, those rotating more than beta_fast times kept, a linear ramp
    # between; cos and sin are scaled by the attention factor (mscale).
    original = s.get("original_max_position_embeddings") or max_positions
    if original is None:
        raise ValueError("yarn rope scaling needs original_max_position_embeddings")
    factor = s.get("factor") or (max_positions / original)

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = s.get("attention_factor")
    if attention is None:
        m, m_all = s.get("mscale"), s.get("mscale_all_dim")
        attention = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(s.get("beta_fast") or 32), correction_dim(s.get("beta_slow") or 1)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float32) / dim)
    keep = 1 - ramp  # the share of extrapolation (the original frequency)
    inv_freq = (1 / (factor * pos_freqs)) * (1 - keep) + (1 / pos_freqs) * keep
    return inv_freq, attention


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, rope: Rope,
               interleaved: bool = False) -> jnp.ndarray:
    """x [T, N, H], positions [T] -> x rotated, same dtype (angles in float32)."""
    angles = positions.astype(jnp.float32)[:, None] * jnp.asarray(rope.inv_freq)[None, :]
    cos = jnp.cos(angles)[:, None, :]   # [T, 1, H/2]
    sin = jnp.sin(angles)[:, None, :]
    if rope.attention_factor != 1.0:
        cos, sin = cos * rope.attention_factor, sin * rope.attention_factor
    x32 = x.astype(jnp.float32)
    if interleaved:
        x1, x2 = x32[..., 0::2], x32[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x.shape)
    else:
        x1, x2 = jnp.split(x32, 2, axis=-1)
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)
