"""Score-based samplers: Langevin dynamics, NCSN's annealed Langevin dynamics, and the
predictor-corrector samplers of score SDEs (Song et al. 2021).

All of them move x with the score s = grad_x log p_t(x), taken from the model output through
:func:`diffcore.parametrization.to_score` with the plan's alpha and sigma at the evaluation time
(``prediction``: what the model declares, else "score"; analytic models: ``mixture.as_model(process, "score")``).

- ``langevin``: x <- x + a s(x) + sqrt(2 a) z for a fixed target (one noise level). It cannot
  cross between well-separated modes: use it on unimodal or overlapping targets, or anneal.
- ``annealed_langevin`` (Song & Ermon 2019, Alg. 1, in the form of their code): for each level
  sigma_i of the VE ladder, ``steps_per_level`` steps x <- x + a_i s(x, sigma_i) + sqrt(2 a_i) z,
  a_i = step_lr sigma_i^2 / sigma_L^2. (The paper writes the step as (alpha_i / 2) s + sqrt(alpha_i) z,
  alpha_i = 2 a_i.) ``final_denoise``: NCSNv2's last step x + sigma_L^2 s(x, sigma_L), one more NFE.
- Predictors over the N noise levels t = linspace(T, eps, N) (score_sde), on VP, sub-VP and VE:
  ``euler_maruyama``  x_mean = x - [f(t) x - g(t)^2 s] dt, x = x_mean + g(t) sqrt(dt) z, with dt the
                      actual spacing of the grid (score_sde uses dt = 1/N; equal for the VP defaults);
  ``reverse_diffusion`` score_sde's ReverseDiffusionPredictor: (f, G) = rsde.discretize(x, t),
                      x_mean = x - f, x = x_mean + G z (VP: DDPM's chain; VE: the NCSN ladder;
                      sub-VP: its Euler-Maruyama discretize);
  ``ancestral``       score_sde's AncestralSamplingPredictor (VE and VP; sub-VP has no discrete
                      chain and raises). VE: x_mean = x + (sigma_j^2 - sigma_{j-1}^2) s,
                      std = sqrt(sigma_{j-1}^2 (sigma_j^2 - sigma_{j-1}^2) / sigma_j^2);
                      VP: x_mean = (x + beta_j s) / sqrt(1 - beta_j), std = sqrt(beta_j).
  Chain tables (discrete_betas, discrete_sigmas, alphas) are the process's own N-level chain,
  j = floor(t (N - 1)) (score_sde's truncation); with ``steps`` != process.N they are those of
  the same process built with N = steps, which is how score_sde changes the step count.
- Langevin corrector (score_sde's LangevinCorrector), M = ``corrector_steps`` steps at one level:
  x_mean = x + eps_i s, x = x_mean + sqrt(2 eps_i) z. score_sde's step is
  eps_i = 2 alpha_i (snr ||z|| / ||s||)^2, alpha_i = 1 (VE) or 1 - beta_i of the chain (VP and
  sub-VP: sub-VP has a VP chain; both reference codebases fail there; a process without a chain:
  (alpha(t_i) / alpha(t_i - dt))^2). The norms:
  ``norm="expected"`` (default): ||z||^2 and ||s||^2 by their expectations D and D / sigma_i^2, so
  eps_i = 2 alpha_i (snr sigma_i)^2 -- a plan column that reads no state, so every chain takes the
  same step and samples do not depend on their batch. Measured on the 3-D mixture of
  tests/test_sde_samplers.py (VESDE, 1000 steps, 8000 samples, seed 0; exact variances (1.53,
  1.93, 0.99)): expected (1.55, 1.90, 1.01), within 2 standard errors;
  ``"per_sample"`` (the old default): each sample's own norms; its step grows where its own score
  is small, which biases where Langevin dynamics settles: (2.64, 2.93, 1.93), 45-90 standard errors
  off (in high dimensions the norms concentrate and it is fine);
  ``"batch_mean"``: score_sde's mean norms over the batch (1.49, 1.92, 0.96), but a sample then
  depends on its batch.
  Default snr: 0.16 (VE: alpha = 1), 0.01 (VP, sub-VP).

Orders (they differ only at the ends of the chain of N levels t_0 = T > ... > t_{N-1} = eps):
  ``"predictor_first"`` (default; Algorithm 1 of Song et al. 2021): x at t_0 from the prior; for
  each level t_1, ..., t_{N-1}: a predictor step onto it, then M corrector steps at it. N - 1
  rows; the output is at t = eps (alpha_next, sigma_next = alpha(eps), sigma(eps) at the end).
  ``"corrector_first"`` (score_sde's loop): at each level t_0, ..., t_{N-1}: M corrector steps,
  then a predictor step to the next level; the last one goes from eps to the end of the chain
  (t = 0: the data for VP / sub-VP and for the VE ladder, where sigma_{-1} = 0; sigma_min for
  Euler-Maruyama on VE, whose last step ends at t = 0). N rows.
  ``denoise=True`` (score_sde's noise_removal): the last update adds no noise, so the output is
  the last x_mean; alpha_next / sigma_next still name the level that update lands on.
NFE: (N - 1) (1 + M) (predictor_first) or N (1 + M) (corrector_first); M = 0 without corrector.
Noise per step: 1 + M draws (the predictor's, then one per corrector step).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._array import array_namespace, expand_to, linear_combination, sum_flat
from ..process import (
    capabilities, drift_coefficients, is_discrete, require, require_continuous, start_time, time_from_log_snr, time_range,
)
from ._base import (
    resolve_prediction,
    ModelArgs,
    SampleState,
    final_x,
    init_state,
    Sampler,
    check_choice,
    check_positive,
    check_steps,
    flag_nonfinite,
    model_score,
)
from .grid import check_times, time_grid

__all__ = ["langevin", "annealed_langevin", "euler_maruyama", "reverse_diffusion", "ancestral", "pc", "FACTORIES"]

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral")
CORRECTORS = (None, "langevin")
ORDERS = ("predictor_first", "corrector_first")
NORMS = ("expected", "per_sample", "batch_mean")




def _host(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# ------------------------------------------------------------------------------------ Langevin


class LangevinPlan(NamedTuple):
    index: np.ndarray
    t_in: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    step_size: np.ndarray
    noise_scale: np.ndarray
    alpha_next: np.ndarray
    sigma_next: np.ndarray


def _langevin_step(model, prediction: str):
    """x <- x + a s(x) + c z (c = sqrt(2a), or 0 for a denoising step)."""

    def step(state: SampleState, plan_i: tuple, noise_i: Any, args: ModelArgs) -> SampleState:
        p = LangevinPlan(*plan_i)
        s, _ = model_score(model, args, state.x, p.t_in, p.alpha, p.sigma, prediction)
        x = state.x + p.step_size * s + p.noise_scale * noise_i[:, 0, ...]
        return SampleState(x, flag_nonfinite(state.bad_step, x, p.index))

    return step


def langevin(model, process=None, *, step_size, steps=1000, t_in=None, prediction=None) -> Sampler:
    """Unadjusted Langevin dynamics x <- x + a s(x) + sqrt(2 a) z at one noise level.

    The model is called with ``t_in`` (default: the process's model time at t_min; 0.0 without a
    process). Without a process only ``prediction="score"`` is possible (no alpha, sigma to
    convert with). Its stationary law is the target up to an O(a) bias. Continuous-time processes
    only (a GaussianDiffusion has no continuous time to hold fixed: use its ``ddpm`` sampler).
    """
    if process is not None and is_discrete(process):
        raise TypeError(
            "the 'langevin' sampler holds a continuous time fixed and needs a continuous-time process or process=None; "
            f"got the discrete process {type(process).__name__} (use 'ddpm' or 'ddim')"
        )
    a = check_positive(step_size, "step_size")
    steps = check_steps(steps)
    prediction = resolve_prediction(model, process, prediction, "score")
    if process is None:
        if prediction != "score":
            raise ValueError(f"prediction {prediction!r} needs a process to convert to a score; got process=None")
        t_in = 0.0 if t_in is None else float(t_in)
        t, alpha, sigma = t_in, 1.0, 0.0
    else:
        if t_in is None:
            t_in = float(np.asarray(process.model_time(np.asarray(float(time_range(process)[0])))))
        t = float(np.asarray(process.time_from_model_time(np.asarray(float(t_in)))))
        alpha = float(np.asarray(process.alpha(np.asarray(t))))
        sigma = float(np.asarray(process.sigma(np.asarray(t))))
        if prediction not in ("score",) and not sigma > 0:
            raise ValueError(f"prediction {prediction!r} needs sigma > 0 at t_in={t_in!r}; use prediction='score'")
    full = lambda v: np.full(steps, v, dtype=np.float64)
    plan = LangevinPlan(
        np.arange(steps), full(t_in), full(alpha), full(sigma), full(a), full(math.sqrt(2.0 * a)), full(alpha), full(sigma)
    )
    return Sampler("langevin", plan, init_state, _langevin_step(model, prediction), final_x, 1, steps, full(t))


def annealed_langevin(
    model,
    process,
    *,
    num_scales=None,
    sigmas=None,
    steps_per_level=5,
    step_lr=6.2e-6,
    final_denoise=True,
    prediction=None,
) -> Sampler:
    """NCSN's annealed Langevin dynamics on a VE process (Song & Ermon 2019, Alg. 1; 2020).

    Levels sigma_1 > ... > sigma_L: ncsn_sigmas(sigma_max, sigma_min, num_scales) = sigma(t) at
    t = linspace(1, 0, L) (``num_scales=None``: L = process.N, the process's own ladder). Each
    level: ``steps_per_level`` steps with a_i = step_lr sigma_i^2 / sigma_L^2; the model receives
    sigma_i (VE's model time). Defaults are NCSNv2's CIFAR-10 values (T = 5, eps = 6.2e-6 with
    sigma_L = 0.01): step_lr / sigma_L^2 is the relative step size, tune it for other ladders.
    ``final_denoise``: x + sigma_L^2 s(x, sigma_L) at the end (NCSNv2), one more NFE.
    NFE: L * steps_per_level (+ 1). ``sigmas`` gives the ladder explicitly (strictly decreasing, within
    the process's range) in place of ``num_scales``, e.g. to reproduce another code's levels.
    """
    require_continuous(process, "annealed_langevin", "it needs a noise ladder of a VE process")
    if np.any(_host(process.alpha(np.array(time_range(process), dtype=np.float64))) != 1.0):
        raise TypeError(
            f"annealed_langevin needs a variance-exploding process (alpha(t) = 1: a noise ladder); got process="
            f"{type(process).__name__}"
        )
    if sigmas is not None:
        if num_scales is not None:
            raise ValueError("pass either num_scales or sigmas (the explicit ladder), not both")
        s_levels = np.asarray(sigmas, dtype=np.float64)
        if s_levels.ndim != 1 or s_levels.shape[0] < 2 or not np.all(s_levels > 0) or not np.all(np.diff(s_levels) < 0):
            raise ValueError(f"sigmas must be a strictly decreasing 1-D sequence of at least 2 positive levels; got {sigmas!r}")
        # alpha = 1: log-SNR = -2 log sigma
        t_levels = check_times(process, time_from_log_snr(process, -2.0 * np.log(s_levels)), "sigmas' times")
        L = t_levels.shape[0]
    else:
        if num_scales is None and getattr(process, "N", None) is None:
            raise TypeError(f"annealed_langevin needs num_scales: {type(process).__name__} has no N (levels of its ladder)")
        L = process.N if num_scales is None else check_steps(num_scales, "num_scales")
        if L < 2:
            raise ValueError(f"num_scales must be at least 2 (a ladder from sigma_max to sigma_min); got {num_scales!r}")
        t_levels = np.linspace(time_range(process)[1], time_range(process)[0], L)
    T_each = check_steps(steps_per_level, "steps_per_level")
    lr = check_positive(step_lr, "step_lr")
    prediction = resolve_prediction(model, process, prediction, "score")
    sig = _host(process.sigma(t_levels))
    t = np.repeat(t_levels, T_each)
    a = lr * (np.repeat(sig, T_each) / sig[-1]) ** 2
    noise = np.sqrt(2.0 * a)
    if final_denoise:
        t = np.append(t, t_levels[-1])
        a = np.append(a, sig[-1] ** 2)
        noise = np.append(noise, 0.0)
    n = t.shape[0]
    sigma = _host(process.sigma(t))
    alpha = _host(process.alpha(t))
    sigma_next = sigma.copy()
    if final_denoise:
        sigma_next[-1] = 0.0  # x + sigma_L^2 s is the posterior mean: no noise left
    plan = LangevinPlan(np.arange(n), _host(process.model_time(t)), alpha, sigma, a, noise, alpha, sigma_next)
    return Sampler("annealed_langevin", plan, init_state, _langevin_step(model, prediction), final_x, 1, n, t)


# --------------------------------------------------------------------------- predictor-corrector


class PCPlan(NamedTuple):
    """Predictor: x_mean = c_x x + c_s s(x, t_in), x = x_mean + c_z z. Corrector at ct_in with
    eps = c_scale (||z|| / ||s||)^2 (c_scale = 2 alpha_i snr^2); c_last scales the noise of the
    last corrector step (0 for denoise)."""

    index: np.ndarray
    t_in: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    c_x: np.ndarray
    c_s: np.ndarray
    c_z: np.ndarray
    ct_in: np.ndarray
    c_alpha: np.ndarray
    c_sigma: np.ndarray
    c_scale: np.ndarray
    c_last: np.ndarray
    alpha_next: np.ndarray
    sigma_next: np.ndarray


def _check_sde(process: Any, name: str) -> None:
    require_continuous(process, name, "for a GaussianDiffusion use 'ddpm' or 'ddim'")


def _chain(process: Any, n: int) -> Any:
    """The process's discretisation with N = n levels (the process itself when n == process.N):
    the capability "discretize" (``process.discretization(n)``), as score_sde changes step counts."""
    return process.discretization(n)


def _predictor_coefficients(predictor: str, process: Any, chain: Any, t: np.ndarray, t_next: np.ndarray):
    """(c_x, c_s, c_z) of x_mean = c_x x + c_s s, x = x_mean + c_z z, for steps t -> t_next."""
    if predictor == "euler_maruyama":
        f, g2 = (_host(v) for v in drift_coefficients(process, np.asarray(t, dtype=np.float64)))
        dt = t - t_next
        return 1.0 - f * dt, g2 * dt, np.sqrt(g2 * dt)
    if predictor == "reverse_diffusion":
        ones = np.ones((t.shape[0], 1))
        f, G = chain.discretize(ones, t)
        f, G = _host(f)[:, 0], _host(G)
        return 1.0 - f, G * G, G
    return tuple(_host(c) for c in chain.ancestral_coefficients(t))


def _corrector_alpha(process: Any, chain: Any, t: np.ndarray, N: int) -> np.ndarray:
    """score_sde's alpha_i: the chain's own (``corrector_alpha``: 1 - beta_i on VP and sub-VP, 1 on VE);
    for a process without a chain, the one-level signal ratio (alpha(t) / alpha(t - dt))^2 with dt =
    (T - t_min) / (N - 1) -- 1 - beta_i of the VP chain, 1 where alpha is constant."""
    own = getattr(chain, "corrector_alpha", None) if chain is not None else None
    if callable(own):
        return _host(own(t))
    lo, hi = time_range(process)
    t_prev = np.clip(t - (hi - lo) / (N - 1), lo, hi)
    return np.minimum((_host(process.alpha(t)) / _host(process.alpha(t_prev))) ** 2, 1.0)


def _pc_step(model, prediction: str, M: int, predictor_first: bool, norm: str):
    def correct(x: Any, p: PCPlan, noise_i: Any, args: ModelArgs) -> Any:
        xp = array_namespace(x)
        for m in range(M):
            z = noise_i[:, 1 + m, ...]
            s, _ = model_score(model, args, x, p.ct_in, p.c_alpha, p.c_sigma, prediction)
            if norm == "expected":  # eps_i = 2 alpha_i (snr sigma_i)^2, folded into c_scale: no state in it
                step = p.c_scale
            else:
                if norm == "per_sample":
                    ratio = expand_to(sum_flat(z * z) / sum_flat(s * s), x)
                else:  # score_sde: mean norms over the batch (couples the samples)
                    ratio = (xp.mean(xp.sqrt(sum_flat(z * z))) / xp.mean(xp.sqrt(sum_flat(s * s)))) ** 2
                step = p.c_scale * ratio
            noise = xp.sqrt(2.0 * step) * z
            x = x + step * s + (p.c_last * noise if m == M - 1 else noise)
        return x

    def step(state: SampleState, plan_i: tuple, noise_i: Any, args: ModelArgs) -> SampleState:
        p = PCPlan(*plan_i)
        x = state.x
        if M and not predictor_first:
            x = correct(x, p, noise_i, args)
        s, _ = model_score(model, args, x, p.t_in, p.alpha, p.sigma, prediction)
        x = linear_combination(p.c_x, x, p.c_s, s, p.c_z, noise_i[:, 0, ...])
        if M and predictor_first:
            x = correct(x, p, noise_i, args)
        return SampleState(x, flag_nonfinite(state.bad_step, x, p.index))

    return step


def _predictor_corrector(
    name: str,
    model,
    process,
    *,
    predictor: str,
    corrector: str | None,
    steps: Any,
    snr: Any,
    corrector_steps: Any,
    order: str,
    norm: str,
    denoise: bool,
    eps: Any,
    prediction: str,
    spacing: str = "linspace",
    times: Any = None,
) -> Sampler:
    _check_sde(process, name)
    predictor = check_choice(predictor, PREDICTORS, "predictor")
    corrector = check_choice(corrector, CORRECTORS, "corrector")
    order = check_choice(order, ORDERS, "order")
    norm = check_choice(norm, NORMS, "norm")
    prediction = resolve_prediction(model, process, prediction, "score")
    if predictor == "ancestral":
        require(process, "ancestral", name, "the ancestral predictor needs a discrete chain such as VESDE's or VPSDE's; "
                "sub-VP has none: use 'reverse_diffusion' or 'euler_maruyama'")
    if predictor == "reverse_diffusion":
        require(process, "discretize", name, "the reverse-diffusion predictor needs score_sde's discretize; "
                "use predictor='euler_maruyama'")
    if times is not None:
        if predictor != "euler_maruyama":
            raise ValueError(
                f"times= needs predictor='euler_maruyama' in the {name!r} sampler: the {predictor!r} predictor is tied "
                "to the process's uniform chain of N levels (pass steps instead)"
            )
        steps = len(np.asarray(times).reshape(-1))
    if steps is None and getattr(process, "N", None) is None:
        raise TypeError(f"the {name!r} sampler needs steps: {type(process).__name__} has no N (its default number of levels)")
    N = process.N if steps is None else check_steps(steps)
    if N < 2:
        raise ValueError(f"steps must be an integer >= 2 (the number of noise levels from T to eps); got {steps!r}")
    M = 0 if corrector is None else check_steps(corrector_steps, "corrector_steps")
    if snr is None:  # score_sde's: 0.16 for VE (alpha = 1), 0.01 for VP and sub-VP
        snr = 0.16 if np.all(_host(process.alpha(np.array(time_range(process), dtype=np.float64))) == 1.0) else 0.01
    snr = check_positive(snr, "snr")

    t = time_grid(process, N, spacing=spacing, eps=eps, start=start_time(process, name, prediction, needs_f=True), times=times).times
    if times is not None:
        start_time(process, name, prediction, needs_f=True, t_max=t[0])
    predictor_first = order == "predictor_first"
    if predictor_first:
        t_pred, t_next = t[:-1], t[1:]
    else:
        t_pred, t_next = t, np.append(t[1:], 0.0)
    t_corr = t_next if predictor_first else t_pred
    has_chain = "discretize" in capabilities(process)
    chain = _chain(process, N) if has_chain and (predictor != "euler_maruyama" or M) else (process if has_chain else None)
    if predictor != "euler_maruyama" and getattr(chain, "discrete_betas", None) is not None:
        if not np.max(chain.discrete_betas) < 1.0:
            raise ValueError(
                f"steps={N} is too few for the {name!r} sampler on a VP chain: its largest beta, beta_max/N = "
                f"{np.max(chain.discrete_betas):g}, must be < 1 (use steps > {process.beta_1:g}, or 'euler_maruyama')"
            )
    c_x, c_s, c_z = _predictor_coefficients(predictor, process, chain, t_pred, t_next)
    rows = t_pred.shape[0]
    alpha_next = _host(process.alpha(t_next))
    sigma_next = _host(process.sigma(t_next))
    if not predictor_first and predictor != "euler_maruyama":
        alpha_next[-1], sigma_next[-1] = 1.0, 0.0  # the chain's end: the data (VE: sigma_{-1} = 0)
    c_last = np.ones(rows)
    if M:
        lang_alpha = _corrector_alpha(process, chain, t_corr, N)
        if not np.all(lang_alpha > 0):
            raise ValueError(
                f"steps={N} is too few for the Langevin corrector on a VP chain: alpha_i = 1 - beta_i must be > 0 "
                f"(use steps > {getattr(process, 'beta_1', 0):g})"
            )
        c_scale = 2.0 * lang_alpha * snr**2
        if norm == "expected":  # ||z||^2 -> D, ||s||^2 -> D / sigma^2: eps_i = 2 alpha_i (snr sigma_i)^2
            c_scale = c_scale * _host(process.sigma(t_corr)) ** 2
    else:
        c_scale = np.zeros(rows)
    if denoise:
        if predictor_first and M:
            c_last[-1] = 0.0
        else:
            c_z = c_z.copy()
            c_z[-1] = 0.0
    columns = (c_x, c_s, c_z, c_scale)
    if not all(np.all(np.isfinite(c)) for c in columns):
        raise ValueError(f"the {name!r} sampler's coefficients are not finite for steps={N}, eps={eps!r}")
    plan = PCPlan(
        index=np.arange(rows),
        t_in=_host(process.model_time(t_pred)),
        alpha=_host(process.alpha(t_pred)),
        sigma=_host(process.sigma(t_pred)),
        c_x=c_x,
        c_s=c_s,
        c_z=c_z,
        ct_in=_host(process.model_time(t_corr)),
        c_alpha=_host(process.alpha(t_corr)),
        c_sigma=_host(process.sigma(t_corr)),
        c_scale=c_scale,
        c_last=c_last,
        alpha_next=alpha_next,
        sigma_next=sigma_next,
    )
    step = _pc_step(model, prediction, M, predictor_first, norm)
    return Sampler(name, plan, init_state, step, final_x, 1 + M, rows * (1 + M), np.asarray(t_pred, dtype=np.float64))


def _predictor_sampler(predictor: str):
    def factory(
        model,
        process,
        *,
        steps=None,
        corrector=None,
        snr=None,
        corrector_steps=1,
        order="predictor_first",
        norm="expected",
        denoise=True,
        eps=None,
        prediction=None,
        spacing="linspace",
        times=None,
    ) -> Sampler:
        return _predictor_corrector(
            predictor, model, process, predictor=predictor, corrector=corrector, steps=steps, snr=snr,
            corrector_steps=corrector_steps, order=order, norm=norm, denoise=denoise, eps=eps,
            prediction=prediction, spacing=spacing, times=times,
        )

    factory.__name__ = factory.__qualname__ = predictor
    factory.__doc__ = (
        f"The {predictor!r} predictor over ``steps`` noise levels (default process.N), optionally with a "
        "Langevin corrector (``corrector='langevin'``); see the module docstring."
    )
    return factory


euler_maruyama = _predictor_sampler("euler_maruyama")
reverse_diffusion = _predictor_sampler("reverse_diffusion")
ancestral = _predictor_sampler("ancestral")


def pc(
    model,
    process,
    *,
    predictor="reverse_diffusion",
    corrector="langevin",
    steps=None,
    snr=None,
    corrector_steps=1,
    order="predictor_first",
    norm="expected",
    denoise=True,
    eps=None,
    prediction=None,
    spacing="linspace",
    times=None,
) -> Sampler:
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 1): ``predictor`` one of
    'euler_maruyama', 'reverse_diffusion' (default), 'ancestral'; Langevin corrector with
    ``snr`` (default 0.16 VE, 0.01 VP / sub-VP) and ``corrector_steps`` M. See the module docstring."""
    return _predictor_corrector(
        "pc", model, process, predictor=predictor, corrector=corrector, steps=steps, snr=snr,
        corrector_steps=corrector_steps, order=order, norm=norm, denoise=denoise, eps=eps,
        prediction=prediction, spacing=spacing, times=times,
    )


FACTORIES = {
    "langevin": langevin,
    "annealed_langevin": annealed_langevin,
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "pc": pc,
}
