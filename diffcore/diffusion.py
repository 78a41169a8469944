"""Discrete Gaussian diffusion: DDPM (Ho et al. 2020) and Improved DDPM (Nichol & Dhariwal 2021).

Names follow improved-diffusion's ``GaussianDiffusion``. Index convention: ``t`` is an integer array
of 0-based steps; 0..T-1 are the papers' 1..T, and abar "before step 0" (the papers' abar_0) is 1.
Tables are float64 NumPy; every derived coefficient is computed there, then gathered, then cast to
the working dtype and device of the inputs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from . import parametrization as param
from ._array import (
    TableCache,
    array_device,
    array_namespace,
    check_float_array,
    check_same_shape,
    check_timesteps,
    concrete_min_max,
    default_dtype,
    expand_to,
    mean_flat,
    sum_flat,
)
from .checks import (
    check_bool,
    check_array,
    check_callable,
    check_choice,
    check_dtype_floating,
    check_finite,
    check_nonnegative,
    check_same_namespace,
)
from .losses import (
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    normal_kl,
    standard_normal_logp,
)
from .schedules import check_betas, respace_betas, respaced_timesteps, space_timesteps

__all__ = ["GaussianDiffusion", "PMeanVariance", "MODEL_MEAN_TYPES", "MODEL_VAR_TYPES", "LOSS_TYPES", "DECODERS"]

MODEL_MEAN_TYPES = ("eps", "x0", "v")
MODEL_VAR_TYPES = ("fixed_small", "fixed_large", "learned_range", "learned")
LOSS_TYPES = ("simple", "vlb", "rescaled_vlb", "hybrid")
DECODERS = ("discretized", "gaussian")
_LN2 = math.log(2.0)


class PMeanVariance(NamedTuple):
    """Moments of p_theta(x_{t-1} | x_t) and the x_0 the model predicts."""

    mean: Any
    variance: Any
    log_variance: Any
    pred_xstart: Any


def _check_noise(noise: Any, x_start: Any) -> None:
    if noise is None:
        raise ValueError("noise is required: the core makes no random numbers (draw it with backend.normal)")
    _check_like(noise, x_start, "noise", "x_start")


def _check_like(a: Any, x: Any, name: str, x_name: str, *, same_dtype: bool = True) -> None:
    """``a`` is a real floating array of x's framework and shape (and dtype unless told otherwise):
    a torch x_start with a NumPy noise, or a float64 noise with a float16 x_start, would otherwise
    be silently promoted (or fail deep inside an operator)."""
    check_float_array(a, name)
    check_same_namespace(**{x_name: x, name: a})
    check_same_shape(x, a, x_name, name)
    if same_dtype and a.dtype != x.dtype:
        raise TypeError(f"{name} must have the dtype of {x_name} ({x.dtype}); got {a.dtype}")


def _check_model_output(model_output: Any, x_t: Any) -> None:
    """The network's output: a floating array of x_t's framework, finite (read for concrete arrays)."""
    if model_output is None:
        raise TypeError("model_output is None: the model returned nothing (it must return an array like x_t)")
    check_float_array(model_output, "model_output")
    check_same_namespace(x_t=x_t, model_output=model_output)
    check_finite(model_output, "model_output", FloatingPointError, " (the model returned NaN or infinity)")


class GaussianDiffusion:
    """DDPM / Improved DDPM with eps, x_0 or v prediction and fixed or learned variances.

    Args:
        betas: 1-D float64 noise schedule beta_1..beta_T, each in (0, 1); exactly 1 is allowed at the
            last step only (zero-terminal SNR, which needs ``model_mean_type`` "v" or "x0").
        model_mean_type: what the network predicts: "eps", "x0" or "v".
        model_var_type: "fixed_small" (beta~, clipped), "fixed_large" (beta), "learned_range"
            (interpolation in log space, Improved DDPM eq. 15) or "learned" (log variance). Learned
            types take a network output with 2C channels on axis 1.
        timestep_map: original step for each index of a respaced chain (default: identity).
        rescale_timesteps: feed the network t * 1000 / T_original as a float (improved-diffusion's
            option) instead of the integer original step.
    """

    def __init__(
        self,
        *,
        betas: Any,
        model_mean_type: str = "eps",
        model_var_type: str = "fixed_small",
        timestep_map: Any = None,
        rescale_timesteps: bool = False,
        original_num_timesteps: int | None = None,
    ) -> None:
        betas = check_betas(betas)
        if betas.shape[0] < 2:
            raise ValueError(f"betas must have at least 2 steps; got {betas.shape[0]}")
        self.model_mean_type = check_choice(model_mean_type, MODEL_MEAN_TYPES, "model_mean_type")
        self.model_var_type = check_choice(model_var_type, MODEL_VAR_TYPES, "model_var_type")
        self.rescale_timesteps = check_bool(rescale_timesteps, "rescale_timesteps")
        T = self.num_timesteps = int(betas.shape[0])

        if timestep_map is None:
            timestep_map = np.arange(T, dtype=np.int64)
        timestep_map = np.asarray(timestep_map)
        if timestep_map.shape != (T,) or timestep_map.dtype.kind not in "iu":
            raise ValueError(
                f"timestep_map must be {T} integers (one original step per step); got shape "
                f"{timestep_map.shape}, dtype {timestep_map.dtype}"
            )
        if np.any(np.diff(timestep_map) <= 0) or timestep_map[0] < 0:
            raise ValueError(f"timestep_map must be strictly increasing non-negative steps; got {timestep_map}")
        self.timestep_map = timestep_map.astype(np.int64)
        needed = int(self.timestep_map[-1]) + 1
        if original_num_timesteps is None:
            original_num_timesteps = needed
        if isinstance(original_num_timesteps, bool) or not isinstance(original_num_timesteps, (int, np.integer)) \
                or original_num_timesteps < needed:
            raise ValueError(
                f"original_num_timesteps must be an integer >= {needed} (the timestep map reaches step "
                f"{needed - 1}); got {original_num_timesteps!r}"
            )
        self.original_num_timesteps = int(original_num_timesteps)

        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.zero_terminal_snr = bool(self.alphas_cumprod[-1] == 0.0)
        if self.zero_terminal_snr and self.model_mean_type == "eps":
            raise ValueError(
                "model_mean_type='eps' cannot be used with a zero-terminal-SNR schedule (abar_T = 0): "
                "x_0 = (x_t - sigma eps) / alpha divides by alpha_T = 0 at the last step; "
                "use model_mean_type='v' or 'x0'"
            )

        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.one_minus_alphas_cumprod = 1.0 - self.alphas_cumprod
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(self.one_minus_alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        with np.errstate(divide="ignore"):  # log-SNR at a zero-terminal-SNR end is -inf by design
            self.log_snr_table = np.log(self.alphas_cumprod) - self.log_one_minus_alphas_cumprod

        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~ at step 0 is 0: clip the log by repeating the next entry, as the reference code does.
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)
        # fixed_large: [beta~_2, beta_2, ..., beta_T] (Improved DDPM's choice for a good L_0)
        self.fixed_large_variance = np.append(self.posterior_variance[1], betas[1:])
        self.fixed_large_log_variance = np.log(self.fixed_large_variance)
        self.log_betas = np.log(betas)

        self._cache = TableCache()

    # -------------------------------------------------------------------------------- helpers
    def _table(self, name: str, xp: Any, dtype: Any, device: Any) -> Any:
        return self._cache.get(name, getattr(self, name), xp, dtype, device)

    def _gather(self, name: str, t: Any, x: Any) -> Any:
        """table[t] in x's dtype and device, shaped (B, 1, ..., 1) to broadcast against x."""
        xp = array_namespace(x, t)
        table = self._table(name, xp, x.dtype, array_device(x))
        return expand_to(xp.take(table, t, axis=0) if t.ndim == 1 else table[t], x)

    def _check(self, x: Any, t: Any, name: str = "x_start") -> Any:
        xp = check_float_array(x, name)
        if x.ndim < 1:
            raise ValueError(f"{name} must have a batch axis; got a 0-D array")
        check_timesteps(t, self.num_timesteps, "t", batch=x.shape[0])
        check_same_namespace(**{name: x, "t": t})
        return xp

    def _per_step(self, name: str, t: Any, dtype: Any) -> Any:
        xp = check_timesteps(t, self.num_timesteps, "t")
        dtype = default_dtype(xp) if dtype is None else check_dtype_floating(dtype, xp, "dtype")
        table = self._table(name, xp, dtype, array_device(t))
        return xp.take(table, t, axis=0) if t.ndim == 1 else table[t]

    # ------------------------------------------------------------------- process interface
    def alpha(self, t: Any, dtype: Any = None) -> Any:
        """alpha(t) = sqrt(abar_t), shape of ``t``."""
        return self._per_step("sqrt_alphas_cumprod", t, dtype)

    def sigma(self, t: Any, dtype: Any = None) -> Any:
        """sigma(t) = sqrt(1 - abar_t), shape of ``t``."""
        return self._per_step("sqrt_one_minus_alphas_cumprod", t, dtype)

    def log_snr(self, t: Any, dtype: Any = None) -> Any:
        """log(abar_t / (1 - abar_t)), shape of ``t`` (-inf at a zero-terminal-SNR last step)."""
        return self._per_step("log_snr_table", t, dtype)

    def model_time(self, t: Any) -> Any:
        """The time the network receives: the original step (or t * 1000 / T if rescaled)."""
        xp = check_timesteps(t, self.num_timesteps, "t")
        table = self._table("timestep_map", xp, t.dtype, array_device(t))
        mapped = xp.take(table, t, axis=0) if t.ndim == 1 else table[t]
        if self.rescale_timesteps:
            dtype = default_dtype(xp)
            return xp.astype(mapped, dtype) * (1000.0 / self.original_num_timesteps)
        return mapped

    def time_from_model_time(self, t_in: Any) -> Any:
        """The step index whose network time input is ``t_in`` (the inverse of :meth:`model_time`).

        ``t_in`` must be a time this chain gives its network (an original step of ``timestep_map``,
        or its rescaled value); for concrete arrays anything else is a ValueError, not the nearest step.
        """
        xp = check_array(t_in, "t_in", floating=False)
        device = array_device(t_in)
        original = t_in
        if self.rescale_timesteps:
            t_in = xp.round(t_in * (self.original_num_timesteps / 1000.0))
        steps = xp.astype(t_in, default_dtype(xp, "indexing"))
        table = self._table("timestep_map", xp, steps.dtype, device)
        index = xp.searchsorted(table, steps)
        lo_hi = concrete_min_max(original)
        if lo_hi is not None:
            found = xp.take(table, xp.clip(index, max=self.num_timesteps - 1), axis=0)
            exact = xp.all(xp.astype(found, original.dtype) == (original if not self.rescale_timesteps else t_in))
            if not bool(exact) or not bool(xp.all(index < self.num_timesteps)):
                raise ValueError(
                    f"t_in must be network times of this chain (original steps {int(self.timestep_map[0])}.."
                    f"{int(self.timestep_map[-1])} of its timestep_map{', rescaled to [0, 1000)' if self.rescale_timesteps else ''}); "
                    f"got values from {float(lo_hi[0]):g} to {float(lo_hi[1]):g} that are not all among them"
                )
        return index

    def prior_sample(self, noise: Any) -> Any:
        """x_T ~ N(0, I): the prior sample is the noise itself."""
        check_float_array(noise, "noise")
        return noise

    def prior_logp(self, z: Any) -> Any:
        """Per-example log N(z; 0, I), summed over non-batch axes."""
        check_float_array(z, "z")
        return sum_flat(standard_normal_logp(z))

    # ------------------------------------------- open process interface (diffcore.process)
    #: integer steps 0 .. num_timesteps - 1: no time derivatives, no continuous time
    discrete = True
    #: DDPM's ancestral chain (posterior means and variances of the steps)
    capabilities = frozenset({"discrete_chain"})
    t_min = 0

    def time_from_log_snr(self, lam: Any) -> np.ndarray:
        """The *nearest* step on log(sigma / alpha) = -lam / 2 (host side, int64), clamped to
        [0, T - 1] (k-diffusion's DiscreteSchedule with ``quantize=True``): the network only knows
        integer steps, so interpolating between them would feed it times it never saw."""
        with np.errstate(divide="ignore", invalid="ignore"):
            table = -0.5 * np.asarray(self.log_snr_table, dtype=np.float64)  # ascending log sigma~
            log_s = -0.5 * np.asarray(lam, dtype=np.float64)
        T = table.shape[0]
        hi = np.clip(np.searchsorted(table, log_s), 1, T - 1)
        lo = hi - 1
        nearer_lo = np.abs(log_s - table[lo]) <= np.abs(table[hi] - log_s)
        return np.where(nearer_lo, lo, hi).astype(np.int64)

    # ---------------------------------------------------------------------- forward process
    def q_mean_variance(self, x_start: Any, t: Any) -> tuple[Any, Any, Any]:
        """Moments of q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I): (mean, variance, log variance)."""
        self._check(x_start, t)
        mean = self._gather("sqrt_alphas_cumprod", t, x_start) * x_start
        variance = self._gather("one_minus_alphas_cumprod", t, x_start)
        log_variance = self._gather("log_one_minus_alphas_cumprod", t, x_start)
        return mean, variance, log_variance

    def q_sample(self, x_start: Any, t: Any, *, noise: Any) -> Any:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (noise ~ N(0, I), made by a backend)."""
        self._check(x_start, t)
        _check_noise(noise, x_start)
        return (
            self._gather("sqrt_alphas_cumprod", t, x_start) * x_start
            + self._gather("sqrt_one_minus_alphas_cumprod", t, x_start) * noise
        )

    def q_posterior_mean_variance(self, x_start: Any, x_t: Any, t: Any) -> tuple[Any, Any, Any]:
        """Moments of q(x_{t-1} | x_t, x_0): (mean, variance, clipped log variance).

        mean = coef1 x_0 + coef2 x_t, coef1 = beta_t sqrt(abar_{t-1}) / (1 - abar_t),
        coef2 = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t); variance = beta~_t.
        The variance terms broadcast against x_t (shape (B, 1, ..., 1)).
        """
        self._check(x_start, t)
        _check_like(x_t, x_start, "x_t", "x_start")
        mean = self._gather("posterior_mean_coef1", t, x_t) * x_start + self._gather("posterior_mean_coef2", t, x_t) * x_t
        variance = self._gather("posterior_variance", t, x_t)
        log_variance = self._gather("posterior_log_variance_clipped", t, x_t)
        return mean, variance, log_variance

    # ---------------------------------------------------------------------- parametrisation
    def _alpha_sigma(self, t: Any, x: Any) -> tuple[Any, Any]:
        return self._gather("sqrt_alphas_cumprod", t, x), self._gather("sqrt_one_minus_alphas_cumprod", t, x)

    def _split_output(self, model_output: Any, x_t: Any) -> tuple[Any, Any]:
        _check_model_output(model_output, x_t)
        if self.model_var_type in ("learned", "learned_range"):
            if x_t.ndim < 2:
                raise ValueError("a learned variance needs x_t with a channel axis 1")
            return param.split_learned_variance(model_output, x_t.shape[1])
        check_same_shape(model_output, x_t, "model_output", "x_t")
        return model_output, None

    def predict_xstart(self, model_output: Any, x_t: Any, t: Any) -> Any:
        """x_0 implied by the mean part of ``model_output`` (model_mean_type)."""
        self._check(x_t, t, "x_t")
        mean_output, _ = self._split_output(model_output, x_t)
        alpha, sigma = self._alpha_sigma(t, x_t)
        return param.to_x0(mean_output, self.model_mean_type, x_t, alpha, sigma)

    def predict_eps(self, model_output: Any, x_t: Any, t: Any) -> Any:
        """eps implied by the mean part of ``model_output`` (model_mean_type)."""
        self._check(x_t, t, "x_t")
        mean_output, _ = self._split_output(model_output, x_t)
        alpha, sigma = self._alpha_sigma(t, x_t)
        return param.to_eps(mean_output, self.model_mean_type, x_t, alpha, sigma)

    def score(self, model_output: Any, x_t: Any, t: Any) -> Any:
        """grad log p_t(x_t) implied by ``model_output``: -eps / sqrt(1 - abar_t)."""
        self._check(x_t, t, "x_t")
        mean_output, _ = self._split_output(model_output, x_t)
        alpha, sigma = self._alpha_sigma(t, x_t)
        return param.to_score(mean_output, self.model_mean_type, x_t, alpha, sigma)

    def model_log_variance(self, var_output: Any, x_t: Any, t: Any) -> Any:
        """log Sigma_theta for the configured variance type (var_output: the learned channels or None)."""
        if self.model_var_type == "fixed_small":
            return self._gather("posterior_log_variance_clipped", t, x_t)
        if self.model_var_type == "fixed_large":
            return self._gather("fixed_large_log_variance", t, x_t)
        if self.model_var_type == "learned":
            return var_output
        # learned_range: frac = (v + 1) / 2 between log beta~ (clipped) and log beta
        min_log = self._gather("posterior_log_variance_clipped", t, x_t)
        max_log = self._gather("log_betas", t, x_t)
        frac = (var_output + 1.0) / 2.0
        return frac * max_log + (1.0 - frac) * min_log

    def p_mean_variance(
        self,
        model_output: Any,
        x_t: Any,
        t: Any,
        *,
        clip_denoised: bool = False,
        denoised_fn: Callable[[Any], Any] | None = None,
    ) -> PMeanVariance:
        """Moments of p_theta(x_{t-1} | x_t) from the network's output at (x_t, t).

        The mean is the posterior mean at the predicted x_0 (optionally clipped to [-1, 1] or passed
        through ``denoised_fn``); the variance follows ``model_var_type``.
        """
        xp = self._check(x_t, t, "x_t")
        check_bool(clip_denoised, "clip_denoised")
        if denoised_fn is not None:
            check_callable(denoised_fn, "denoised_fn", "denoised_fn(pred_xstart) -> pred_xstart")
        mean_output, var_output = self._split_output(model_output, x_t)
        log_variance = self.model_log_variance(var_output, x_t, t)
        alpha, sigma = self._alpha_sigma(t, x_t)
        pred_xstart = param.to_x0(mean_output, self.model_mean_type, x_t, alpha, sigma)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = xp.clip(pred_xstart, min=-1.0, max=1.0)
        mean = self._gather("posterior_mean_coef1", t, x_t) * pred_xstart + self._gather("posterior_mean_coef2", t, x_t) * x_t
        return PMeanVariance(mean, xp.exp(log_variance), log_variance, pred_xstart)

    # ---------------------------------------------------------------------- variational bound
    def decoder_nll(self, x_start: Any, mean: Any, log_variance: Any, decoder: str = "discretized") -> Any:
        """-log p(x_0 | x_1) elementwise, in nats: 8-bit discretized or continuous Gaussian."""
        check_choice(decoder, DECODERS, "decoder")
        if decoder == "discretized":
            return -discretized_gaussian_log_likelihood(x_start, means=mean, log_scales=0.5 * log_variance)
        return -gaussian_log_likelihood(x_start, means=mean, log_variance=log_variance)

    def vb_terms(
        self,
        x_start: Any,
        x_t: Any,
        t: Any,
        *,
        model_mean: Any,
        model_log_variance: Any,
        decoder: str = "discretized",
    ) -> Any:
        """Per-example L_{t-1} in bits/dim: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t >= 1, and
        the decoder term -log p(x_0 | x_1) at step 0 (the papers' L_0).

        Takes the model's mean and log-variance directly, so any reverse Gaussian can be scored.
        """
        xp = self._check(x_start, t)
        _check_like(x_t, x_start, "x_t", "x_start")
        check_float_array(model_mean, "model_mean")
        check_float_array(model_log_variance, "model_log_variance")
        check_same_namespace(x_start=x_start, model_mean=model_mean, model_log_variance=model_log_variance)
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, model_mean, model_log_variance)) / _LN2
        nll = mean_flat(self.decoder_nll(x_start, model_mean, model_log_variance, decoder)) / _LN2
        return xp.where(t == 0, nll, kl)

    def vb_terms_bpd(
        self,
        model_output: Any,
        x_start: Any,
        x_t: Any,
        t: Any,
        *,
        clip_denoised: bool = False,
        decoder: str = "discretized",
    ) -> tuple[Any, Any]:
        """(per-example L_{t-1} in bits/dim, predicted x_0) from the network's output."""
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised)
        terms = self.vb_terms(
            x_start, x_t, t, model_mean=out.mean, model_log_variance=out.log_variance, decoder=decoder
        )
        return terms, out.pred_xstart

    def prior_bpd(self, x_start: Any) -> Any:
        """Per-example L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim."""
        xp = check_array(x_start, "x_start", min_ndim=1)
        t = xp.full((x_start.shape[0],), self.num_timesteps - 1, dtype=default_dtype(xp, "indexing"), device=array_device(x_start))
        mean, _, log_variance = self.q_mean_variance(x_start, t)
        zeros = xp.zeros_like(mean)
        return mean_flat(normal_kl(mean, log_variance, zeros, zeros)) / _LN2

    def calc_bpd_loop(
        self,
        model: Callable[..., Any],
        x_start: Any,
        *,
        noise: Callable[[int], Any],
        clip_denoised: bool = False,
        decoder: str = "discretized",
        cond: Any = None,
    ) -> dict[str, Any]:
        """The full variational bound in bits/dim: L_T + sum_t L_{t-1}, one model call per step.

        ``noise(i)`` returns the standard normal noise for step i (from a backend). For 8-bit data
        the result is already in bits of the 8-bit data: no offset is added (docs/math.md).
        Returns total_bpd, prior_bpd, vb (B, T), xstart_mse (B, T) and mse (B, T), per example.
        """
        xp = check_array(x_start, "x_start", min_ndim=1)
        check_callable(model, "model", "model(x_t, t_in[, cond]) -> output")
        check_callable(noise, "noise", "noise(i) -> standard normal draws of x_start's shape")
        B = x_start.shape[0]
        vb, xstart_mse, mse = [], [], []
        for i in range(self.num_timesteps):
            t = xp.full((B,), i, dtype=default_dtype(xp, "indexing"), device=array_device(x_start))
            eps = noise(i)
            x_t = self.q_sample(x_start, t, noise=eps)
            output = model(x_t, self.model_time(t), cond) if cond is not None else model(x_t, self.model_time(t))
            terms, pred_xstart = self.vb_terms_bpd(output, x_start, x_t, t, clip_denoised=clip_denoised, decoder=decoder)
            vb.append(terms)
            xstart_mse.append(mean_flat((pred_xstart - x_start) ** 2))
            mse.append(mean_flat((self.predict_eps(output, x_t, t) - eps) ** 2))
        vb_all = xp.stack(vb, axis=1)
        prior = self.prior_bpd(x_start)
        return {
            "total_bpd": xp.sum(vb_all, axis=1) + prior,
            "prior_bpd": prior,
            "vb": vb_all,
            "xstart_mse": xp.stack(xstart_mse, axis=1),
            "mse": xp.stack(mse, axis=1),
        }

    # ---------------------------------------------------------------------------- losses
    def loss_terms(
        self,
        model_output: Any,
        x_start: Any,
        x_t: Any,
        t: Any,
        *,
        noise: Any,
        loss_type: str = "simple",
        lambda_vlb: float = 0.001,
        stop_gradient: Callable[[Any], Any] | None = None,
        decoder: str = "discretized",
    ) -> dict[str, Any]:
        """Unreduced per-example losses from the network's output at (x_t, t), x_t = q_sample(x_0, t, noise).

        - "simple": L_simple, the MSE (mean over dims) to the eps / x_0 / v target (Ho et al. 2020).
          With a learned variance, L_simple alone gives the variance no signal: use "hybrid".
        - "vlb": the single-step term L_t in bits/dim; T * L_t estimates the full bound ("rescaled_vlb").
        - "hybrid": L_simple + lambda_vlb * T * L_t with the mean frozen (stop-gradient) in the L_t term, so
          it trains only the variance (Nichol & Dhariwal 2021; lambda = 0.001 equals their vb * T / 1000).
        ``stop_gradient`` comes from the backend (default: the backend of ``model_output``'s arrays).
        Returns a dict with "loss" and its parts ("mse", "vb").
        """
        check_choice(loss_type, LOSS_TYPES, "loss_type")
        xp = self._check(x_start, t)
        _check_like(x_t, x_start, "x_t", "x_start")
        _check_noise(noise, x_start)
        lambda_vlb = check_nonnegative(lambda_vlb, "lambda_vlb")
        if stop_gradient is not None:
            check_callable(stop_gradient, "stop_gradient", "stop_gradient(x) -> x")
        terms: dict[str, Any] = {}
        if loss_type in ("vlb", "rescaled_vlb"):
            vb, _ = self.vb_terms_bpd(model_output, x_start, x_t, t, decoder=decoder)
            terms["vb"] = vb
            terms["loss"] = vb * self.num_timesteps if loss_type == "rescaled_vlb" else vb
            return terms

        mean_output, var_output = self._split_output(model_output, x_t)
        alpha, sigma = self._alpha_sigma(t, x_t)
        target = {
            "eps": noise,
            "x0": x_start,
            "v": param.v_from_eps_x0(noise, x_start, alpha, sigma),
        }[self.model_mean_type]
        terms["mse"] = mean_flat((target - mean_output) ** 2)
        terms["loss"] = terms["mse"]
        if loss_type == "hybrid":
            if var_output is None:
                raise ValueError(
                    f"loss_type='hybrid' trains a learned variance; model_var_type is {self.model_var_type!r} "
                    "(use 'learned_range' or 'learned', or loss_type='simple')"
                )
            if stop_gradient is None:
                from .backends import backend_for

                stop_gradient = backend_for(model_output).stop_gradient
            frozen = xp.concat([stop_gradient(mean_output), var_output], axis=1)
            vb, _ = self.vb_terms_bpd(frozen, x_start, x_t, t, decoder=decoder)
            terms["vb"] = vb * (lambda_vlb * self.num_timesteps)
            terms["loss"] = terms["mse"] + terms["vb"]
        return terms

    def training_losses(
        self,
        model: Callable[..., Any],
        x_start: Any,
        t: Any,
        *,
        noise: Any,
        cond: Any = None,
        **options: Any,
    ) -> dict[str, Any]:
        """improved-diffusion's ``training_losses``: q_sample, one model call, :meth:`loss_terms`."""
        check_callable(model, "model", "model(x_t, t_in[, cond]) -> output")
        x_t = self.q_sample(x_start, t, noise=noise)
        t_in = self.model_time(t)
        output = model(x_t, t_in, cond) if cond is not None else model(x_t, t_in)
        return self.loss_terms(output, x_start, x_t, t, noise=noise, **options)

    # ---------------------------------------------------------------------------- respacing
    def respace(
        self, steps: int | str | list[int] | None = None, spacing: str = "linspace", *, timesteps: Any = None
    ) -> "GaussianDiffusion":
        """The chain restricted to a subset of steps (Improved DDPM §4).

        New betas are 1 - abar_{s_i} / abar_{s_{i-1}}; the network keeps receiving the original
        steps through ``timestep_map``. ``steps`` is a count (with ``spacing`` "linspace", "leading"
        or "trailing"), improved-diffusion's strings ("ddim50", "10,15,20") or its per-section
        counts as a list ([10, 15, 20]). To keep explicit steps, pass ``timesteps=[0, 10, 99]``
        (sorted unique ints in [0, T-1], 0-based) instead of ``steps``.
        """
        if timesteps is not None:
            if steps is not None or spacing != "linspace":
                raise TypeError(
                    "pass either steps (a count, 'ddimN', or per-section counts) with spacing, or timesteps "
                    f"(the kept steps), not both; got steps={steps!r}, spacing={spacing!r}, timesteps={timesteps!r}"
                )
            kept = space_timesteps(self.num_timesteps, timesteps=timesteps)
            if kept.shape[0] < 2:
                raise ValueError(f"timesteps must keep at least 2 steps (a chain needs 2); got {timesteps!r}")
        elif steps is None:
            raise TypeError("respace needs steps (a count, 'ddimN', '10,15,20' or [10, 15, 20]) or timesteps=[...]")
        else:
            kept = respaced_timesteps(self.num_timesteps, steps, spacing)
        new_betas, index_map = respace_betas(self.betas, kept)
        return GaussianDiffusion(
            betas=new_betas,
            model_mean_type=self.model_mean_type,
            model_var_type=self.model_var_type,
            timestep_map=self.timestep_map[index_map],
            rescale_timesteps=self.rescale_timesteps,
            original_num_timesteps=self.original_num_timesteps,
        )

    def __repr__(self) -> str:
        return (
            f"GaussianDiffusion(T={self.num_timesteps}, model_mean_type={self.model_mean_type!r}, "
            f"model_var_type={self.model_var_type!r}, original_num_timesteps={self.original_num_timesteps})"
        )
