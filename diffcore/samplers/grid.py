"""Time grids: the steps a sampler visits, as host-side float64 columns of the process interface."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..diffusion import GaussianDiffusion
from ..schedules import respaced_timesteps
from ._base import check_steps

__all__ = ["Grid", "time_grid", "default_eps"]


class Grid(NamedTuple):
    """Descending times (steps for GaussianDiffusion), the network's time input, alpha and sigma."""

    times: np.ndarray
    t_in: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray


def default_eps(process: Any) -> float:
    """score_sde's sampling end time: 1e-3 for VP and sub-VP, 1e-5 for VE."""
    return 1e-3 if getattr(process, "zero_noise_at_start", True) else 1e-5


def time_grid(process: Any, steps: Any, *, spacing: str = "linspace", eps: float | None = None) -> Grid:
    """The grid of ``steps`` times from the noisy end to the clean end.

    GaussianDiffusion: kept original steps (respacing ``spacing``: "linspace", "leading",
    "trailing", or improved-diffusion's strings via ``steps="ddim50"``), descending; ``steps=None``
    keeps every step. SDEs: ``linspace(T, eps, steps)`` (score_sde), ``eps`` by default 1e-3 (VP,
    sub-VP) or 1e-5 (VE).
    """
    if isinstance(process, GaussianDiffusion):
        if eps is not None:
            raise ValueError("eps (the end time) applies to continuous-time processes; a GaussianDiffusion ends at step 0")
        T = process.num_timesteps
        kept = np.arange(T) if steps is None else respaced_timesteps(T, steps, spacing)
        times = kept[::-1].copy()
        return Grid(
            times,
            np.asarray(process.model_time(times)),
            process.sqrt_alphas_cumprod[times],
            process.sqrt_one_minus_alphas_cumprod[times],
        )
    steps = check_steps(steps)
    if spacing != "linspace":
        raise ValueError(f"spacing must be 'linspace' for a continuous-time process (the grid linspace(T, eps, steps)); got {spacing!r}")
    eps = default_eps(process) if eps is None else float(eps)
    zero_noise = getattr(process, "zero_noise_at_start", False)
    if not ((0.0 < eps) if zero_noise else (0.0 <= eps)) or not eps < process.T:
        low = "(0" if zero_noise else "[0"
        raise ValueError(
            f"eps must lie in {low}, {process.T:g}) (sigma(0) = 0 for this process: its score is singular there); got {eps:g}"
            if zero_noise else f"eps must lie in {low}, {process.T:g}); got {eps:g}"
        )
    times = np.linspace(process.T, eps, steps) if steps > 1 else np.array([process.T])
    return Grid(times, np.asarray(process.model_time(times)), np.asarray(process.alpha(times)), np.asarray(process.sigma(times)))
