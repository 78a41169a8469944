"""The rectified-flow interpolant x_t = (1 - t) x_0 + t eps as a process of the open interface.

Rectified flow / flow matching (Liu et al. 2023; Lipman et al. 2023; Esser et al. 2024, Stable
Diffusion 3) trains a network on this straight path between data (t = 0) and noise (t = 1), usually
to predict the velocity u = d x_t / dt = eps - x_0 (``prediction="u"``). alpha(1) = 0: with a u, x0
or v model the samplers start at t = 1 itself; with an eps or score model they start at log-SNR -15
(docs/sde.md, "alpha = 0 and the u prediction").
"""

from __future__ import annotations

import math
from typing import Any

from ._array import array_namespace, check_float_array, sum_flat
from .sde import check_time

__all__ = ["RectifiedFlow"]

_LOG_2PI = math.log(2.0 * math.pi)


class RectifiedFlow:
    """x_t = (1 - t) x_0 + t eps on t in [0, 1]; the network receives ``time_scale * t``
    (1 by default; diffusers' flow-matching pipelines feed 1000 t). Prior N(0, I)."""

    T = 1.0
    t_min = 0.0
    discrete = False
    capabilities = frozenset()

    def __init__(self, time_scale: float = 1.0) -> None:
        try:
            scale = float(time_scale)
        except (TypeError, ValueError):
            raise TypeError(f"time_scale must be a positive number; got {time_scale!r}") from None
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"time_scale must be a positive number; got {time_scale!r}")
        self.time_scale = scale

    @staticmethod
    def _out(v: Any, t: Any, dtype: Any) -> Any:
        xp = array_namespace(t)
        if isinstance(v, float):
            v = xp.full_like(t, v)
        return v if dtype is None or v.dtype == dtype else xp.astype(v, dtype)

    def alpha(self, t: Any, dtype: Any = None) -> Any:
        """1 - t."""
        check_time(t, self.T)
        return self._out(1.0 - t, t, dtype)

    def sigma(self, t: Any, dtype: Any = None) -> Any:
        """t."""
        check_time(t, self.T)
        return self._out(t + 0.0, t, dtype)

    def alpha_prime(self, t: Any, dtype: Any = None) -> Any:
        """-1."""
        return self._out(-1.0, t, dtype)

    def sigma_prime(self, t: Any, dtype: Any = None) -> Any:
        """1."""
        return self._out(1.0, t, dtype)

    def log_snr(self, t: Any, dtype: Any = None) -> Any:
        """2 log((1 - t) / t) (+inf at 0, -inf at 1)."""
        check_time(t, self.T)
        xp = array_namespace(t)
        return self._out(2.0 * (xp.log(1.0 - t) - xp.log(t)), t, dtype)

    def time_from_log_snr(self, lam: Any) -> Any:
        """t = 1 / (1 + e^{lam / 2}) (host side, float64)."""
        import numpy as np

        lam = np.asarray(lam, dtype=np.float64)
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(0.5 * lam))

    def model_time(self, t: Any) -> Any:
        return t * self.time_scale if self.time_scale != 1.0 else t

    def time_from_model_time(self, t_in: Any) -> Any:
        return t_in / self.time_scale if self.time_scale != 1.0 else t_in

    def prior_sample(self, noise: Any) -> Any:
        check_float_array(noise, "noise")
        return noise

    def prior_logp(self, z: Any) -> Any:
        check_float_array(z, "z")
        return sum_flat(-0.5 * (_LOG_2PI + z * z))

    def __repr__(self) -> str:
        return f"RectifiedFlow(time_scale={self.time_scale:g})"
