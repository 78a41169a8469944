"""Time embeddings written once against the Array API (work on torch and JAX arrays alike).

Both follow diffusers operation by operation, in float32, so the two backends and diffusers agree
to float32 rounding.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace, device as array_device

__all__ = ["sinusoidal_embedding", "fourier_embedding"]


def sinusoidal_embedding(t: Any, dim: int, *, flip_sin_to_cos: bool, freq_shift: float, max_period: float = 10000.0) -> Any:
    """Transformer-style embedding of the (B,) times ``t``: (B, dim) float32.

    With ``half = dim // 2`` frequencies ``f_i = exp(-ln(max_period) * i / (half - freq_shift))``,
    the embedding is ``[sin(t f), cos(t f)]``, or ``[cos, sin]`` when ``flip_sin_to_cos``
    (diffusers' ``get_timestep_embedding``; DDPM uses freq_shift=1, flip=False).
    """
    xp = array_namespace(t)
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding: dim={dim} must be even")
    half = dim // 2
    exponent = -math.log(max_period) * xp.arange(half, dtype=xp.float32, device=array_device(t))
    freqs = xp.exp(exponent / (half - freq_shift))
    args = xp.astype(t, xp.float32)[:, None] * freqs[None, :]
    parts = [xp.cos(args), xp.sin(args)] if flip_sin_to_cos else [xp.sin(args), xp.cos(args)]
    return xp.concat(parts, axis=-1)


def fourier_embedding(t: Any, weight: Any) -> Any:
    """Gaussian Fourier features of ``log t`` (diffusers' GaussianFourierProjection, log=True,
    no flip): ``[sin(2 pi w log t), cos(2 pi w log t)]``, (B, 2 * len(weight))."""
    xp = array_namespace(t, weight)
    proj = xp.log(t)[:, None] * weight[None, :] * 2 * math.pi
    return xp.concat([xp.sin(proj), xp.cos(proj)], axis=-1)
