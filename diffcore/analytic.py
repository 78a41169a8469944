"""Gaussian-mixture data: exact densities, scores, score divergences and samples, at t = 0 and under
any process of the process interface.

For data x_0 ~ sum_k w_k N(mu_k, diag(s_k^2)) and x_t = alpha(t) x_0 + sigma(t) eps, the marginal
p_t is again a mixture, with means alpha mu_k and variances alpha^2 s_k^2 + sigma^2 (per dimension).
Its score is s(x) = sum_k r_k(x) s_k(x), with s_k = -(x - alpha mu_k) / var_k the component scores
and r_k the responsibilities (the posterior over components); its divergence is

    div s = sum_k r_k (div s_k + ||s_k||^2) - ||s||^2,      div s_k = -sum_d 1 / var_kd.

These closed forms are what the samplers, losses and likelihood code are tested against
(docs/conventions.md, "Tests": exactness against analytic cases). :meth:`GaussianMixture.as_model` wraps
the exact marginal score as a network of the model protocol ``model(x, t_in, cond=None)``.

Parameters are float64 NumPy; every call converts them to the caller's namespace, dtype and device.
Nothing here branches on array values, so all of it runs under ``jax.jit``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import parametrization as param
from .models import Model
from ._array import (
    TableCache,
    array_device,
    array_namespace,
    check_float_array,
    concrete_min_max,
    default_dtype,
    expand_to,
)

__all__ = ["GaussianMixture", "MixtureModel"]

_WEIGHT_TOL = 1e-8
_LOG_2PI = math.log(2.0 * math.pi)


def _host_float64(value: Any, name: str) -> np.ndarray:
    """``value`` (a sequence or an array of any namespace) as a float64 NumPy array."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError):
        try:
            arr = np.asarray(np.from_dlpack(value), dtype=np.float64)
        except Exception as exc:
            raise TypeError(f"{name} must be an array of real numbers; got {type(value).__name__}") from exc
    return arr


class GaussianMixture:
    """sum_k w_k N(mu_k, diag(s_k^2)) in D dimensions, with exact log-density, score and samples.

    Args:
        weights: (K,) non-negative mixture weights summing to 1 (within 1e-8).
        means: (K, D) component means.
        stds: (K,) isotropic or (K, D) diagonal component standard deviations, all > 0.
    """

    def __init__(self, weights: Any, means: Any, stds: Any) -> None:
        w = _host_float64(weights, "weights")
        if w.ndim != 1 or w.shape[0] < 1:
            raise ValueError(f"weights must be a 1-D array of K >= 1 mixture weights; got shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"weights must be finite and non-negative; got {w.tolist()}")
        total = float(np.sum(w))
        if abs(total - 1.0) > _WEIGHT_TOL:
            raise ValueError(f"weights must sum to 1 (within {_WEIGHT_TOL:g}); got {w.tolist()}, summing to {total!r}")
        K = w.shape[0]

        mu = _host_float64(means, "means")
        if mu.ndim != 2 or mu.shape[0] != K or mu.shape[1] < 1:
            raise ValueError(
                f"means must have shape (K, D) with K = {K} (the length of weights) and D >= 1; got shape {mu.shape}"
            )
        if not np.all(np.isfinite(mu)):
            raise ValueError(f"means must be finite; got {mu.tolist()}")
        D = mu.shape[1]

        s = _host_float64(stds, "stds")
        if s.shape not in ((K,), (K, D)):
            raise ValueError(
                f"stds must have shape (K,) = ({K},) (isotropic) or (K, D) = ({K}, {D}) (diagonal); got shape {s.shape}"
            )
        bad = ~(np.isfinite(s) & (s > 0))
        if np.any(bad):
            raise ValueError(f"stds must be finite and > 0; got {float(s[bad].flat[0])!r} in stds = {s.tolist()}")

        self.isotropic = s.ndim == 1
        self.weights = w
        self.means = mu
        self.stds = np.broadcast_to(s[:, None], (K, D)).copy() if self.isotropic else s
        self.num_components = K
        self.dim = D

        with np.errstate(divide="ignore"):  # a zero weight is log 0 = -inf: that component never wins
            self.log_weights = np.log(w)
        self.variances = self.stds**2
        # tables shaped (1, K, D) to broadcast against (B, 1, D); the t = 0 normaliser in float64
        self._means3 = self.means[None]
        self._variances3 = self.variances[None]
        self._log_norm0 = self.log_weights - 0.5 * (np.sum(np.log(self.variances), axis=1) + D * _LOG_2PI)
        # Inverse-CDF bin edges for sampling: u in [edges[k-1], edges[k]) selects k. Edges from the last
        # component with positive weight on are +inf, so rounding of the cumulative sum never selects a
        # trailing zero-weight component (or an index past the end).
        edges = np.cumsum(w)[:-1]
        last = int(np.flatnonzero(w > 0)[-1])
        edges[last:] = np.inf
        self.cdf_edges = edges
        self._cache = TableCache()

    # ------------------------------------------------------------------------------ host side
    def mean(self) -> np.ndarray:
        """E[x] = sum_k w_k mu_k, (D,) float64."""
        return self.weights @ self.means

    def covariance(self) -> np.ndarray:
        """Cov[x] = sum_k w_k (diag(s_k^2) + mu_k mu_k^T) - E[x] E[x]^T, (D, D) float64."""
        m = self.mean()
        second = np.einsum("k,ki,kj->ij", self.weights, self.means, self.means) + np.diag(self.weights @ self.variances)
        return second - np.outer(m, m)

    def marginal_mixture(self, process: Any, t: float | int) -> "GaussianMixture":
        """The mixture of x_t = alpha(t) x_0 + sigma(t) eps at one host-side time ``t``.

        ``t`` is a Python int (a step of a discrete diffusion) or float (an SDE time).
        """
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)):
            raise TypeError(f"t must be a Python int (a step) or float (a time); got {type(t).__name__}")
        t_arr = np.asarray(t, dtype=np.int64 if isinstance(t, (int, np.integer)) else np.float64)
        alpha = float(np.asarray(process.alpha(t_arr, dtype=np.float64)))
        sigma = float(np.asarray(process.sigma(t_arr, dtype=np.float64)))
        stds = np.sqrt(alpha**2 * self.variances + sigma**2)
        return GaussianMixture(self.weights, alpha * self.means, stds[:, 0] if self.isotropic else stds)

    def __repr__(self) -> str:
        kind = "isotropic" if self.isotropic else "diagonal"
        return f"GaussianMixture(K={self.num_components}, D={self.dim}, {kind})"

    # ----------------------------------------------------------------------------- plumbing
    def _table(self, name: str, xp: Any, dtype: Any, device: Any) -> Any:
        return self._cache.get(name, getattr(self, name), xp, dtype, device)

    def _check_x(self, x: Any, name: str = "x") -> tuple[Any, Any]:
        """(namespace, x reshaped to (B, D)); x is (B, D) or (B, ...) with D values per example."""
        xp = check_float_array(x, name)
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.dim:
            raise ValueError(
                f"{name} must have shape (B, D) with D = {self.dim} (the mixture's dimension), or (B, ...) with "
                f"{self.dim} values per example; got shape {tuple(x.shape)}"
            )
        return xp, (x if x.ndim == 2 else xp.reshape(x, (x.shape[0], self.dim)))

    def _coefficients(self, process: Any, t: Any, x: Any) -> tuple[Any, Any]:
        """(alpha(t), sigma(t)) in x's dtype, shaped (B, 1, 1) or (1, 1, 1)."""
        xp = array_namespace(x)
        if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
            dtype = default_dtype(xp, "indexing") if isinstance(t, (int, np.integer)) else x.dtype
            t = xp.asarray(t, dtype=dtype, device=array_device(x))
        try:
            array_namespace(t)
        except TypeError as exc:
            raise TypeError(f"t must be an array (0-D, or 1-D with one entry per example); got {type(t).__name__}") from exc
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
            raise ValueError(
                f"t must be 0-D or 1-D with one entry per example ({x.shape[0]}); got shape {tuple(t.shape)}"
            )
        alpha = process.alpha(t, dtype=x.dtype)
        sigma = process.sigma(t, dtype=x.dtype)
        shape3 = (alpha.shape[0] if alpha.ndim == 1 else 1, 1, 1)
        return xp.reshape(alpha, shape3), xp.reshape(sigma, shape3)

    def _components(self, xp: Any, x: Any, alpha: Any = None, sigma: Any = None) -> tuple[Any, Any, Any]:
        """(log w_k + log N_k(x) of shape (B, K), x - mean_k of shape (B, K, D), variances (B or 1, K, D))."""
        dtype, device = x.dtype, array_device(x)
        means = self._table("_means3", xp, dtype, device)
        var = self._table("_variances3", xp, dtype, device)
        if alpha is None:
            log_norm = self._table("_log_norm0", xp, dtype, device)
        else:
            means = alpha * means
            var = alpha * alpha * var + sigma * sigma
            log_w = self._table("log_weights", xp, dtype, device)
            log_norm = log_w - 0.5 * (xp.sum(xp.log(var), axis=-1) + self.dim * _LOG_2PI)
        diff = xp.expand_dims(x, axis=1) - means
        comp = log_norm - 0.5 * xp.sum(diff * diff / var, axis=-1)
        return comp, diff, var

    @staticmethod
    def _logsumexp(xp: Any, a: Any) -> Any:
        """log sum_k exp(a_k) over axis 1, shifted by the max for stability."""
        m = xp.max(a, axis=1, keepdims=True)
        return xp.reshape(m + xp.log(xp.sum(xp.exp(a - m), axis=1, keepdims=True)), (a.shape[0],))

    @staticmethod
    def _softmax(xp: Any, a: Any) -> Any:
        """exp(a_k) / sum_j exp(a_j) over axis 1 (the responsibilities)."""
        e = xp.exp(a - xp.max(a, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)

    def _log_prob(self, x: Any, alpha: Any = None, sigma: Any = None) -> Any:
        xp, x2 = self._check_x(x)
        return self._logsumexp(xp, self._components(xp, x2, alpha, sigma)[0])

    def _score(self, x: Any, alpha: Any = None, sigma: Any = None, divergence: bool = False) -> Any:
        xp, x2 = self._check_x(x)
        comp, diff, var = self._components(xp, x2, alpha, sigma)
        resp = self._softmax(xp, comp)
        comp_scores = -diff / var  # (B, K, D)
        score = xp.sum(xp.expand_dims(resp, axis=2) * comp_scores, axis=1)
        if divergence:
            comp_div = -xp.sum(1.0 / var, axis=-1)  # (B or 1, K)
            second = comp_div + xp.sum(comp_scores * comp_scores, axis=-1)
            return xp.sum(resp * second, axis=1) - xp.sum(score * score, axis=1)
        return xp.reshape(score, tuple(x.shape)) if x.ndim != 2 else score

    # ------------------------------------------------------------------------------ t = 0
    def log_prob(self, x: Any) -> Any:
        """Per-example log p(x), shape (B,) (logsumexp over components)."""
        return self._log_prob(x)

    def score(self, x: Any) -> Any:
        """grad_x log p(x) = sum_k r_k(x) (mu_k - x) / s_k^2, shape of ``x``."""
        return self._score(x)

    def score_divergence(self, x: Any) -> Any:
        """div grad log p(x) = sum_k r_k (div s_k + ||s_k||^2) - ||s||^2, shape (B,)."""
        return self._score(x, divergence=True)

    def sample(self, noise: Any, component_u: Any) -> Any:
        """Exact samples mu_k + s_k * noise, k chosen by inverse CDF of the weights at ``component_u``.

        ``noise`` is (B, D) standard normal, ``component_u`` (B,) uniform in [0, 1) (both made by a
        backend: the core draws no random numbers). Returns (B, D) in noise's namespace and dtype.
        """
        xp = check_float_array(noise, "noise")
        check_float_array(component_u, "component_u")
        array_namespace(noise, component_u)
        if noise.ndim != 2 or noise.shape[1] != self.dim:
            raise ValueError(f"noise must have shape (B, D) with D = {self.dim}; got shape {tuple(noise.shape)}")
        if tuple(component_u.shape) != (noise.shape[0],):
            raise ValueError(
                f"component_u must have shape (B,) = ({noise.shape[0]},), one uniform per sample; "
                f"got shape {tuple(component_u.shape)}"
            )
        lo_hi = concrete_min_max(component_u)
        if lo_hi is not None:
            lo, hi = float(lo_hi[0]), float(lo_hi[1])
            if not (lo >= 0.0 and hi < 1.0):  # also catches NaN
                raise ValueError(f"component_u must lie in [0, 1); got values from {lo!r} to {hi!r}")
        device = array_device(noise)
        edges = self._table("cdf_edges", xp, component_u.dtype, array_device(component_u))
        k = xp.searchsorted(edges, component_u, side="right")
        means = xp.take(self._table("means", xp, noise.dtype, device), k, axis=0)
        stds = xp.take(self._table("stds", xp, noise.dtype, device), k, axis=0)
        return means + stds * noise

    # --------------------------------------------------------------------- marginal at t
    def marginal_log_prob(self, x: Any, t: Any, process: Any) -> Any:
        """log p_t(x) of x_t = alpha(t) x_0 + sigma(t) eps, shape (B,); ``t`` 0-D or (B,)."""
        check_float_array(x, "x")
        return self._log_prob(x, *self._coefficients(process, t, x))

    def marginal_score(self, x: Any, t: Any, process: Any) -> Any:
        """grad_x log p_t(x), shape of ``x``: the score a perfect network would learn."""
        check_float_array(x, "x")
        return self._score(x, *self._coefficients(process, t, x))

    def marginal_score_divergence(self, x: Any, t: Any, process: Any) -> Any:
        """div_x grad_x log p_t(x), shape (B,) (exact; what Hutchinson's estimator estimates)."""
        check_float_array(x, "x")
        return self._score(x, *self._coefficients(process, t, x), divergence=True)

    def marginal_posterior_mean(self, x: Any, t: Any, process: Any) -> Any:
        """E[x_0 | x_t = x] (Tweedie's x_0 without dividing by alpha), shape of ``x``.

        Per component k the posterior mean is mu_k + alpha s_k^2 (x - alpha mu_k) / (alpha^2 s_k^2 +
        sigma^2), weighted by the responsibilities at x: finite everywhere, and E[x_0] where alpha = 0.
        """
        check_float_array(x, "x")
        alpha, sigma = self._coefficients(process, t, x)
        xp, x2 = self._check_x(x)
        comp, diff, var = self._components(xp, x2, alpha, sigma)
        resp = self._softmax(xp, comp)
        means = self._table("_means3", xp, x2.dtype, array_device(x2))
        var0 = self._table("_variances3", xp, x2.dtype, array_device(x2))
        post = means + alpha * var0 * diff / var  # (B, K, D)
        x0 = xp.sum(xp.expand_dims(resp, axis=2) * post, axis=1)
        return xp.reshape(x0, tuple(x.shape)) if x.ndim != 2 else x0

    def as_model(self, process: Any, prediction: str = "eps") -> "MixtureModel":
        """The exact denoiser of this data under ``process``, as a model ``model(x, t_in, cond=None)``."""
        return MixtureModel(self, process, prediction)


class MixtureModel(Model):
    """A model of the model protocol whose output is exact for Gaussian-mixture data.

    ``model(x, t_in, cond=None)``: ``t_in`` is the network time input (``process.model_time(t)``),
    mapped back with ``process.time_from_model_time``. The output is the exact marginal score
    ("score"), eps = -sigma score ("eps"), the Tweedie posterior mean x_0 = (x + sigma^2 score) / alpha
    ("x0"), v = alpha eps - sigma x_0 ("v"), u = eps - x_0 ("u"; x_0 from the posterior mean, so x0, v
    and u stay finite at alpha = 0, where x_0 = E[x_0]), or sigma score ("scaled_score", NCSNv2). ``cond`` is ignored (the data are unconditional).
    """

    def __init__(self, mixture: GaussianMixture, process: Any, prediction: str = "eps") -> None:
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a GaussianMixture; got {type(mixture).__name__}")
        for method in ("alpha", "sigma", "time_from_model_time"):
            if not callable(getattr(process, method, None)):
                raise TypeError(
                    f"process must implement the process interface with {method}(); "
                    f"{type(process).__name__} has no {method}"
                )
        param.check_prediction(prediction)
        if prediction != "scaled_score" and not callable(getattr(param, f"to_{prediction}", None)):
            raise ValueError(f"prediction {prediction!r} has no conversion from the score (diffcore.parametrization.to_{prediction})")
        self.mixture = mixture
        self.process = process
        # no weights: the mixture is fixed data of the pure function (a Model, so loops are reused)
        super().__init__(self._apply, (), prediction=prediction)

    def _apply(self, params: Any, x: Any, t_in: Any, cond: Any = None) -> Any:
        t = self.process.time_from_model_time(t_in)
        alpha = expand_to(self.process.alpha(t, dtype=x.dtype), x)
        sigma = expand_to(self.process.sigma(t, dtype=x.dtype), x)
        if self.prediction in ("x0", "v", "u"):
            # from the posterior mean, not Tweedie's (x + sigma^2 s) / alpha: finite at alpha = 0
            x0 = self.mixture.marginal_posterior_mean(x, t, self.process)
            if self.prediction == "x0":
                return x0
            # eps from the score (-sigma s, no cancellation at small sigma; finite at alpha = 0 too)
            eps = -sigma * self.mixture.marginal_score(x, t, self.process)
            if self.prediction == "v":
                return param.v_from_eps_x0(eps, x0, alpha, sigma)
            return param.u_from_eps_x0(eps, x0)
        score = self.mixture.marginal_score(x, t, self.process)
        if self.prediction == "score":
            return score
        if self.prediction == "scaled_score":  # NCSNv2's sigma * score
            return sigma * score
        return getattr(param, f"to_{self.prediction}")(score, "score", x, alpha, sigma)

    __slots__ = ("mixture", "process")

    def __repr__(self) -> str:
        return f"MixtureModel({self.mixture!r}, {type(self.process).__name__}, prediction={self.prediction!r})"
