"""The one process interface every diffusion process speaks (docs/conventions.md, "The seams").

Every process -- discrete Gaussian diffusion, VP, sub-VP, VE -- has a Gaussian marginal

    x_t = alpha(t) x_0 + sigma(t) eps,     eps ~ N(0, I),

with log-SNR lambda(t) = log(alpha^2 / sigma^2), a time value its network receives, and a prior at
the far end. Samplers (DDIM, ODE solvers, multistep solvers) and likelihood are written once against
this interface, as EDM and k-diffusion do.

For :class:`diffcore.GaussianDiffusion`, ``t`` is an integer array of 0-based steps (0..T-1 are the
papers' 1..T). For the SDEs, ``t`` is a real array in [eps, T].
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ._array import array_namespace, expand_to

__all__ = ["Process", "marginal_coefficients", "marginal_sample"]


@runtime_checkable
class Process(Protocol):
    """x_t = alpha(t) x_0 + sigma(t) eps, with a network time input and a prior."""

    def alpha(self, t: Any, dtype: Any = None) -> Any:
        """Signal scale alpha(t) = sqrt(abar_t) (VP) or 1 (VE), shape of ``t``."""

    def sigma(self, t: Any, dtype: Any = None) -> Any:
        """Noise scale sigma(t), shape of ``t``."""

    def log_snr(self, t: Any, dtype: Any = None) -> Any:
        """log(alpha(t)^2 / sigma(t)^2), shape of ``t`` (may be -inf at a zero-SNR end)."""

    def model_time(self, t: Any) -> Any:
        """The time value the network receives at ``t``."""

    def time_from_model_time(self, t_in: Any) -> Any:
        """The process time whose network time input is ``t_in`` (inverse of :meth:`model_time`)."""

    def prior_sample(self, noise: Any) -> Any:
        """A draw from the prior p_T given standard normal ``noise``."""

    def prior_logp(self, z: Any) -> Any:
        """Per-example log-density of the prior p_T at ``z`` (summed over non-batch axes)."""


def marginal_coefficients(process: Process, t: Any, x: Any) -> tuple[Any, Any]:
    """(alpha(t), sigma(t)) in ``x``'s dtype, shaped to broadcast against ``x``."""
    return expand_to(process.alpha(t, dtype=x.dtype), x), expand_to(process.sigma(t, dtype=x.dtype), x)


def marginal_sample(process: Process, x_start: Any, t: Any, noise: Any) -> Any:
    """x_t = alpha(t) x_0 + sigma(t) noise."""
    array_namespace(x_start, noise)
    alpha, sigma = marginal_coefficients(process, t, x_start)
    return alpha * x_start + sigma * noise
