"""Time grids: the steps a sampler visits, as host-side float64 columns of the process interface."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..diffusion import GaussianDiffusion
from ..schedules import respaced_timesteps
from ._base import check_steps

__all__ = ["Grid", "time_grid", "default_eps", "end_time"]


class Grid(NamedTuple):
    """Descending times (steps for GaussianDiffusion), the network's time input, alpha and sigma."""

    times: np.ndarray
    t_in: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray


def default_eps(process: Any) -> float:
    """score_sde's sampling end time: 1e-3 for VP and sub-VP, 1e-5 for VE."""
    return 1e-3 if getattr(process, "zero_noise_at_start", True) else 1e-5


def end_time(process: Any, eps: Any) -> float:
    """The end time of a continuous-time solve: ``eps`` (default 1e-3 VP / sub-VP, 1e-5 VE), in
    (0, T) where sigma(0) = 0 (the score is singular at 0), else [0, T)."""
    try:
        eps = default_eps(process) if eps is None else float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a number; got {eps!r}") from None
    low_open = getattr(process, "zero_noise_at_start", True)
    if not (eps > 0.0 if low_open else eps >= 0.0) or not eps < process.T:
        low = "(0" if low_open else "[0"
        raise ValueError(
            f"eps must lie in {low}, {process.T:g}) for {type(process).__name__}"
            f"{' (sigma(0) = 0: the score is singular there)' if low_open else ''}; got {eps}"
        )
    return eps


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
    eps = end_time(process, eps)
    times = np.linspace(process.T, eps, steps) if steps > 1 else np.array([process.T])
    return Grid(times, np.asarray(process.model_time(times)), np.asarray(process.alpha(times)), np.asarray(process.sigma(times)))
