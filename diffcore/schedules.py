"""Noise schedules (beta tables) and timestep respacing for discrete Gaussian diffusion.

Everything here is float64 NumPy: schedule tables and derived coefficients are computed in float64
before any cast (docs/conventions.md: fp16/bf16 tables round abar to 1 and give NaN). Notation follows
Ho et al. 2020: alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s; arrays are 0-indexed, so
``betas[i]`` is beta_{i+1} and the network receives the integer step ``i``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from .checks import check_bool, check_choice, check_int, check_real

__all__ = [
    "SCHEDULE_NAMES",
    "SPACINGS",
    "get_named_beta_schedule",
    "betas_for_alpha_bar",
    "rescale_zero_terminal_snr",
    "check_betas",
    "space_timesteps",
    "respaced_timesteps",
    "respace_betas",
    "check_kept_timesteps",
    "ncsn_sigmas",
    "karras_sigmas",
]

SCHEDULE_NAMES = ("linear", "cosine", "scaled_linear", "sigmoid")
SPACINGS = ("linspace", "leading", "trailing")

# Allowed keyword options of each named schedule, with their defaults.
_SCHEDULE_OPTIONS: dict[str, dict[str, float]] = {
    "linear": {},
    "cosine": {"s": 0.008, "max_beta": 0.999},
    "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
    "sigmoid": {"beta_start": 1e-4, "beta_end": 0.02},
}


# --------------------------------------------------------------------------- argument checks


def check_betas(betas: Any, name: str = "betas") -> np.ndarray:
    """Validate a beta table and return it as a float64 1-D NumPy array (a copy).

    Every beta must lie in the open interval (0, 1); beta = 1 is allowed at the last step only, where
    it gives abar_T = 0 (zero terminal SNR, Lin et al. 2024).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r} of type {type(name).__name__}")
    try:
        arr = np.asarray(betas)
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be a 1-D array of real numbers, got {betas!r}") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must be a 1-D array of real numbers, got dtype {arr.dtype} (allowed: integer or float)"
        )
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    arr = np.array(arr, dtype=np.float64, copy=True)
    finite = np.isfinite(arr)
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"{name} must be finite, got {name}[{i}] = {float(arr[i])!r}")
    inside = (arr > 0.0) & (arr < 1.0)
    inside[-1] |= arr[-1] == 1.0
    if not inside.all():
        i = int(np.argmin(inside))
        raise ValueError(
            f"{name} must lie in (0, 1) (exactly 1 is allowed at the last step only), "
            f"got {name}[{i}] = {float(arr[i])!r} (length {arr.shape[0]})"
        )
    return arr


def check_kept_timesteps(timesteps: Any, num_timesteps: int, name: str = "timesteps") -> np.ndarray:
    """Strictly increasing (sorted, unique) integer steps within [0, num_timesteps - 1], as int64."""
    if timesteps is None or isinstance(timesteps, (str, bytes)) or np.ndim(timesteps) == 0:
        raise TypeError(f"{name} must be a 1-D array of ints (the kept steps), got {timesteps!r}")
    try:
        arr = np.asarray(timesteps)
    except Exception as exc:
        raise TypeError(f"{name} must be a 1-D array of ints, got {timesteps!r}") from exc
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a 1-D array of ints, got dtype {arr.dtype} ({timesteps!r})")
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    bad = (arr < 0) | (arr > num_timesteps - 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name} must lie in [0, {num_timesteps - 1}] (the schedule has {num_timesteps} steps), "
            f"got {name}[{i}] = {int(arr[i])}"
        )
    arr = arr.astype(np.int64)
    rising = np.diff(arr) > 0
    if not rising.all():
        i = int(np.argmin(rising)) + 1
        raise ValueError(
            f"{name} must be strictly increasing, got {name}[{i - 1}] = {int(arr[i - 1])} "
            f"followed by {name}[{i}] = {int(arr[i])}"
        )
    return arr


# --------------------------------------------------------------------------- schedules


def betas_for_alpha_bar(
    num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999
) -> np.ndarray:
    """Betas that discretise a continuous abar(t), t in [0, 1] (Nichol & Dhariwal 2021).

    beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta), i = 0, ..., T-1, as in
    improved-diffusion's ``betas_for_alpha_bar``. ``alpha_bar`` is called with Python floats.
    """
    T = check_int(num_timesteps, "num_timesteps", 1)
    if not callable(alpha_bar):
        raise TypeError(f"alpha_bar must be a callable t -> abar(t), got {alpha_bar!r}")
    max_beta = check_real(max_beta, "max_beta", 0.0, 1.0, high_inclusive=True)
    values = np.empty(T + 1, dtype=np.float64)
    for i in range(T + 1):
        try:
            values[i] = float(alpha_bar(i / T))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"alpha_bar must return a real number, failed at t = {i / T!r}: {exc}") from exc
        except ArithmeticError as exc:  # e.g. a division by zero inside the user's function
            raise ValueError(
                f"alpha_bar raised {type(exc).__name__} at t = {i / T!r} (it is called at t = i / num_timesteps, "
                f"i = 0..{T}, both ends included): {exc}"
            ) from exc
    ok = np.isfinite(values) & (values >= 0.0)
    ok[:-1] &= values[:-1] > 0.0  # abar(t) is divided by at every t < 1
    if not ok.all():
        i = int(np.argmin(ok))
        raise ValueError(
            f"alpha_bar must return finite values in (0, 1] for t < 1 and [0, 1] at t = 1, "
            f"got alpha_bar({i / T!r}) = {float(values[i])!r}"
        )
    betas = np.minimum(1.0 - values[1:] / values[:-1], max_beta)
    if not (betas > 0.0).all():
        i = int(np.argmin(betas > 0.0))
        raise ValueError(
            f"alpha_bar must be strictly decreasing, got alpha_bar({i / T!r}) = {float(values[i])!r} <= "
            f"alpha_bar({(i + 1) / T!r}) = {float(values[i + 1])!r}"
        )
    return check_betas(betas, "betas_for_alpha_bar(...)")


def _cosine_alpha_bar(s: float) -> Callable[[float], float]:
    return lambda t: math.cos((t + s) / (1.0 + s) * math.pi / 2) ** 2


def get_named_beta_schedule(
    name: str, num_timesteps: int, *, rescale_zero_terminal_snr: bool = False, **options: float
) -> np.ndarray:
    """A float64 beta table of length ``num_timesteps`` for a named schedule.

    - ``"linear"`` (Ho et al. 2020, rescaled as in Nichol & Dhariwal 2021): with scale = 1000/T,
      beta = linspace(scale * 1e-4, scale * 0.02, T). Needs T >= 21 (at T <= 20 the last beta is >= 1).
    - ``"cosine"`` (Nichol & Dhariwal 2021): abar(t) = f(t)/f(0), f(t) = cos^2(((t + s)/(1 + s)) pi/2),
      beta_i = min(1 - abar((i+1)/T)/abar(i/T), max_beta); options ``s`` = 0.008, ``max_beta`` = 0.999.
    - ``"scaled_linear"`` (Stable Diffusion; diffusers): linspace(sqrt(beta_start), sqrt(beta_end), T)^2;
      options ``beta_start`` = 0.00085, ``beta_end`` = 0.012.
    - ``"sigmoid"`` (GeoDiff, Xu et al. 2022; diffusers): sigmoid(linspace(-6, 6, T)) (beta_end - beta_start)
      + beta_start; options ``beta_start`` = 1e-4, ``beta_end`` = 0.02.

    ``rescale_zero_terminal_snr=True`` then applies :func:`rescale_zero_terminal_snr` (last beta = 1).
    """
    check_choice(name, SCHEDULE_NAMES, "name")
    T = check_int(num_timesteps, "num_timesteps", 1)
    check_bool(rescale_zero_terminal_snr, "rescale_zero_terminal_snr")
    allowed = _SCHEDULE_OPTIONS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for the {name!r} schedule (allowed: {sorted(allowed) or 'none'})"
        )
    opts = {**allowed, **options}

    if name == "linear":
        if T < 21:
            raise ValueError(
                f"num_timesteps must be >= 21 for the linear schedule (its last beta is 20/num_timesteps "
                f"and must stay below 1), got {T}"
            )
        scale = 1000.0 / T
        betas = np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    elif name == "cosine":
        s = check_real(opts["s"], "s", 0.0, math.inf)
        max_beta = check_real(opts["max_beta"], "max_beta", 0.0, 1.0, high_inclusive=True)
        betas = betas_for_alpha_bar(T, _cosine_alpha_bar(s), max_beta)
    else:
        beta_start = check_real(opts["beta_start"], "beta_start", 0.0, 1.0)
        beta_end = check_real(opts["beta_end"], "beta_end", 0.0, 1.0)
        if name == "scaled_linear":
            betas = np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
        else:
            x = np.linspace(-6.0, 6.0, T, dtype=np.float64)
            betas = 1.0 / (1.0 + np.exp(-x)) * (beta_end - beta_start) + beta_start

    betas = check_betas(betas, f"{name} betas")
    if rescale_zero_terminal_snr:
        betas = _rescale_zero_terminal_snr(betas)
    return betas


def rescale_zero_terminal_snr(betas: Any) -> np.ndarray:
    """Rescale betas so the last step has zero SNR (abar_T = 0) and the first is unchanged.

    sqrt(abar)'_t = (sqrt(abar_t) - sqrt(abar_T)) * sqrt(abar_1) / (sqrt(abar_1) - sqrt(abar_T)), then
    beta'_t = 1 - abar'_t / abar'_{t-1}; the last beta' is exactly 1. Lin et al. 2024, "Common Diffusion
    Noise Schedules and Sample Steps are Flawed", Algorithm 1. Pair it with v- or x_0-prediction: an
    eps-prediction model cannot recover x_0 at abar = 0.
    """
    betas = check_betas(betas)
    if betas.shape[0] < 2:
        raise ValueError(f"betas must have at least 2 steps to rescale to zero terminal SNR, got {betas.shape[0]}")
    sqrt_abar = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    if not first > last:
        raise ValueError(
            f"betas must give a decreasing abar to rescale to zero terminal SNR, got sqrt(abar) first "
            f"{float(first)!r}, last {float(last)!r}"
        )
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    abar[0] = 1.0 - betas[0]  # the first step is unchanged exactly, not just up to rounding
    abar[-1] = 0.0
    new_betas = 1.0 - abar[1:] / abar[:-1]
    return check_betas(np.concatenate([betas[:1], new_betas]), "rescaled betas")


_rescale_zero_terminal_snr = rescale_zero_terminal_snr  # get_named_beta_schedule's keyword shadows the name


# --------------------------------------------------------------------------- respacing


def space_timesteps(
    num_timesteps: int, section_counts: str | Sequence[int] | None = None, *, timesteps: Sequence[int] | None = None
) -> np.ndarray:
    """The original steps kept when respacing, improved-diffusion's ``space_timesteps`` (Nichol & Dhariwal 2021, §4).

    ``section_counts``:
      - ``"ddimN"``: the smallest integer stride k with exactly N steps in range(0, T, k) (DDIM's even
        spacing; ddim50 at T=1000 is 0, 20, ..., 980 and never reaches T-1);
      - ``"10,15,20"`` or ``[10, 15, 20]``: [0, T) is split into len(section_counts) sections (the first
        T % len sections one step longer) and each section i keeps section_counts[i] steps at
        round(j * (size-1)/(count-1)), j = 0..count-1 (Python's round-half-even, as the reference).
    A list is always per-section counts, as in improved-diffusion. To give the kept steps themselves,
    pass ``timesteps=[0, 250, 999]`` instead (sorted unique ints in [0, T-1]; returned as int64).
    Returns the sorted unique steps as int64.
    """
    T = check_int(num_timesteps, "num_timesteps", 1)
    if timesteps is not None:
        if section_counts is not None:
            raise TypeError(
                f"pass either section_counts (counts per section, or 'ddimN') or timesteps (the kept steps), "
                f"not both; got section_counts={section_counts!r}, timesteps={timesteps!r}"
            )
        return check_kept_timesteps(timesteps, T)
    if section_counts is None:
        raise TypeError("space_timesteps needs section_counts ('ddimN', '10,15,20' or [10, 15, 20]) or timesteps=[...]")
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if text.startswith("ddim"):
            try:
                desired = int(text[len("ddim"):])
            except ValueError:
                raise ValueError(
                    f"section_counts must be 'ddimN' with an integer N >= 1 or comma-separated ints, "
                    f"got {section_counts!r}"
                ) from None
            if desired < 1:
                raise ValueError(f"section_counts 'ddimN' needs N >= 1, got {section_counts!r}")
            # The reference tries strides 1..T-1; stride T is added so that "ddim1" gives [0].
            for stride in range(1, T + 1):
                if len(range(0, T, stride)) == desired:
                    return np.arange(0, T, stride, dtype=np.int64)
            raise ValueError(
                f"section_counts {section_counts!r}: no integer stride gives exactly {desired} steps out of "
                f"num_timesteps = {T}"
            )
        try:
            counts = [int(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(
                f"section_counts must be 'ddimN' or comma-separated ints like '10,15,20', got {section_counts!r}"
            ) from None
    else:
        try:
            counts = [check_int(c, "section_counts entries") for c in section_counts]
        except TypeError as exc:
            raise TypeError(
                f"section_counts must be a str or a sequence of ints, got {section_counts!r} ({exc})"
            ) from None
    if not counts or any(c < 0 for c in counts) or sum(counts) < 1:
        raise ValueError(
            f"section_counts must be non-negative ints with a positive sum, got {section_counts!r}"
        )
    size_per, extra = divmod(T, len(counts))
    start = 0
    steps: list[int] = []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(
                f"section_counts {section_counts!r}: section {i} has {size} steps of num_timesteps = {T}, "
                f"cannot take {count} from it"
            )
        frac_stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += frac_stride  # accumulated, as the reference does: rounding matches it exactly
        start += size
    return np.unique(np.asarray(steps, dtype=np.int64))


def respaced_timesteps(
    num_timesteps: int, num_steps: int | str, spacing: str = "linspace", *, steps_offset: int = 0
) -> np.ndarray:
    """The ``num_steps`` original steps (sorted ascending, int64) a sampler visits out of ``num_timesteps``.

    Spacings (diffusers' names; Lin et al. 2024, Table 2):
      - ``"linspace"``: round(linspace(0, T-1, n)) -- includes 0 and T-1;
      - ``"leading"``: arange(n) * (T // n) + steps_offset -- starts at steps_offset, often misses T-1;
      - ``"trailing"``: round(arange(T, 0, -T/n)) - 1, the first n entries -- ends at T-1. (diffusers
        keeps all entries: its float arange sometimes yields n+1 of them, the last becoming step -1.)
    ``num_steps`` may also be a string or a list of per-section counts understood by
    :func:`space_timesteps` (``"ddim50"``, ``"10,20"``, ``[10, 20]``), improved-diffusion's spacings; then ``spacing`` must stay at its default and ``steps_offset`` at 0.
    ``steps_offset`` applies to ``"leading"`` only.
    """
    T = check_int(num_timesteps, "num_timesteps", 1)
    check_choice(spacing, SPACINGS, "spacing")
    offset = check_int(steps_offset, "steps_offset", 0)
    if isinstance(num_steps, (str, list, tuple)):
        if spacing != "linspace" or offset != 0:
            raise ValueError(
                f"num_steps {num_steps!r} is a space_timesteps string: it sets the spacing itself, so spacing "
                f"must stay 'linspace' (the default) and steps_offset 0, got spacing={spacing!r}, "
                f"steps_offset={offset}"
            )
        return space_timesteps(T, num_steps)
    n = check_int(num_steps, "num_steps", 1)
    if n > T:
        raise ValueError(f"num_steps must be <= num_timesteps = {T}, got {n}")
    if offset and spacing != "leading":
        raise ValueError(f"steps_offset applies to spacing='leading' only, got steps_offset={offset} with {spacing!r}")

    if spacing == "linspace":
        steps = np.round(np.linspace(0, T - 1, n))
    elif spacing == "leading":
        steps = np.arange(n) * (T // n) + offset
        if steps[-1] > T - 1:
            raise ValueError(
                f"steps_offset must be <= {T - 1 - int(steps[-1]) + offset} for num_steps = {n} of "
                f"num_timesteps = {T} with 'leading' spacing, got {offset}"
            )
    else:
        # diffusers' values exactly (ties included); its float arange sometimes has an (n+1)-th entry
        # near 0 that would become step -1: keep the first n.
        steps = np.sort(np.round(np.arange(T, 0, -T / n)[:n]) - 1)
    steps = steps.astype(np.int64)
    if np.unique(steps).shape[0] != n:  # cannot happen for n <= T; kept as a guard, never a silent merge
        raise ValueError(f"spacing {spacing!r} produced duplicate steps for num_steps = {n}, num_timesteps = {T}")
    return steps


def respace_betas(betas: Any, timesteps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Betas of the chain that visits only the original steps ``timesteps`` (Nichol & Dhariwal 2021, §4).

    new_beta_i = 1 - abar[s_i] / abar[s_{i-1}] (abar[s_{-1}] := 1), so the respaced chain has the same
    abar at every kept step. Returns ``(new_betas, timestep_map)``: timestep_map[i] = s_i is the original
    step the network must receive at respaced index i. If T-1 is not kept (e.g. "ddim50"), the respaced
    chain ends at abar[s_{n-1}], not abar_T: that is the reference's behaviour.
    """
    betas = check_betas(betas)
    steps = check_kept_timesteps(timesteps, betas.shape[0])
    # 1 - prod(1 - beta_j) over each segment (s_{i-1}, s_i], via log1p/expm1: exact to a few ulp even
    # for a single step (1 - abar[i]/abar[i-1] loses ~1e-12 relative on beta ~ 1e-4).
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf at a zero-terminal-SNR last step
        log_alphas = np.log1p(-betas[: steps[-1] + 1])
    starts = np.concatenate([[0], steps[:-1] + 1])
    new_betas = -np.expm1(np.add.reduceat(log_alphas, starts))
    return check_betas(new_betas, "respaced betas"), steps.copy()


# ------------------------------------------------------------------------------- noise ladders


def _check_sigma_range(sigma_min: Any, sigma_max: Any) -> tuple[float, float]:
    sigma_min = check_real(sigma_min, "sigma_min", 0.0, math.inf)
    sigma_max = check_real(sigma_max, "sigma_max", 0.0, math.inf)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must be greater than sigma_min; got sigma_max={sigma_max}, sigma_min={sigma_min}")
    return sigma_min, sigma_max


def ncsn_sigmas(sigma_max: float = 1.0, sigma_min: float = 0.01, num_scales: int = 10) -> np.ndarray:
    """NCSN's geometric noise ladder sigma_1 > ... > sigma_L (Song & Ermon 2019, §4.2).

    sigma_i = exp(linspace(log sigma_max, log sigma_min, L)); NCSN: 1 -> 0.01, L = 10;
    NCSNv2 CIFAR-10: 50 -> 0.01, L = 232.
    """
    sigma_min, sigma_max = _check_sigma_range(sigma_min, sigma_max)
    num_scales = check_int(num_scales, "num_scales", 2)
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), num_scales))


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """EDM's sigma schedule (Karras et al. 2022, eq. 5), descending, without the final 0.

    sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
    """
    sigma_min, sigma_max = _check_sigma_range(sigma_min, sigma_max)
    num_steps = check_int(num_steps, "num_steps", 1)
    rho = check_real(rho, "rho", 0.0, math.inf)
    if num_steps == 1:
        return np.array([sigma_max])
    ramp = np.arange(num_steps) / (num_steps - 1)
    inv_min, inv_max = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (inv_max + ramp * (inv_min - inv_max)) ** rho
