"""Score-matching losses, unreduced per example.

- Denoising score matching in continuous time (Vincent 2011; Song et al. 2021, eq. 7) with
  lambda(t) = sigma(t)^2 or the likelihood weighting g(t)^2 (Song, Durkan et al. 2021).
- NCSN's multi-level loss with lambda(sigma) = sigma^2 (Song & Ermon 2019, eq. 6).
- Sliced score matching and its variance-reduced form (Song et al. 2019), and implicit
  (Hyvarinen 2005) score matching with the exact Jacobian trace. These two differentiate the model:
  they take it as a callable and get vjp / jvp from a backend.

Identity behind the last two (integration by parts):
1/2 E||s - grad log p||^2 = E[tr(grad_x s) + 1/2 ||s||^2] + 1/2 E||grad log p||^2.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numbers

from ._array import (
    array_device,
    array_namespace,
    check_float_array,
    check_same_shape,
    concrete_min_max,
    default_dtype,
    expand_to,
    mean_flat,
    sum_flat,
)
from .autodiff import DEFAULT_MAX_DIM, divergence_exact, divergence_hutchinson
from .checks import check_bool, check_callable, check_prediction, check_real, check_same_namespace
from .parametrization import to_score

__all__ = [
    "denoising_score_matching_loss",
    "ncsn_loss",
    "sliced_score_matching_loss",
    "implicit_score_matching_loss",
    "score_fn_from_model",
]


def _reduce(x: Any, reduce_mean: bool) -> Any:
    """score_sde's reduce_op: the mean over dimensions, or half the sum."""
    return mean_flat(x) if reduce_mean else 0.5 * sum_flat(x)


def _check_loss_time(sde: Any, t: Any, batch: int) -> None:
    from .sde import check_time

    check_time(t, sde.T, batch=batch, open_low=getattr(sde, "zero_noise_at_start", False))


def _check_sde(sde: Any) -> None:
    from .sde import SDE

    if not isinstance(sde, SDE):
        hint = " (use GaussianDiffusion.training_losses for discrete diffusion)" if hasattr(sde, "num_timesteps") else ""
        raise TypeError(f"sde must be a continuous-time SDE (VPSDE, subVPSDE, VESDE); got {type(sde).__name__}{hint}")


def _check_noise_like(noise: Any, score: Any, name: str = "noise", like: str = "score") -> None:
    if noise is None:
        raise TypeError(f"{name} is required (standard normal draws of {like}'s shape, from backend.normal); got None")
    check_float_array(noise, name)
    check_same_namespace(**{like: score, name: noise})
    check_same_shape(score, noise, like, name)


def denoising_score_matching_loss(
    sde: Any,
    score: Any,
    noise: Any,
    t: Any,
    *,
    likelihood_weighting: bool = False,
    reduce_mean: bool = False,
) -> Any:
    """Per-example continuous-time DSM loss at x_t = alpha(t) x_0 + sigma(t) noise.

    lambda(t) = sigma^2:   1/2 sum ||sigma s + z||^2;
    lambda(t) = g(t)^2:    1/2 g^2 sum ||s + z / sigma||^2   (``likelihood_weighting``).
    With ``reduce_mean`` the 1/2 sum becomes a mean over dimensions, exactly as score_sde's
    ``reduce_op`` (``torch.mean`` if reduce_mean else ``0.5 * torch.sum``).
    """
    _check_sde(sde)
    check_float_array(score, "score")
    _check_noise_like(noise, score)
    check_bool(likelihood_weighting, "likelihood_weighting")
    check_bool(reduce_mean, "reduce_mean")
    _check_loss_time(sde, t, score.shape[0])
    check_same_namespace(score=score, t=t)
    sigma = expand_to(sde.sigma(t, dtype=score.dtype), score)
    if not likelihood_weighting:
        return _reduce((score * sigma + noise) ** 2, reduce_mean)
    g2 = sde.diffusion_squared(t, dtype=score.dtype)
    return _reduce((score + noise / sigma) ** 2, reduce_mean) * g2


def ncsn_loss(score: Any, noise: Any, sigma: Any, *, anneal_power: float = 2.0) -> Any:
    """NCSN's loss at x~ = x + sigma z: 1/2 ||s(x~, sigma) + z / sigma||^2 sigma^anneal_power, per example.

    The target is the score of q_sigma(x~ | x), -(x~ - x) / sigma^2 = -z / sigma (docs/sde.md: the
    notes' /sigma is a typo). ``sigma`` has one entry per example; lambda(sigma) = sigma^2 by default.
    """
    xp = check_float_array(score, "score")
    _check_noise_like(noise, score)
    check_float_array(sigma, "sigma")
    check_same_namespace(score=score, sigma=sigma)
    anneal_power = check_real(anneal_power, "anneal_power")
    if sigma.ndim != 1 or sigma.shape[0] != score.shape[0]:
        raise ValueError(f"sigma must have one entry per example, shape ({score.shape[0]},); got {tuple(sigma.shape)}")
    lo_hi = concrete_min_max(sigma)
    if lo_hi is not None:
        lo, hi = (float(v) for v in lo_hi)
        if not (lo > 0.0 and hi < math.inf):  # NaN fails too
            raise ValueError(
                f"sigma (the noise levels, e.g. from ncsn_sigmas) must be finite and > 0: the target -z / sigma "
                f"is singular at 0; got values from {lo:g} to {hi:g}"
            )
    s = expand_to(sigma, score)
    return 0.5 * sum_flat((score + noise / s) ** 2) * xp.pow(sigma, anneal_power)


def sliced_score_matching_loss(
    backend: Any,
    score_fn: Callable[[Any], Any],
    x: Any,
    probes: Any,
    *,
    variance_reduced: bool = True,
) -> Any:
    """Per-example sliced score matching, averaged over the K probes v (shape (K, B, ...) or (B, ...)).

    v^T (grad_x s) v + 1/2 (v^T s)^2, or + 1/2 ||s||^2 when ``variance_reduced`` (SSM-VR). Probes
    need zero mean and identity covariance (Gaussian or Rademacher), so that in expectation this
    equals the implicit objective tr(grad_x s) + 1/2 ||s||^2.
    """
    check_callable(score_fn, "score_fn", "score_fn(x) -> score")
    variance_reduced = check_bool(variance_reduced, "variance_reduced")
    s, trace = divergence_hutchinson(backend, score_fn, x, probes, return_output=True)
    if variance_reduced:
        return trace + 0.5 * sum_flat(s * s)
    xp = array_namespace(x)
    v = probes if probes.ndim == x.ndim + 1 else xp.expand_dims(probes, axis=0)
    projections = xp.sum(xp.reshape(v * s, (v.shape[0], x.shape[0], -1)), axis=2)
    return trace + 0.5 * xp.mean(projections**2, axis=0)


def implicit_score_matching_loss(
    backend: Any, score_fn: Callable[[Any], Any], x: Any, *, max_dim: int = DEFAULT_MAX_DIM
) -> Any:
    """Per-example implicit score matching (Hyvarinen 2005): tr(grad_x s(x)) + 1/2 ||s(x)||^2.

    The trace is exact: one vjp per data dimension, so only small dimensions (<= ``max_dim``) are
    accepted; for larger data use :func:`sliced_score_matching_loss`.
    """
    check_callable(score_fn, "score_fn", "score_fn(x) -> score")
    check_float_array(x, "x")
    if x.ndim >= 2:
        dim = 1
        for n in x.shape[1:]:
            dim *= int(n)
        if dim > max_dim:
            raise ValueError(
                f"implicit score matching needs the exact Jacobian trace, one backward pass per dimension; "
                f"x has {dim} dimensions per example (> max_dim={max_dim}); use sliced_score_matching_loss "
                "(Hutchinson probes) for data of this size, or raise max_dim"
            )
    s, trace = divergence_exact(backend, score_fn, x, max_dim=max_dim, return_output=True)
    return trace + 0.5 * sum_flat(s * s)


def score_fn_from_model(process: Any, model: Callable[..., Any], prediction: str = "eps") -> Callable[[Any, Any], Any]:
    """score_sde's ``get_score_fn``: s(x, t) from a network model(x, t_in) predicting eps, x0, v, score
    or "scaled_score" (NCSNv2's net(x) = sigma * score)."""

    check_callable(model, "model", "model(x, t_in) -> output")
    check_prediction(prediction)
    discrete = hasattr(process, "num_timesteps")

    def score_fn(x: Any, t: Any) -> Any:
        xp = check_float_array(x, "x")
        if isinstance(t, numbers.Real) and not isinstance(t, bool):  # a Python number: one time for the batch
            dtype = default_dtype(xp, "indexing") if discrete else x.dtype
            t = xp.asarray(t, dtype=dtype, device=array_device(x))
        check_same_namespace(x=x, t=t)
        t_in = process.model_time(t)
        sigma_t = process.sigma(t, dtype=x.dtype)
        lo_hi = concrete_min_max(sigma_t)
        if lo_hi is not None and not float(lo_hi[0]) > 0.0:
            T = getattr(process, "T", None)
            allowed = f"(0, {T:g}]" if T is not None else "steps with sigma > 0"
            raise ValueError(
                f"t must lie in {allowed} for {type(process).__name__}: sigma(t) = 0 at t = 0, where the score "
                f"is singular (start at a small eps > 0, e.g. 1e-3 or 1e-5); got t with sigma(t) = {float(lo_hi[0]):g}"
            )
        output = model(x, t_in)
        if output is None or not hasattr(output, "shape"):
            raise TypeError(f"model must return an array like x; got {type(output).__name__}")
        check_same_namespace(x=x, model_output=output)
        check_same_shape(x, output, "x", "model_output")
        alpha = expand_to(process.alpha(t, dtype=x.dtype), x)
        sigma = expand_to(sigma_t, x)
        return to_score(output, prediction, x, alpha, sigma)

    return score_fn
