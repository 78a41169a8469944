"""Time grids: the steps a sampler visits, as host-side float64 columns of the process interface."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..process import START_LOG_SNR, host_log_snr, is_discrete, time_from_log_snr, time_range
from ..schedules import respaced_timesteps
from ._base import check_steps

__all__ = ["Grid", "time_grid", "default_eps", "end_time", "check_times", "SPACINGS"]

#: continuous-time spacings: uniform in t (score_sde), or uniform in log-SNR (DPM-Solver)
SPACINGS = ("linspace", "logsnr")


class Grid(NamedTuple):
    """Descending times (steps for GaussianDiffusion), the network's time input, alpha and sigma."""

    times: np.ndarray
    t_in: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray


def _zero_noise_at_start(process: Any) -> bool:
    """Whether sigma = 0 at the clean end (the score is singular there): the process's own flag, else
    sigma(t_min) read from the process."""
    flag = getattr(process, "zero_noise_at_start", None)
    if flag is not None:
        return bool(flag)
    lo, _ = time_range(process)
    return not float(np.asarray(process.sigma(np.asarray(float(lo))), dtype=np.float64)) > 0.0


def default_eps(process: Any) -> float:
    """The sampling end time: score_sde's 1e-3 for VP and sub-VP, 1e-5 for VE; for another process
    t_min where sigma(t_min) > 0 (EDM's sigma_min), else t_min + 1e-3 (T - t_min)."""
    if hasattr(process, "zero_noise_at_start"):
        return 1e-3 if process.zero_noise_at_start else 1e-5
    lo, hi = time_range(process)
    return lo + 1e-3 * (hi - lo) if _zero_noise_at_start(process) else lo


def end_time(process: Any, eps: Any) -> float:
    """The end time of a continuous-time solve: ``eps`` (default :func:`default_eps`), in
    (t_min, T) where sigma(t_min) = 0 (the score is singular there), else [t_min, T)."""
    try:
        eps = default_eps(process) if eps is None else float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a number; got {eps!r}") from None
    low_open = _zero_noise_at_start(process)
    lo, hi = time_range(process)
    if not (eps > lo if low_open else eps >= lo) or not eps < hi:
        low = f"({lo:g}" if low_open else f"[{lo:g}"
        raise ValueError(
            f"eps must lie in {low}, {hi:g}) for {type(process).__name__}"
            f"{f' (sigma({lo:g}) = 0: the score is singular there)' if low_open else ''}; got {eps}"
        )
    return eps


def check_times(process: Any, times: Any, name: str = "times") -> np.ndarray:
    """An explicit grid: strictly decreasing, finite, within the process's range (integer steps of
    a discrete process in 0 .. num_timesteps - 1; given ascending or descending, used descending)."""
    try:
        t = np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a 1-D sequence of times; got {type(times).__name__}") from None
    if t.ndim != 1 or t.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of times; got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{name} must be finite; got {t.tolist()[:10]}")
    lo, hi = time_range(process)
    if is_discrete(process):
        if not np.all(t == np.round(t)):
            raise ValueError(f"{name} of a {type(process).__name__} must be integer steps (kept original steps); got {t.tolist()[:10]}")
        if t.shape[0] > 1 and np.all(np.diff(t) > 0):
            t = t[::-1]
        t = t.astype(np.int64)
    if t.shape[0] > 1 and not np.all(np.diff(t) < 0):
        raise ValueError(f"{name} must be strictly decreasing (noisy end first); got {np.asarray(times).tolist()[:10]}")
    if t.min() < lo or t.max() > hi:
        raise ValueError(
            f"{name} must lie in [{lo:g}, {hi:g}] for {type(process).__name__}; got values from {t.min():g} to {t.max():g}"
        )
    if not is_discrete(process) and _zero_noise_at_start(process) and not t.min() > lo:
        raise ValueError(
            f"{name} must end above t_min = {lo:g} for {type(process).__name__} (sigma = 0 there: the score is "
            f"singular); got a last time of {t.min():g}"
        )
    return t.copy()


def _logsnr_times(process: Any, n: int, start: float, end: float) -> np.ndarray:
    """n times uniform in log-SNR from ``start`` (noisy) to ``end`` (clean), ends exact."""
    lam_lo, lam_hi = (float(v) for v in host_log_snr(process, np.array([start, end])))
    if not math.isfinite(lam_lo) and not is_discrete(process) and n > 2:
        # alpha = 0 at the start (a u / x0 / v model starts there): the first step goes to log-SNR -15,
        # the rest are uniform in log-SNR from there
        inner = float(time_from_log_snr(process, np.asarray(START_LOG_SNR)))
        return np.concatenate([[start], _logsnr_times(process, n - 1, inner, end)])
    if not math.isfinite(lam_lo):
        raise ValueError("spacing='logsnr' needs a finite log-SNR at the noisy end (this schedule has zero terminal SNR)")
    lam = np.linspace(lam_lo, lam_hi, n) if n > 1 else np.array([lam_lo])
    times = time_from_log_snr(process, lam)
    if is_discrete(process):
        # nearest steps; several lambdas may share a step near the clean end: keep each step once
        return np.unique(times)[::-1].copy()
    times[0], times[-1] = start, end  # exact ends despite rounding of the inverse
    return times


def time_grid(
    process: Any,
    steps: Any,
    *,
    spacing: str = "linspace",
    eps: float | None = None,
    start: float | None = None,
    times: Any = None,
) -> Grid:
    """The grid of ``steps`` times from the noisy end to the clean end.

    Discrete processes: kept original steps (respacing ``spacing``: "linspace", "leading",
    "trailing", "logsnr" (the nearest steps, each once), or improved-diffusion's strings via
    ``steps="ddim50"``), descending; ``steps=None`` keeps every step. Continuous: ``linspace(start,
    eps, steps)`` (score_sde; ``start`` defaults to T) or uniform in log-SNR (``spacing="logsnr"``),
    ``eps`` by default :func:`default_eps`. ``times`` replaces all of that with an explicit grid
    (:func:`check_times`).
    """
    if times is not None:
        t = check_times(process, times)
    elif is_discrete(process):
        if eps is not None:
            raise ValueError("eps (the end time) applies to continuous-time processes; a GaussianDiffusion ends at step 0")
        T = process.num_timesteps
        if spacing == "logsnr":
            if isinstance(steps, str):
                raise ValueError(f"spacing='logsnr' takes an integer number of steps; got {steps!r}")
            t = _logsnr_times(process, check_steps(steps), T - 1, 0)
        else:
            kept = np.arange(T) if steps is None else respaced_timesteps(T, steps, spacing)
            t = kept[::-1].copy()
    else:
        steps = check_steps(steps)
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {', '.join(map(repr, SPACINGS))} for a continuous-time process; got {spacing!r}")
        eps = end_time(process, eps)
        hi = time_range(process)[1] if start is None else float(start)
        if spacing == "logsnr":
            t = _logsnr_times(process, steps, hi, eps)
        else:
            t = np.linspace(hi, eps, steps) if steps > 1 else np.array([hi])
    return Grid(t, np.asarray(process.model_time(t)), np.asarray(process.alpha(t), dtype=np.float64),
                np.asarray(process.sigma(t), dtype=np.float64))
