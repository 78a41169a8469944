"""The one open process interface every diffusion process speaks (docs/conventions.md, "The seams").

Every process -- discrete Gaussian diffusion, VP, sub-VP, VE, or one a user writes -- has a
Gaussian marginal

    x_t = alpha(t) x_0 + sigma(t) eps,     eps ~ N(0, I),

with log-SNR lambda(t) = log(alpha^2 / sigma^2), a time value its network receives, and a prior at
the far end. Samplers (DDIM, ODE solvers, multistep solvers, Euler-Maruyama, Langevin) and the
likelihood are written once against this interface, as EDM and k-diffusion do: none of them tests
a concrete class. What only some processes have (DDPM's ancestral chain, score_sde's discretised
predictors) is a *capability* declared by name in ``process.capabilities`` and asked for with
:func:`require`.

A continuous-time process gives (all elementwise in a real time array ``t``, in its namespace):

- ``alpha(t, dtype=None)``, ``sigma(t, dtype=None)`` and their time derivatives
  ``alpha_prime(t, dtype=None)``, ``sigma_prime(t, dtype=None)``;
- ``T`` (the noisy end) and ``t_min`` (the clean end), floats;
- ``model_time(t)`` (the network's time input) and its inverse ``time_from_model_time(t_in)``;
- ``prior_sample(noise)`` and ``prior_logp(z)``;
- optional: ``log_snr(t, dtype=None)`` (default: from alpha and sigma), ``time_from_log_snr(lam)``
  (host-side inverse; default: float64 bisection, :func:`bisect_time_from_log_snr`),
  ``capabilities`` (default: none), ``discrete`` (default: False).

Derived here, never asked of the process: the drift coefficient f(t) = alpha'/alpha and the
squared diffusion g(t)^2 = 2 sigma sigma' - 2 (alpha'/alpha) sigma^2 of the linear SDE with these
marginals (finite where alpha > 0), and the probability-flow velocity
dx/dt = alpha' x0_hat + sigma' eps_hat (:func:`pf_velocity`), used by the ODE samplers and the
likelihood alike. Written with x_0 and eps it stays finite where alpha = 0 for predictions that
give x_0 there (x0, v, u); eps and score outputs cannot give x_0 at alpha = 0
(:func:`x0_defined_at_zero_alpha`).

A discrete process (``discrete = True``, :class:`diffcore.GaussianDiffusion`) is indexed by
integer steps 0 .. ``num_timesteps`` - 1 and has no time derivatives: samplers that integrate an
ODE or an SDE in t refuse it (:func:`require_continuous`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._array import array_namespace, expand_to

__all__ = [
    "Process",
    "marginal_coefficients",
    "marginal_sample",
    "capabilities",
    "require",
    "require_continuous",
    "is_discrete",
    "time_range",
    "host_log_snr",
    "time_from_log_snr",
    "bisect_time_from_log_snr",
    "drift_coefficients",
    "host_coefficients",
    "pf_velocity",
    "x0_defined_at_zero_alpha",
    "start_time",
    "START_LOG_SNR",
]

#: where samplers start on a process with alpha(T) = 0 when they need f, g^2 or x_0 from eps:
#: the time of log-SNR -15 (alpha / sigma = 5.5e-4; the prior N(0, I) then misses the marginal by
#: a signal of scale 5.5e-4 |x_0|, below any sampler's error at a usable step count)
START_LOG_SNR = -15.0


@runtime_checkable
class Process(Protocol):
    """x_t = alpha(t) x_0 + sigma(t) eps, with derivatives, a network time input and a prior."""

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


# ------------------------------------------------------------------------------ capabilities


def capabilities(process: Any) -> frozenset:
    """The capabilities ``process`` declares (``process.capabilities``; none by default)."""
    return frozenset(getattr(process, "capabilities", ()) or ())


def require(process: Any, capability: str, sampler: str, hint: str = "") -> None:
    """Raise TypeError naming ``sampler``, the process class and the missing ``capability``."""
    if capability not in capabilities(process):
        have = ", ".join(sorted(capabilities(process))) or "none"
        raise TypeError(
            f"the {sampler!r} sampler needs a process with the capability {capability!r}; "
            f"{type(process).__name__} declares {have}" + (f" ({hint})" if hint else "")
        )


def is_discrete(process: Any) -> bool:
    """Whether ``process`` is indexed by integer steps (a discrete chain)."""
    return bool(getattr(process, "discrete", False))


def require_continuous(process: Any, sampler: str, hint: str = "") -> None:
    """Raise TypeError unless ``process`` is continuous in time with alpha' and sigma'."""
    if is_discrete(process):
        raise TypeError(
            f"the {sampler!r} sampler integrates in continuous time and needs alpha'(t), sigma'(t); "
            f"got the discrete process {type(process).__name__}" + (f" ({hint})" if hint else "")
        )
    missing = [m for m in ("alpha_prime", "sigma_prime") if not callable(getattr(process, m, None))]
    if missing or not hasattr(process, "T"):
        what = ", ".join(missing + ([] if hasattr(process, "T") else ["T"]))
        raise TypeError(
            f"the {sampler!r} sampler needs a continuous-time process with alpha_prime(t), sigma_prime(t) and T "
            f"(diffcore.process.Process); {type(process).__name__} lacks {what}"
        )


def time_range(process: Any) -> tuple[float, float]:
    """(clean end, noisy end): (t_min, T), or steps (0, num_timesteps - 1) of a discrete process."""
    if is_discrete(process):
        return 0, int(process.num_timesteps) - 1
    return float(getattr(process, "t_min", 0.0)), float(process.T)


# ------------------------------------------------------------------------- host-side tables


def _host(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def host_log_snr(process: Any, t: Any) -> np.ndarray:
    """log-SNR at host times ``t`` in float64 (the process's own, else from alpha and sigma)."""
    t = np.asarray(t, dtype=np.int64 if is_discrete(process) else np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        if callable(getattr(process, "log_snr", None)):
            return _host(process.log_snr(t))
        return 2.0 * (np.log(_host(process.alpha(t))) - np.log(_host(process.sigma(t))))


def bisect_time_from_log_snr(process: Any, lam: Any, iterations: int = 200) -> np.ndarray:
    """The time in [t_min, T] whose log-SNR is ``lam``, by float64 bisection (host side).

    The generic inverse for processes without a closed form: the log-SNR must be monotone
    (decreasing) in t. Values beyond an end return that end (callers check the range).
    """
    lam = np.asarray(lam, dtype=np.float64)
    lo_t, hi_t = time_range(process)
    lo = np.full(lam.shape, float(lo_t))
    hi = np.full(lam.shape, float(hi_t))
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = host_log_snr(process, mid) > lam  # still too clean: the answer is later
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
        if np.all(hi - lo <= 4 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(hi))):
            break
    return 0.5 * (lo + hi)


def time_from_log_snr(process: Any, lam: Any) -> np.ndarray:
    """The process time whose log-SNR is ``lam`` (host side, float64; integer steps if discrete).

    The process's own ``time_from_log_snr`` when it has one (closed forms for VP, sub-VP, VE; the
    nearest step of a discrete chain), else :func:`bisect_time_from_log_snr`. Continuous times
    outside [t_min, T] raise (a relative 1e-9 of rounding past an end is clipped).
    """
    lam = np.asarray(lam, dtype=np.float64)
    if np.any(np.isnan(lam)):
        raise ValueError("lam (the log-SNR) must not be NaN")
    own = getattr(process, "time_from_log_snr", None)
    t = np.asarray(own(lam)) if callable(own) else bisect_time_from_log_snr(process, lam)
    if is_discrete(process):
        return t.astype(np.int64)
    t = np.asarray(t, dtype=np.float64)
    lo, hi = time_range(process)
    tol = 1e-9 * max(1.0, abs(hi), abs(lo))
    ends = host_log_snr(process, np.array([hi, lo]))
    lam_tol = 1e-9 * np.maximum(1.0, np.abs(np.where(np.isfinite(ends), ends, 0.0)))
    beyond = np.any(lam < ends[0] - lam_tol[0]) or np.any(lam > ends[1] + lam_tol[1])
    if beyond or np.any(t < lo - tol) or np.any(t > hi + tol) or np.any(np.isnan(t)):
        raise ValueError(
            f"log-SNR values must lie in [{ends[0]:g}, {ends[1]:g}] for {type(process).__name__} (times "
            f"{lo:g}..{hi:g}); got values from {float(lam.min()):g} to {float(lam.max()):g}"
        )
    return np.clip(t, lo, hi)


def drift_coefficients(process: Any, t: Any, dtype: Any = None) -> tuple[Any, Any]:
    """(f(t), g(t)^2) of the linear SDE dx = f x dt + g dw with the process's marginals, derived:

    f = alpha' / alpha,   g^2 = 2 sigma sigma' - 2 f sigma^2   (finite only where alpha > 0).

    ``t`` is an array of any namespace (traced under jit too); the result has its shape.
    """
    a = process.alpha(t, dtype=dtype)
    s = process.sigma(t, dtype=dtype)
    ap = process.alpha_prime(t, dtype=dtype)
    sp = process.sigma_prime(t, dtype=dtype)
    f = ap / a
    return f, 2.0 * s * sp - 2.0 * f * s * s


def host_coefficients(process: Any, t: Any) -> dict:
    """alpha, sigma, alpha', sigma', f, g^2 and the network time at host times ``t`` (float64)."""
    t = np.asarray(t, dtype=np.float64)
    out = {
        "alpha": _host(process.alpha(t)),
        "sigma": _host(process.sigma(t)),
        "d_alpha": _host(process.alpha_prime(t)),
        "d_sigma": _host(process.sigma_prime(t)),
        "t_in": np.asarray(process.model_time(t)),
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        f = out["d_alpha"] / out["alpha"]
        out["f"] = f
        out["g2"] = 2.0 * out["sigma"] * out["d_sigma"] - 2.0 * f * out["sigma"] ** 2
    return out


def pf_velocity(d_alpha: Any, d_sigma: Any, x0: Any, eps: Any) -> Any:
    """The probability-flow ODE's dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat.

    With x = alpha x0_hat + sigma eps_hat this is f x - 1/2 g^2 s (Song et al. 2021, eq. 13), written
    so that it stays finite at alpha = 0 when the prediction gives x_0 there.
    """
    return d_alpha * x0 + d_sigma * eps


#: predictions that give a finite x_0 (and eps) at alpha = 0; eps and scores do not
_X0_AT_ZERO_ALPHA = ("x0", "v", "u")


def x0_defined_at_zero_alpha(prediction: str) -> bool:
    """Whether a network output of kind ``prediction`` gives x_0 where alpha = 0."""
    return prediction in _X0_AT_ZERO_ALPHA


def start_time(process: Any, sampler: str, prediction: str, *, needs_f: bool = False, t_max: Any = None) -> float:
    """Where a continuous-time sampler starts: ``t_max`` if given, else T -- or, when alpha(T) = 0
    and the sampler needs f = alpha'/alpha or x_0 from an eps / score output, the time of log-SNR
    :data:`START_LOG_SNR` (the prior then misses the marginal there by a signal of scale
    alpha / sigma = 5.5e-4; documented in docs/sde.md)."""
    lo, T = time_range(process)
    if t_max is not None:
        try:
            t_max = float(t_max)
        except (TypeError, ValueError):
            raise TypeError(f"t_max must be a number; got {t_max!r}") from None
        if not lo < t_max <= T:
            raise ValueError(f"t_max must lie in ({lo:g}, {T:g}] for {type(process).__name__}; got {t_max}")
        a_end = float(_host(process.alpha(np.asarray(t_max))))
        if a_end == 0.0 and (needs_f or not x0_defined_at_zero_alpha(prediction)):
            raise ValueError(
                f"the {sampler!r} sampler cannot start at t_max={t_max:g} where alpha = 0 with prediction="
                f"{prediction!r} ({'it needs f = alpha/alpha' if needs_f else 'x_0 is undefined from eps or a score there'}); "
                "pass a t_max where alpha > 0, or use a model predicting 'x0', 'v' or 'u'"
            )
        return t_max
    a_T = float(_host(process.alpha(np.asarray(T))))
    if a_T == 0.0 and (needs_f or not x0_defined_at_zero_alpha(prediction)):
        return float(time_from_log_snr(process, np.asarray(START_LOG_SNR)))
    return T


# ------------------------------------------------------------------------------- marginals


def marginal_coefficients(process: Process, t: Any, x: Any) -> tuple[Any, Any]:
    """(alpha(t), sigma(t)) in ``x``'s dtype, shaped to broadcast against ``x``."""
    return expand_to(process.alpha(t, dtype=x.dtype), x), expand_to(process.sigma(t, dtype=x.dtype), x)


def marginal_sample(process: Process, x_start: Any, t: Any, noise: Any) -> Any:
    """x_t = alpha(t) x_0 + sigma(t) noise."""
    array_namespace(x_start, noise)
    alpha, sigma = marginal_coefficients(process, t, x_start)
    return alpha * x_start + sigma * noise


