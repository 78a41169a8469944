"""Score SDEs (Song et al. 2021): VE, VP and sub-VP, with score_sde's method names.

Every SDE here is linear, dx = f(t) x dt + g(t) dw, with Gaussian marginals
x_t = alpha(t) x_0 + sigma(t) eps -- the process interface (docs/conventions.md) that
:class:`diffcore.GaussianDiffusion` speaks too, so samplers and likelihood are written once.

Time ``t`` is a real array in [0, T] (T = 1), one entry per example or 0-D. Samplers and losses
start at t = eps > 0 (1e-3 for VP / sub-VP sampling, 1e-5 for VE and for training).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ._array import (
    TableCache,
    array_device,
    array_namespace,
    check_float_array,
    check_per_example,
    concrete_min_max,
    default_dtype,
    expand_to,
    sum_flat,
)
from .checks import check_bool, check_dtype_floating, check_int, check_real, check_same_namespace
from .schedules import ncsn_sigmas

__all__ = ["SDE", "VPSDE", "subVPSDE", "VESDE", "ReverseSDE", "check_time"]

_LOG_2PI = math.log(2.0 * math.pi)


def check_time(
    t: Any, T: float, name: str = "t", eps: float = 0.0, batch: int | None = None, open_low: bool = False
) -> Any:
    """Check a real time array in [eps, T] ((eps, T] if ``open_low``; values read only when
    concrete); return its namespace."""
    xp = check_float_array(t, name)
    lo_hi = check_per_example(t, name, batch)
    if lo_hi is not None:
        lo, hi = (float(v) for v in lo_hi)
        if not ((lo > eps if open_low else lo >= eps) and hi <= T):
            low = "(" if open_low else "["
            raise ValueError(f"{name} must lie in {low}{eps:g}, {T:g}]; got values from {lo:g} to {hi:g}")
    return xp


def _working(t: Any) -> Any:
    """t in at least float32 (coefficients of fp16 / bf16 times would lose the schedule)."""
    xp = array_namespace(t)
    if t.dtype in (xp.float32, xp.float64):
        return t
    return xp.astype(t, xp.float32)


class SDE:
    """A linear SDE dx = f(t) x dt + g(t) dw on [0, T] with x_t = alpha(t) x_0 + sigma(t) eps.

    Subclasses give ``_f``, ``_g2``, ``_alpha``, ``_sigma`` elementwise in t (unchecked; any
    namespace) and the time embedding; this class turns them into score_sde's methods and the
    process interface.
    """

    T = 1.0
    #: whether sigma(0) = 0, so that scores and losses need t > 0 (VP, sub-VP)
    zero_noise_at_start = True

    def __init__(self, N: int) -> None:
        self.N = check_int(N, "N", 1)
        self._cache = TableCache()

    # -- to be provided ----------------------------------------------------------------------
    def _f(self, t: Any) -> Any:
        raise NotImplementedError

    def _g2(self, t: Any) -> Any:
        raise NotImplementedError

    def _alpha(self, t: Any) -> Any:
        raise NotImplementedError

    def _sigma(self, t: Any) -> Any:
        raise NotImplementedError

    def _log_snr(self, t: Any) -> Any:
        xp = array_namespace(t)
        return 2.0 * (xp.log(self._alpha(t)) - xp.log(self._sigma(t)))

    prior_std = 1.0

    # -- helpers ---------------------------------------------------------------------------------
    def _time_like(self, t: Any, x: Any) -> Any:
        """``t`` as an array in x's namespace (Python numbers allowed), checked against x's batch."""
        xp = array_namespace(x)
        if x.ndim < 1:
            raise ValueError("x must have a batch axis (shape (B, ...)); got a 0-D array")
        if isinstance(t, (bool, np.bool_)):
            raise TypeError(f"t must be a real time in [0, {self.T:g}] (an array or a Python float); got {t!r}")
        if isinstance(t, (int, float)):
            t = xp.asarray(float(t), dtype=x.dtype if xp.isdtype(x.dtype, "real floating") else None, device=array_device(x))
        check_time(t, self.T, batch=x.shape[0])
        check_same_namespace(x=x, t=t)
        return t

    def _coef(self, fn: Callable[[Any], Any], t: Any, dtype: Any) -> Any:
        xp = array_namespace(t)
        if dtype is not None:
            check_dtype_floating(dtype, xp, "dtype")
        out = fn(_working(t))
        return xp.astype(out, dtype) if dtype is not None and out.dtype != dtype else out

    def _gather_chain(self, name: str, table: np.ndarray, i: Any, x: Any) -> Any:
        """A float64 host table of the N-step chain (derived before any cast), gathered at the steps
        ``i`` and cast to x's dtype on x's device."""
        xp = array_namespace(x)
        converted = self._cache.get(name, table, xp, x.dtype, array_device(x))
        return xp.reshape(xp.take(converted, xp.reshape(i, (-1,)), axis=0), i.shape)

    # -- score_sde's methods ---------------------------------------------------------------------
    def sde(self, x: Any, t: Any) -> tuple[Any, Any]:
        """(drift f(x, t), diffusion g(t)): drift has x's shape, diffusion one entry per example."""
        check_float_array(x, "x")
        t = self._time_like(t, x)
        xp = array_namespace(x)
        drift = expand_to(self._coef(self._f, t, x.dtype), x) * x
        return drift, xp.sqrt(self._coef(self._g2, t, x.dtype))

    def marginal_prob(self, x: Any, t: Any) -> tuple[Any, Any]:
        """(mean, std) of p_{0t}(x_t | x_0 = x): mean = alpha(t) x, std = sigma(t) (per example)."""
        check_float_array(x, "x")
        t = self._time_like(t, x)
        return expand_to(self._coef(self._alpha, t, x.dtype), x) * x, self._coef(self._sigma, t, x.dtype)

    def prior_sample(self, noise: Any) -> Any:
        """A draw from the prior N(0, prior_std^2 I) given standard normal ``noise``."""
        check_float_array(noise, "noise")
        return noise * self.prior_std if self.prior_std != 1.0 else noise

    def prior_logp(self, z: Any) -> Any:
        """Per-example log N(z; 0, prior_std^2 I), summed over non-batch axes."""
        check_float_array(z, "z")
        var = self.prior_std**2
        return sum_flat(-0.5 * (_LOG_2PI + math.log(var) + z * z / var))

    def discretize(self, x: Any, t: Any) -> tuple[Any, Any]:
        """One step of the forward discretisation x_{i+1} = x_i + f_i + G_i z_i (Euler-Maruyama, dt = T/N)."""
        drift, diffusion = self.sde(x, t)
        dt = self.T / self.N
        return drift * dt, diffusion * math.sqrt(dt)

    def reverse(self, score_fn: Callable[[Any, Any], Any], probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE dx = [f - g^2 s] dt + g dw-bar, or the probability-flow ODE
        dx = [f - 1/2 g^2 s] dt when ``probability_flow`` (Song et al. 2021, eqs. 6 and 13)."""
        return ReverseSDE(self, score_fn, check_bool(probability_flow, "probability_flow"))

    # -- the process interface -------------------------------------------------------------------
    def alpha(self, t: Any, dtype: Any = None) -> Any:
        """Mean coefficient alpha(t), shape of ``t``."""
        check_time(t, self.T)
        return self._coef(self._alpha, t, dtype)

    def sigma(self, t: Any, dtype: Any = None) -> Any:
        """Noise scale sigma(t) (the marginal std), shape of ``t``."""
        check_time(t, self.T)
        return self._coef(self._sigma, t, dtype)

    def log_snr(self, t: Any, dtype: Any = None) -> Any:
        """log(alpha(t)^2 / sigma(t)^2), shape of ``t``."""
        check_time(t, self.T)
        return self._coef(self._log_snr, t, dtype)

    def diffusion_squared(self, t: Any, dtype: Any = None) -> Any:
        """g(t)^2, shape of ``t`` (the likelihood weighting of the score-matching loss)."""
        check_time(t, self.T)
        return self._coef(self._g2, t, dtype)

    # -- the open process interface: derivatives, range, inverse, capabilities (diffcore.process) --
    #: the clean end of the time range (the process starts at t = 0; samplers end at eps > 0)
    t_min = 0.0
    #: continuous time (GaussianDiffusion is discrete)
    discrete = False
    #: score_sde's discretised predictors: ``discretize`` and ``discretization(n)``
    capabilities = frozenset({"discretize"})

    def _alpha_prime(self, t: Any) -> Any:
        raise NotImplementedError

    def _sigma_prime(self, t: Any) -> Any:
        raise NotImplementedError

    def alpha_prime(self, t: Any, dtype: Any = None) -> Any:
        """d alpha / dt, shape of ``t``."""
        check_time(t, self.T)
        return self._coef(self._alpha_prime, t, dtype)

    def sigma_prime(self, t: Any, dtype: Any = None) -> Any:
        """d sigma / dt, shape of ``t`` (inf at t = 0 for VP, where sigma = 0)."""
        check_time(t, self.T)
        return self._coef(self._sigma_prime, t, dtype)

    def chain_index(self, t: Any) -> Any:
        """score_sde's map from t to the step of the N-level chain, floor(t (N - 1) / T)."""
        return VPSDE._step_index(self, t)

    def discretization(self, n: int) -> "SDE":
        """The same process with an n-level chain (itself when n == N): how score_sde changes the
        number of steps of its discretised predictors."""
        raise NotImplementedError

    def corrector_alpha(self, t: Any) -> np.ndarray:
        """score_sde's Langevin alpha_i at host times ``t``: 1 - beta_i of the chain (VP, sub-VP), 1 (VE)."""
        t = np.asarray(t, dtype=np.float64)
        alphas = getattr(self, "alphas", None)
        if alphas is None:
            return np.ones_like(t)
        return np.asarray(alphas, dtype=np.float64)[np.asarray(self.chain_index(t), dtype=np.int64)]


class VPSDE(SDE):
    """Variance preserving: dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, beta(t) = beta_min + t (beta_max - beta_min).

    Its N-step discretisation has exactly DDPM's linear betas linspace(beta_min/N, beta_max/N, N)
    (the same betas, not the same marginals: continuous alpha(1)^2 = 4.32e-5, discrete abar_T = 4.04e-5).
    The network receives (N - 1) t, as in score_sde.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000) -> None:
        super().__init__(N)
        self.beta_0 = check_real(beta_min, "beta_min", 0.0, math.inf)
        self.beta_1 = check_real(beta_max, "beta_max", 0.0, math.inf)
        if not self.beta_1 > self.beta_0:
            raise ValueError(f"beta_max must be greater than beta_min; got beta_max={beta_max}, beta_min={beta_min}")
        self.discrete_betas = np.linspace(self.beta_0 / self.N, self.beta_1 / self.N, self.N)
        self.alphas = 1.0 - self.discrete_betas
        self.alphas_cumprod = np.cumprod(self.alphas)

    def _beta(self, t):
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def _log_mean_coeff(self, t):
        return -0.25 * t * t * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def _f(self, t):
        return -0.5 * self._beta(t)

    def _g2(self, t):
        return self._beta(t)

    def _alpha(self, t):
        return array_namespace(t).exp(self._log_mean_coeff(t))

    def _sigma(self, t):
        xp = array_namespace(t)
        return xp.sqrt(-xp.expm1(2.0 * self._log_mean_coeff(t)))

    def _log_snr(self, t):
        xp = array_namespace(t)
        lmc = self._log_mean_coeff(t)
        return 2.0 * lmc - xp.log(-xp.expm1(2.0 * lmc))

    def _step_index(self, t):
        """score_sde's map from t to the discrete step: floor(t (N - 1) / T) (integer truncation).

        A relative 1e-9 guards the grid points themselves: t = k / (N - 1) computed in floating point
        can land a hair below k and truncate to k - 1 (an off-by-one on a grid ending at t = 0).
        """
        xp = array_namespace(t)
        scaled = _working(t) * ((self.N - 1) / self.T)  # bf16 cannot even hold 999
        index = xp.astype(xp.floor(scaled + 1e-9 * (self.N - 1)), default_dtype(xp, "indexing"))
        return xp.clip(index, min=0, max=self.N - 1)

    def discretize(self, x, t):
        """DDPM's discretisation: x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z, i = floor(t (N-1))."""
        if not self.beta_1 / self.N < 1.0:  # the continuous SDE is fine; its N-step chain is not
            raise ValueError(
                f"the DDPM discretisation needs N > beta_max so that the betas beta_max / N stay below 1; "
                f"got N={self.N}, beta_max={self.beta_1:g}"
            )
        check_float_array(x, "x")
        t = self._time_like(t, x)
        i = self._step_index(t)
        f_coef = self._gather_chain("discrete_f", np.sqrt(self.alphas) - 1.0, i, x)
        G = self._gather_chain("discrete_G", np.sqrt(self.discrete_betas), i, x)
        return expand_to(f_coef, x) * x, G

    def model_time(self, t):
        """The network's time input: (N - 1) t, as score_sde feeds its VP / sub-VP networks."""
        check_time(t, self.T)
        return self._model_time(t)

    def _model_time(self, t):
        return t * (self.N - 1)

    def time_from_model_time(self, t_in):
        check_float_array(t_in, "t_in")
        return t_in / (self.N - 1)

    # -- the open process interface ------------------------------------------------------------
    capabilities = frozenset({"discretize", "ancestral"})

    def _alpha_prime(self, t):
        return self._alpha(t) * (-0.5 * self._beta(t))

    def _sigma_prime(self, t):
        a = self._alpha(t)
        return -a * self._alpha_prime(t) / self._sigma(t)

    def time_from_log_snr(self, lam):
        """Closed form (host, float64): 1/4 (b1 - b0) t^2 + 1/2 b0 t = c, c = 1/2 log(1 + e^-lam),
        solved as t = 2c / (b + sqrt(b^2 + 4ac)) (no cancellation as b -> 0)."""
        lam = np.asarray(lam, dtype=np.float64)
        with np.errstate(over="ignore"):
            c = self._log_snr_c(lam)
        a, b = 0.25 * (self.beta_1 - self.beta_0), 0.5 * self.beta_0
        return 2.0 * c / (b + np.sqrt(b * b + 4.0 * a * c))

    def _log_snr_c(self, lam):
        # -log alpha at log-SNR lam: 1/2 log(1 + s^2), s^2 = e^-lam (log1p(e^x) = logaddexp(0, x))
        return 0.5 * np.logaddexp(0.0, -lam)

    def discretization(self, n):
        n = check_int(n, "n", 1)
        return self if n == self.N else type(self)(beta_min=self.beta_0, beta_max=self.beta_1, N=n)

    def ancestral_coefficients(self, t):
        """score_sde's AncestralSamplingPredictor at host times t: (c_x, c_s, c_z) of
        x_mean = c_x x + c_s s, x = x_mean + c_z z (VP: 1/sqrt(1 - b), b/sqrt(1 - b), sqrt(b))."""
        beta = self.discrete_betas[np.asarray(self.chain_index(np.asarray(t, dtype=np.float64)), dtype=np.int64)]
        return 1.0 / np.sqrt(1.0 - beta), beta / np.sqrt(1.0 - beta), np.sqrt(beta)


class subVPSDE(VPSDE):
    """sub-VP: dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - e^{-2 int_0^t beta})) dw.

    std = 1 - alpha(t)^2 (no square root), always below the VP std (Song et al. 2021, eq. 34).
    It has no discrete chain: ``discretize`` is Euler-Maruyama.
    """

    def _g2(self, t):
        xp = array_namespace(t)
        return self._beta(t) * -xp.expm1(4.0 * self._log_mean_coeff(t))

    def _sigma(self, t):
        return -array_namespace(t).expm1(2.0 * self._log_mean_coeff(t))

    def _log_snr(self, t):
        xp = array_namespace(t)
        lmc = self._log_mean_coeff(t)
        return 2.0 * lmc - 2.0 * xp.log(-xp.expm1(2.0 * lmc))

    discretize = SDE.discretize

    # -- the open process interface (sub-VP has no chain: no ancestral predictor) --------------
    capabilities = frozenset({"discretize"})

    def _sigma_prime(self, t):
        a = self._alpha(t)
        return -2.0 * a * self._alpha_prime(t)

    def _log_snr_c(self, lam):
        # s = (1 - alpha^2) / alpha, so -log alpha = asinh(s / 2), s = e^{-lam / 2}
        return np.arcsinh(0.5 * np.exp(-0.5 * lam))

    ancestral_coefficients = None



class VESDE(SDE):
    """Variance exploding: dx = sqrt(d sigma^2(t) / dt) dw, sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    Convention (score_sde): std(t) = sigma(t), so std(0) = sigma_min -- the process starts from
    the data convolved with N(0, sigma_min^2), not from the data. The N-step discretisation is the
    NCSN ladder; the network receives sigma(t). Prior N(0, sigma_max^2 I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000) -> None:
        super().__init__(N)
        self.sigma_min = check_real(sigma_min, "sigma_min", 0.0, math.inf)
        self.sigma_max = check_real(sigma_max, "sigma_max", 0.0, math.inf)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max must be greater than sigma_min; got sigma_max={sigma_max}, sigma_min={sigma_min}")
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)
        # ascending, as score_sde stores it; reversed it is the NCSN ladder sigma_1 > ... > sigma_N
        self.discrete_sigmas = ncsn_sigmas(self.sigma_max, self.sigma_min, max(self.N, 2))[::-1].copy()[: self.N]
        self.prior_std = self.sigma_max

    zero_noise_at_start = False

    def _f(self, t):
        return t * 0.0

    def _sigma(self, t):
        return array_namespace(t).exp(math.log(self.sigma_min) + t * self.log_ratio)

    def _g2(self, t):
        return self._sigma(t) ** 2 * (2.0 * self.log_ratio)

    def _alpha(self, t):
        return t * 0.0 + 1.0

    def _log_snr(self, t):
        return -2.0 * (math.log(self.sigma_min) + t * self.log_ratio)

    def sde(self, x, t):
        check_float_array(x, "x")
        t = self._time_like(t, x)
        xp = array_namespace(x)
        return xp.zeros_like(x), xp.sqrt(self._coef(self._g2, t, x.dtype))

    def discretize(self, x, t):
        """NCSN's discretisation: x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z (sigma_{-1} := 0)."""
        check_float_array(x, "x")
        t = self._time_like(t, x)
        xp = array_namespace(x)
        i = VPSDE._step_index(self, t)
        adjacent = np.append(0.0, self.discrete_sigmas[:-1])
        G = self._gather_chain("discrete_G", np.sqrt(self.discrete_sigmas**2 - adjacent**2), i, x)
        return xp.zeros_like(x), G

    def model_time(self, t):
        """The network's time input: sigma(t), as score_sde feeds its VE networks."""
        check_time(t, self.T)
        return self._model_time(t)

    def _model_time(self, t):
        return self._coef(self._sigma, t, t.dtype)

    def time_from_model_time(self, t_in):
        xp = check_float_array(t_in, "t_in")
        lo_hi = concrete_min_max(t_in)
        if lo_hi is not None and not float(lo_hi[0]) > 0.0:  # log(0) = -inf; NaN fails too
            raise ValueError(
                f"t_in must be noise levels sigma > 0 (VESDE's network time is sigma(t) in "
                f"[{self.sigma_min:g}, {self.sigma_max:g}]); got values from {float(lo_hi[0]):g} to {float(lo_hi[1]):g}"
            )
        return (xp.log(t_in) - math.log(self.sigma_min)) / self.log_ratio

    # -- the open process interface ------------------------------------------------------------
    capabilities = frozenset({"discretize", "ancestral"})

    def _alpha_prime(self, t):
        return t * 0.0

    def _sigma_prime(self, t):
        return self._sigma(t) * self.log_ratio

    def time_from_log_snr(self, lam):
        """Closed form (host, float64): sigma = e^{-lam / 2}, t = log(sigma / sigma_min) / log(sigma_max / sigma_min)."""
        lam = np.asarray(lam, dtype=np.float64)
        return (-0.5 * lam - math.log(self.sigma_min)) / self.log_ratio

    def discretization(self, n):
        n = check_int(n, "n", 1)
        return self if n == self.N else type(self)(sigma_min=self.sigma_min, sigma_max=self.sigma_max, N=n)

    def ancestral_coefficients(self, t):
        """score_sde's AncestralSamplingPredictor on the NCSN ladder at host times t: (1, sigma_j^2 -
        sigma_{j-1}^2, sqrt(sigma_{j-1}^2 (sigma_j^2 - sigma_{j-1}^2) / sigma_j^2))."""
        t = np.asarray(t, dtype=np.float64)
        j = np.asarray(self.chain_index(t), dtype=np.int64)
        sig = self.discrete_sigmas[j]
        adj = np.where(j == 0, 0.0, self.discrete_sigmas[np.maximum(j - 1, 0)])
        var = sig**2 - adj**2
        return np.ones_like(t), var, np.sqrt(adj**2 * var / sig**2)


class ReverseSDE:
    """The reverse-time SDE (or probability-flow ODE) of a forward SDE given a score function.

    ``score_fn(x, t)`` takes the process time ``t``. ``sde`` and ``discretize`` have the forward
    SDE's signatures; time runs backwards: a reverse step from t to t - dt is
    x - drift dt + diffusion sqrt(dt) z.
    """

    def __init__(self, forward: SDE, score_fn: Callable[[Any, Any], Any], probability_flow: bool = False) -> None:
        if not isinstance(forward, SDE):
            raise TypeError(f"forward must be an SDE (VPSDE, subVPSDE, VESDE); got {type(forward).__name__}")
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable score_fn(x, t); got {type(score_fn).__name__}")
        self.forward = forward
        self.score_fn = score_fn
        self.probability_flow = check_bool(probability_flow, "probability_flow")
        self.N = forward.N
        self.T = forward.T

    def sde(self, x: Any, t: Any) -> tuple[Any, Any]:
        """(f - c g^2 s, g) with c = 1 (reverse SDE) or (f - 1/2 g^2 s, 0) (probability flow)."""
        drift, diffusion = self.forward.sde(x, t)
        scale = 0.5 if self.probability_flow else 1.0
        drift = drift - expand_to(diffusion * diffusion, x) * self.score_fn(x, t) * scale
        return drift, diffusion * 0.0 if self.probability_flow else diffusion

    def discretize(self, x: Any, t: Any) -> tuple[Any, Any]:
        """(f_i - c G_i^2 s, G_i) from the forward discretisation (reverse diffusion predictor)."""
        f, G = self.forward.discretize(x, t)
        scale = 0.5 if self.probability_flow else 1.0
        rev_f = f - expand_to(G * G, x) * self.score_fn(x, t) * scale
        return rev_f, G * 0.0 if self.probability_flow else G
