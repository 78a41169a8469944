"""DDPM ancestral sampling and DDIM, on the full or a respaced schedule.

- DDPM (Ho et al. 2020, Algorithm 2; Improved DDPM's learned variances and respacing):
  x_{t-1} = mu_theta(x_t, t) + sigma_t z, no noise at the last step.
- DDIM (Song, Meng & Ermon 2021, eq. 12), written against the process interface, so it runs on
  GaussianDiffusion and on the SDEs alike:
  x_next = alpha_next x_0 + sqrt(sigma_next^2 - s^2) eps + s z,
  s = eta sigma_next sqrt(1 - (alpha sigma_next / (alpha_next sigma))^2).
  The previous step is the previous *kept* step (never a fixed stride) and the last step goes to
  alpha = 1, sigma = 0: the output is the final x_0 prediction, with no residual noise.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._array import array_namespace, linear_combination
from ..process import is_discrete, require, start_time
from ..parametrization import split_learned_variance, to_x0
from ._base import (
    resolve_prediction,
    ModelArgs,
    SampleState,
    final_x,
    init_state,
    Sampler,
    call_model,
    denoise,
    flag_nonfinite,
)
from .grid import check_times, time_grid

__all__ = ["ddpm", "ddim"]




# ----------------------------------------------------------------------------------------- DDPM


class DDPMPlan(NamedTuple):
    index: np.ndarray
    t_in: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    coef1: np.ndarray
    coef2: np.ndarray
    log_var_min: np.ndarray
    log_var_max: np.ndarray
    log_var_fixed: np.ndarray
    noise_scale: np.ndarray
    alpha_next: np.ndarray
    sigma_next: np.ndarray


class DDPMAffinePlan(NamedTuple):
    """The fixed-variance step as one affine map, x_next = c_x x + c_out output + std z (derived in
    float64 on the host: no per-step arithmetic on 0-d coefficients). Only the columns that step
    reads (and alpha_next / sigma_next, which inpainting reads): the eager drivers cut every column
    into one 0-d array per step, a few us each."""

    index: np.ndarray
    t_in: np.ndarray
    c_x: np.ndarray
    c_out: np.ndarray
    std: np.ndarray
    alpha_next: np.ndarray
    sigma_next: np.ndarray


def ddpm(model, process, *, steps=None, spacing="linspace", times=None, clip_denoised=False, prediction=None) -> Sampler:
    """DDPM ancestral sampling with the process's variance type (fixed_small, fixed_large, learned
    types from the extra output channels). ``steps`` respaces the chain (Improved DDPM §4);
    ``times`` keeps exactly the given original steps (ascending or descending) instead."""
    require(
        process, "discrete_chain", "ddpm",
        "DDPM's ancestral chain, e.g. a GaussianDiffusion; for SDEs use 'ancestral', 'reverse_diffusion' or 'euler_maruyama'",
    )
    prediction = resolve_prediction(model, process, prediction, "eps")
    if times is not None:
        if steps is not None:
            raise ValueError("pass either steps or times (the kept original steps), not both")
        chain = process.respace(timesteps=np.sort(check_times(process, times)).tolist())
    else:
        chain = process if steps is None else process.respace(steps, spacing)
    T = chain.num_timesteps
    t = np.arange(T - 1, -1, -1)
    var_type = chain.model_var_type
    fixed = {
        "fixed_small": chain.posterior_log_variance_clipped,
        "fixed_large": chain.fixed_large_log_variance,
    }.get(var_type, chain.posterior_log_variance_clipped)
    alpha, sigma = chain.sqrt_alphas_cumprod[t], chain.sqrt_one_minus_alphas_cumprod[t]
    coef1, coef2 = chain.posterior_mean_coef1[t], chain.posterior_mean_coef2[t]
    # x_0 is affine in (x, output) for every prediction: x_0 = a x + b output
    a = np.asarray(to_x0(np.zeros_like(alpha), prediction, np.ones_like(alpha), alpha, sigma), dtype=np.float64)
    b = np.asarray(to_x0(np.ones_like(alpha), prediction, np.zeros_like(alpha), alpha, sigma), dtype=np.float64)
    learned = var_type in ("learned", "learned_range")
    affine = not learned and not clip_denoised
    alpha_next, sigma_next = np.sqrt(chain.alphas_cumprod_prev[t]), np.sqrt(1.0 - chain.alphas_cumprod_prev[t])
    t_in = np.asarray(chain.model_time(t))
    if affine:
        plan = DDPMAffinePlan(
            index=np.arange(T),
            t_in=t_in,
            c_x=coef1 * a + coef2,
            c_out=coef1 * b,
            std=(t > 0) * np.exp(0.5 * fixed[t]),
            alpha_next=alpha_next,
            sigma_next=sigma_next,
        )
    else:
        plan = DDPMPlan(
            index=np.arange(T),
            t_in=t_in,
            alpha=alpha,
            sigma=sigma,
            coef1=coef1,
            coef2=coef2,
            log_var_min=chain.posterior_log_variance_clipped[t],
            log_var_max=chain.log_betas[t],
            log_var_fixed=fixed[t],
            noise_scale=(t > 0).astype(np.float64),
            alpha_next=alpha_next,
            sigma_next=sigma_next,
        )

    def affine_step(state: SampleState, plan_i: tuple, noise_i: Any, args: ModelArgs) -> SampleState:
        # the common case in one fused expression (it costs a third of a trivial model's step)
        index, t_in, c_x, c_out, std = plan_i[:5]
        x = state.x
        output = call_model(model, args, x, t_in)
        x_next = linear_combination(c_x, x, c_out, output, std, noise_i[:, 0, ...])
        return SampleState(x_next, flag_nonfinite(state.bad_step, x_next, index))

    def step(state: SampleState, plan_i: tuple, noise_i: Any, args: ModelArgs) -> SampleState:
        p = DDPMPlan(*plan_i)
        x = state.x
        output = call_model(model, args, x, p.t_in, learned)
        xp = array_namespace(x)
        if learned:
            mean_out, var_out = split_learned_variance(output, x.shape[1])
            if var_type == "learned":
                log_var = var_out
            else:
                frac = (var_out + 1.0) / 2.0
                log_var = frac * p.log_var_max + (1.0 - frac) * p.log_var_min
        else:
            mean_out, log_var = output, p.log_var_fixed
        x0 = to_x0(mean_out, prediction, x, p.alpha, p.sigma)
        if clip_denoised:
            x0 = xp.clip(x0, min=-1.0, max=1.0)
        mean = p.coef1 * x0 + p.coef2 * x
        x_next = mean + p.noise_scale * xp.exp(0.5 * log_var) * noise_i[:, 0, ...]
        return SampleState(x_next, flag_nonfinite(state.bad_step, x_next, p.index))

    # error messages name the process's own step: the original step of a respaced chain
    original = np.asarray(getattr(chain, "timestep_map", t))[t]
    return Sampler("ddpm", plan, init_state, affine_step if affine else step, final_x, 1, T, np.asarray(original, dtype=np.float64))


# ----------------------------------------------------------------------------------------- DDIM


class DDIMPlan(NamedTuple):
    index: np.ndarray
    t_in: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    alpha_next: np.ndarray
    sigma_next: np.ndarray
    c_eps: np.ndarray
    c_noise: np.ndarray


def ddim(
    model,
    process,
    *,
    steps=50,
    spacing="linspace",
    eta=0.0,
    eps=None,
    clip_denoised=False,
    prediction=None,
    times=None,
) -> Sampler:
    """DDIM with stochasticity ``eta`` in [0, 1] (eta = 1: the ancestral sampler's variance).

    ``times``: an explicit grid in place of ``steps`` (continuous: strictly decreasing times in the
    process's range; GaussianDiffusion: the kept original steps, ascending or descending)."""
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise TypeError(f"eta must be a number in [0, 1]; got {eta!r}") from None
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1]; got {eta}")
    prediction = resolve_prediction(model, process, prediction, "eps")
    start = None if is_discrete(process) else start_time(process, "ddim", prediction)
    grid = time_grid(process, steps, spacing=spacing, eps=eps, start=start, times=times)
    if times is not None and not is_discrete(process):
        start_time(process, "ddim", prediction, t_max=grid.times[0])  # alpha = 0 there needs x0 / v / u
    alpha, sigma = grid.alpha, grid.sigma
    alpha_next = np.append(alpha[1:], 1.0)
    sigma_next = np.append(sigma[1:], 0.0)
    ratio = (alpha * sigma_next) / (alpha_next * sigma)
    c_noise = eta * sigma_next * np.sqrt(np.clip(1.0 - ratio**2, 0.0, None))
    c_eps = np.sqrt(np.clip(sigma_next**2 - c_noise**2, 0.0, None))
    n = grid.times.shape[0]
    plan = DDIMPlan(np.arange(n), grid.t_in, alpha, sigma, alpha_next, sigma_next, c_eps, c_noise)

    def step(state: SampleState, plan_i: tuple, noise_i: Any, args: ModelArgs) -> SampleState:
        p = DDIMPlan(*plan_i)
        d = denoise(model, args, state.x, p.t_in, p.alpha, p.sigma, prediction, clip_denoised)
        x_next = p.alpha_next * d.x0 + p.c_eps * d.eps
        if eta > 0:
            x_next = x_next + p.c_noise * noise_i[:, 0, ...]
        return SampleState(x_next, flag_nonfinite(state.bad_step, x_next, p.index))

    return Sampler("ddim", plan, init_state, step, final_x, 1 if eta > 0 else 0, n, grid.times)
