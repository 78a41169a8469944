"""Deterministic samplers: the probability-flow ODE (fixed-step Euler, Heun, RK4 and adaptive
Dormand-Prince), EDM's Heun sampler and DPM-Solver++(2M).

- Probability-flow ODE (Song et al. 2021, eq. 13) of an SDE dx = f(t) x dt + g(t) dw:
  dx/dt = f(t) x - 1/2 g(t)^2 s(x, t), the score s from the model output (diffcore.parametrization).
  Integrated backwards from T to eps. Fixed steps: ``steps`` intervals of ``linspace(T, eps,
  steps + 1)``; each step is one explicit Runge-Kutta step (Euler: 1 stage, Heun's trapezoid: 2,
  classic RK4: 4) whose stage coefficients f, g^2, alpha, sigma and network time are precomputed
  on the host. ``denoise=True`` finishes with Tweedie's x_0 at eps (score_sde's ``denoise``).
  Adaptive: :func:`diffcore.samplers.solvers.dopri5`, a batch of independent solves.
- EDM (Karras et al. 2022, Algorithm 1; Algorithm 2 with churn): Heun's method on
  dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ in the VE-equivalent variables x~ = x / alpha,
  sigma~ = sigma / alpha, over ``karras_sigmas`` (rho = 7) and a final sigma~ = 0 reached by Euler.
  Any process of the interface is mapped to these variables: each sigma~ goes back to a process
  time through :func:`time_from_sigma_ratio`, giving the alpha and network time of the model call.
- DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep, data (x_0) predictions, in Lu et
  al.'s lambda = log(alpha / sigma) (half the log-SNR):
  x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h_i} - 1) D_i,
  D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1}, r_i = h_{i-1} / h_i, h_i = lambda_{i+1} - lambda_i;
  the first step first order.

All of them are written once against the process interface; every plan carries ``index``,
``alpha_next`` and ``sigma_next`` (the adaptive solver has no fixed grid and no per-step projection,
so it refuses inpainting).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from .._array import array_device, array_namespace, default_dtype, expand_to
from ..backends import backend_for, check_max_steps
from ..models import ModelFn, split_model
from ..parametrization import to_eps, to_score, to_x0
from ..process import (
    host_coefficients,
    host_log_snr,
    is_discrete,
    pf_velocity,
    require_continuous,
    start_time,
    time_from_log_snr,
    time_range,
)
from ..schedules import karras_sigmas
from ._base import (
    resolve_prediction,
    ModelArgs,
    SampleState,
    Kept,
    final_x,
    init_state,
    Sampler,
    call_model,
    check_choice,
    check_positive,
    check_steps,
    denoise as _denoise,  # ``denoise`` is also the samplers' option for the final Tweedie step
    flag_nonfinite,
    initial_flag,
)
from .grid import SPACINGS, _zero_noise_at_start, check_times, default_eps, end_time, time_grid
from ..odeint import EULER, HEUN, RK4, Tableau, dopri5, rk_stages

__all__ = [
    "ode_euler",
    "ode_heun",
    "ode_rk4",
    "ode_dopri5",
    "edm_heun",
    "dpmpp_2m",
    "time_from_sigma_ratio",
    "pf_ode_drift",
    "FACTORIES",
]




# ------------------------------------------------------------------------------------ helpers


def _check_sde(process: Any, sampler: str) -> None:
    require_continuous(
        process, sampler,
        "it integrates the probability-flow ODE of an SDE; for a GaussianDiffusion use 'ddim', 'edm_heun' or 'dpmpp_2m'",
    )


def _host(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _sde_coefficients(process: Any, t: np.ndarray) -> dict:
    """f, g^2 (derived from alpha, sigma and their derivatives), alpha, sigma and the network time
    at host times ``t`` (float64 NumPy)."""
    out = host_coefficients(process, t)
    out["t_in"] = _host(out["t_in"])
    return out


def _split_drive(final_step: Callable[..., Any]) -> Callable[..., Any]:
    """A driver running ``step`` over all rows but the last and ``final_step`` on the last.

    Used where the last row needs fewer model calls than the others (EDM's final Euler step,
    the Tweedie denoising row): running ``step`` on it gives the same numbers with wasted calls.
    The last row's noise comes from ``fold_in(fold_in(key, n - 1), 0)``.
    A wrapped ``step`` (inpainting's projection) is not applied on the last row: that row goes to
    sigma = 0, where inpainting's ``result`` puts the known part back exactly. A state wrapped in
    :class:`Kept` (``sample(..., keep=...)``) runs the last row on its inner state (the final state
    is kept by the caller).
    """

    def drive(step, state, plan, *, backend, key=None, noise_shape=None, sample_ids=None, progress=None, args=None):
        bk = backend
        n = int(plan[0].shape[0])
        if n > 1:
            head = tuple(p[: n - 1] for p in plan)
            inner = None if progress is None else (lambda done, total: progress(done, n))
            state = bk.loop(
                step, state, head, key=key, noise_shape=noise_shape, sample_ids=sample_ids, progress=inner, args=args
            )
        tail = tuple(p[n - 1 :] for p in plan)
        tail_key = None if noise_shape is None else bk.fold_in(key, n - 1)
        kept = state if isinstance(state, Kept) else None  # kept states: the caller records the final one
        state = bk.loop(
            final_step, state if kept is None else kept.state, tail, key=tail_key, noise_shape=noise_shape,
            sample_ids=sample_ids, args=args,
        )
        if kept is not None:
            state = kept._replace(state=state)
        if progress is not None:
            progress(n, n)
        return state

    return drive


# ------------------------------------------------------------------ sigma~ -> process time


def time_from_sigma_ratio(process: Any, s: Any) -> np.ndarray:
    """The process time whose sigma / alpha equals ``s`` (host side, float64 NumPy): the process's
    inverse of the noise level at log-SNR -2 log s (:func:`diffcore.process.time_from_log_snr`:
    closed forms for VE, VP and sub-VP, the nearest step of a discrete chain -- k-diffusion's
    ``quantize=True`` -- and float64 bisection for any other process).

    Values outside the process's range raise; tiny rounding past an end is clipped.
    """
    s = np.asarray(s, dtype=np.float64)
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"s (sigma / alpha) must be finite and >= 0; got values from {s.min()} to {s.max()}")
    with np.errstate(divide="ignore"):
        lam = -2.0 * np.log(s)
    try:
        return time_from_log_snr(process, lam)
    except ValueError:
        lo, hi = (float(v) for v in _sigma_ratio_range(process))
        T = time_range(process)[1]
        raise ValueError(
            f"s (sigma / alpha) must lie in [{lo:g}, {hi:g}] for {type(process).__name__} (times "
            f"{time_range(process)[0]:g}..{T:g}); got values from {float(s.min()):g} to {float(s.max()):g}"
        ) from None


def _sigma_ratio_range(process: Any) -> tuple[float, float]:
    """(sigma~ at the clean end, sigma~ at the noisy end) of a process: time 0 .. T, or steps 0 .. T-1."""
    ends = np.array(time_range(process))
    with np.errstate(divide="ignore"):
        ratio = _host(process.sigma(ends)) / _host(process.alpha(ends))
    return float(ratio[0]), float(ratio[1])


def _sigma_ratio_coefficients(process: Any, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, alpha, network time) for sigma~ values ``s`` > 0.

    SDEs: alpha(t(s)). GaussianDiffusion: the nearest step's network time but alpha = 1 / sqrt(1 + s^2)
    of the continuous s (k-diffusion's c_in), so x = alpha x~ is exactly at noise level s.
    """
    t = time_from_sigma_ratio(process, s)
    t_in = np.asarray(process.model_time(t))
    if is_discrete(process):
        alpha = 1.0 / np.sqrt(1.0 + s * s)
    else:
        alpha = _host(process.alpha(t))
    return t, alpha, t_in


# ------------------------------------------------------------------- PF-ODE, fixed steps

# The explicit Runge-Kutta tableaux of the fixed-step samplers (diffcore.odeint, one engine)
_TABLEAUX = {"euler": EULER, "heun": HEUN, "rk4": RK4}


def _stage_inputs(tableau: Tableau) -> list:
    """(i, j) of the nonzero entries of the stage matrix: the plan's columns a_i_j = A_ij dt."""
    return [(i, j) for i, row in enumerate(tableau.A) for j, a in enumerate(row) if a != 0.0]


def _rk_plan_class(tableau: Tableau) -> type:
    stages = len(tableau.c)
    fields = [("index", np.ndarray), ("t", np.ndarray), ("t_next", np.ndarray), ("dt", np.ndarray)]
    for k in range(stages):
        fields += [(f"{name}_{k}", np.ndarray) for name in ("t_in", "alpha", "sigma", "d_alpha", "d_sigma")]
    fields += [(f"a_{i}_{j}", np.ndarray) for i, j in _stage_inputs(tableau)]
    fields += [(f"b_{k}", np.ndarray) for k in range(stages)]
    fields += [("alpha_next", np.ndarray), ("sigma_next", np.ndarray)]
    return NamedTuple(f"ODE{tableau.name.capitalize()}Plan", fields)


def _fixed_step_ode(method: str, model, process, *, steps, eps, denoise_end, prediction, spacing="linspace", times=None) -> Sampler:
    """Explicit RK of the PF-ODE on ``steps + 1`` times from the start (T, or below where alpha(T) = 0
    and the prediction cannot give x_0 there) to eps, uniform in t (``spacing="linspace"``) or in
    log-SNR (``"logsnr"``).

    Row i is one RK step from t_i to t_{i+1}: stage k is evaluated at t_i + c_k dt (columns
    ``t_in_k, alpha_k, sigma_k, d_alpha_k, d_sigma_k``) with input x + a_k K_{k-1} (a_k = tableau *
    dt) and slope K_k = alpha'_k x0_hat + sigma'_k eps_hat (the PF-ODE velocity, finite at alpha = 0
    for x0 / v / u predictions); the step returns x + sum_k b_k K_k (b_k = weights * dt). With
    ``denoise`` one more row maps x at eps to Tweedie's x_0 in the same form: one stage with b_0 = 1,
    d_alpha_0 = 1 - alpha and d_sigma_0 = -sigma (x + K_0 = x0_hat since x = alpha x0_hat + sigma
    eps_hat), the other stages weighted 0; its ``alpha_next``, ``sigma_next`` are 1, 0. The sampler's
    driver runs that row with one model call; ``step`` on it gives the same numbers with extra
    (unused) calls.
    """
    name = f"ode_{method}"
    _check_sde(process, name)
    steps = check_steps(steps)
    eps = end_time(process, eps)
    prediction = resolve_prediction(model, process, prediction, "eps")
    tableau = _TABLEAUX[method]
    c, b, S = tableau.c, tableau.b, len(tableau.c)
    entries = _stage_inputs(tableau)
    Plan = _rk_plan_class(tableau)

    check_choice(spacing, SPACINGS, "spacing")
    if times is not None:  # an explicit grid of steps + 1 points, start and end included
        t_grid = check_times(process, times)
        if t_grid.shape[0] < 2:
            raise ValueError(f"times must hold at least 2 times (one step) for {name}; got {t_grid.tolist()}")
        start_time(process, name, prediction, t_max=t_grid[0])
        steps, eps = t_grid.shape[0] - 1, float(t_grid[-1])
    else:
        t_start = start_time(process, name, prediction)
        t_grid = time_grid(process, steps + 1, spacing=spacing, eps=eps, start=t_start).times
    t, t_next = t_grid[:-1], t_grid[1:]
    dt = t_next - t
    cols: dict[str, np.ndarray] = {"index": np.arange(steps), "t": t, "t_next": t_next, "dt": dt}
    for k in range(S):
        tk = t_next.copy() if c[k] == 1.0 else t + c[k] * dt  # the last stage lands exactly on t_next
        coef = _sde_coefficients(process, tk)
        for key in ("t_in", "alpha", "sigma", "d_alpha", "d_sigma"):
            cols[f"{key}_{k}"] = coef[key]
    for i, j in entries:
        cols[f"a_{i}_{j}"] = tableau.A[i][j] * dt
    for k in range(S):
        cols[f"b_{k}"] = b[k] * dt
    end = _sde_coefficients(process, np.array([eps]))
    cols["alpha_next"] = np.asarray(process.alpha(t_next), dtype=np.float64)
    cols["sigma_next"] = np.asarray(process.sigma(t_next), dtype=np.float64)
    times = t.copy()
    if denoise_end:
        alpha_e, sigma_e = end["alpha"][0], end["sigma"][0]
        row = {"index": steps, "t": eps, "t_next": eps, "dt": 0.0, "alpha_next": 1.0, "sigma_next": 0.0}
        for k in range(S):
            for key in ("t_in", "alpha", "sigma", "d_alpha", "d_sigma"):
                row[f"{key}_{k}"] = end[key][0]
        row["d_alpha_0"] = 1.0 - alpha_e  # x + (1 - alpha) x0 - sigma eps = x0 (x = alpha x0 + sigma eps)
        row["d_sigma_0"] = -sigma_e
        for i, j in entries:
            row[f"a_{i}_{j}"] = 0.0
        for k in range(S):
            row[f"b_{k}"] = 1.0 if k == 0 else 0.0
        cols = {key: np.append(col, row[key]) for key, col in cols.items()}
        times = np.append(times, eps)
    plan = Plan(**{key: (col.astype(np.int64) if key == "index" else np.asarray(col, dtype=np.float64)) for key, col in cols.items()})

    def make_step(used: int):
        def step(state: SampleState, plan_i: tuple, noise_i: Any, args: ModelArgs) -> SampleState:
            p = Plan(*plan_i)

            def slope(k: int, y: tuple) -> tuple:
                xk = y[0]
                out = call_model(model, args, xk, getattr(p, f"t_in_{k}"))
                a_k, s_k = getattr(p, f"alpha_{k}"), getattr(p, f"sigma_{k}")
                x0 = to_x0(out, prediction, xk, a_k, s_k)
                eps = to_eps(out, prediction, xk, a_k, s_k)
                return (pf_velocity(getattr(p, f"d_alpha_{k}"), getattr(p, f"d_sigma_{k}"), x0, eps),)

            A = [[(j, getattr(p, f"a_{i}_{j}")) for ii, j in entries if ii == i] for i in range(used)]
            b_used = [(k, getattr(p, f"b_{k}")) for k in range(used)]
            (x_next,), _ = rk_stages(slope, (state.x,), A, b_used)
            return SampleState(x_next, flag_nonfinite(state.bad_step, x_next, p.index))

        return step

    step = make_step(S)
    drive = _split_drive(make_step(1)) if denoise_end and S > 1 else None
    nfe = steps * S + (1 if denoise_end else 0)
    return Sampler(name, plan, init_state, step, final_x, 0, nfe, times, drive)


def ode_euler(model, process, *, steps=100, eps=None, denoise=False, prediction=None, spacing="linspace", times=None) -> Sampler:
    """Euler's method on the probability-flow ODE (order 1; NFE = steps [+1 with ``denoise``])."""
    return _fixed_step_ode("euler", model, process, steps=steps, eps=eps, denoise_end=denoise, prediction=prediction, spacing=spacing, times=times)


def ode_heun(model, process, *, steps=50, eps=None, denoise=False, prediction=None, spacing="logsnr", times=None) -> Sampler:
    """Heun's (explicit trapezoidal) method on the PF-ODE (order 2; NFE = 2 steps [+1]); by default on
    the log-SNR grid, which measured best for it (docs/samplers.md; Euler and RK4 measured best on
    the linspace grid and keep it)."""
    return _fixed_step_ode("heun", model, process, steps=steps, eps=eps, denoise_end=denoise, prediction=prediction, spacing=spacing, times=times)


def ode_rk4(model, process, *, steps=25, eps=None, denoise=False, prediction=None, spacing="linspace", times=None) -> Sampler:
    """The classic 4-stage Runge-Kutta method on the PF-ODE (order 4; NFE = 4 steps [+1])."""
    return _fixed_step_ode("rk4", model, process, steps=steps, eps=eps, denoise_end=denoise, prediction=prediction, spacing=spacing, times=times)


# --------------------------------------------------------------------- PF-ODE, adaptive


def pf_ode_drift(model: Callable[..., Any], process: Any, prediction: str) -> Callable[..., Any]:
    """fn(t_vec, x, args) = alpha'(t) x0_hat + sigma'(t) eps_hat (= f x - 1/2 g^2 s), the
    probability-flow drift with x0_hat, eps_hat from ``model`` called with ``args`` (one time per
    example); finite at alpha = 0 for predictions that give x_0 there (x0, v, u). The samplers and the
    likelihood share it. A model that is not split yet is split here, and ``args`` defaults to its
    own weights (for calling the drift outside a loop)."""
    default_args = None
    if not isinstance(model, ModelFn):
        model, weights = split_model(model)
        default_args = ModelArgs(weights)

    def fn(t: Any, x: Any, args: ModelArgs = default_args) -> Any:
        out = call_model(model, args, x, process.model_time(t))
        alpha = expand_to(process.alpha(t, dtype=x.dtype), x)
        sigma = expand_to(process.sigma(t, dtype=x.dtype), x)
        d_alpha = expand_to(process.alpha_prime(t, dtype=x.dtype), x)
        d_sigma = expand_to(process.sigma_prime(t, dtype=x.dtype), x)
        x0 = to_x0(out, prediction, x, alpha, sigma)
        eps = to_eps(out, prediction, x, alpha, sigma)
        return pf_velocity(d_alpha, d_sigma, x0, eps)

    return fn


class DopriPlan(NamedTuple):
    index: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    t_in_end: np.ndarray
    alpha_end: np.ndarray
    sigma_end: np.ndarray


class DopriSampleState(NamedTuple):
    x: Any
    bad_step: Any
    nfe: Any  # 0-D: model calls on the batch
    nfe_per_example: Any  # (B,): calls each example needed


def ode_dopri5(
    model,
    process,
    *,
    rtol=1e-5,
    atol=1e-5,
    eps=None,
    max_steps=10_000,
    h0=None,
    denoise=False,
    prediction=None,
) -> Sampler:
    """The PF-ODE from T to eps with adaptive Dormand-Prince 5(4), each example its own solve.

    score_sde's ODE sampler (RK45, rtol = atol = 1e-5) without its batch-shared step size. NFE is
    counted by the solve (``state.nfe``: model calls on the batch). ``denoise`` adds Tweedie's x_0
    at eps (+1 NFE). The whole solve is one step of a one-row plan, run by the sampler's driver on
    the backend of the state's namespace (``lax.while_loop`` under JAX).
    """
    _check_sde(process, "ode_dopri5")
    rtol = check_positive(rtol, "rtol")
    atol = check_positive(atol, "atol")
    max_steps = check_max_steps(max_steps)
    if h0 is not None:
        h0 = check_positive(h0, "h0")
    eps = end_time(process, eps)
    prediction = resolve_prediction(model, process, prediction, "eps")
    t_start = start_time(process, "ode_dopri5", prediction)
    end = _sde_coefficients(process, np.array([eps]))
    plan = DopriPlan(
        np.array([0]), np.array([t_start]), np.array([eps]), end["t_in"], end["alpha"], end["sigma"]
    )
    drift = pf_ode_drift(model, process, prediction)

    def init(x_T: Any) -> DopriSampleState:
        xp, device = array_namespace(x_T), array_device(x_T)
        idx = default_dtype(xp, "indexing", device)
        zero = xp.asarray(0, dtype=idx, device=device)
        return DopriSampleState(x_T, initial_flag(x_T), zero, xp.zeros((x_T.shape[0],), dtype=idx, device=device))

    def solve(bk: Any, state: DopriSampleState, plan_i: tuple, args: ModelArgs) -> DopriSampleState:
        p = DopriPlan(*plan_i)
        fn = lambda t, x: drift(t, x, args)  # noqa: E731
        sol = dopri5(bk, fn, state.x, p.t0, p.t1, rtol=rtol, atol=atol, max_steps=max_steps, h0=h0, name="x_T")
        x, nfe, per_example = sol.y, state.nfe + sol.nfe_total, state.nfe_per_example + sol.nfe
        if denoise:
            x = _denoise(model, args, x, p.t_in_end, p.alpha_end, p.sigma_end, prediction).x0  # Tweedie
            nfe, per_example = nfe + 1, per_example + 1
        return DopriSampleState(x, flag_nonfinite(state.bad_step, x, p.index), nfe, per_example)

    def step(state: DopriSampleState, plan_i: tuple, noise_i: Any, args: ModelArgs) -> DopriSampleState:
        """The whole solve as one step, with the default backend of the state's arrays."""
        return solve(backend_for(state.x), state, plan_i, args)

    def drive(step_fn, state, plan, *, backend, key=None, noise_shape=None, sample_ids=None, progress=None, args=None):
        if step_fn is not step:
            raise ValueError(
                "ode_dopri5 has no fixed grid of steps to wrap (e.g. for inpainting, which projects after every "
                "step); use a fixed-step sampler such as 'ode_heun', 'edm_heun' or 'dpmpp_2m'"
            )
        state = solve(backend, state, tuple(p[0] for p in plan), args)
        if progress is not None:
            progress(1, 1)
        return state

    return Sampler("ode_dopri5", plan, init, step, final_x, 0, None, np.array([t_start]), drive)


# ------------------------------------------------------------------------------------ EDM


class EDMPlan(NamedTuple):
    index: np.ndarray
    alpha: np.ndarray  # scale of the state at sigma~_i: x~ = x / alpha
    noise_scale: np.ndarray  # S_noise sqrt(s_hat^2 - s_i^2) (churn)
    s_hat: np.ndarray
    t_in_hat: np.ndarray
    alpha_hat: np.ndarray
    s_corr: np.ndarray  # where the corrector evaluates: s_next (s_hat on the last row: unused)
    t_in_corr: np.ndarray
    alpha_corr: np.ndarray
    w_d: np.ndarray  # x~_next = x~_hat + w_d d + w_corr d'
    w_corr: np.ndarray
    ds: np.ndarray  # s_next - s_hat (the Euler predictor)
    alpha_next: np.ndarray
    sigma_next: np.ndarray


def edm_heun(
    model,
    process,
    *,
    steps=18,
    sigma_min=None,
    sigma_max=None,
    rho=7.0,
    eps=None,
    S_churn=0.0,
    S_tmin=0.0,
    S_tmax=math.inf,
    S_noise=1.0,
    clip_denoised=False,
    prediction=None,
    sigmas=None,
) -> Sampler:
    """EDM's sampler (Karras et al. 2022, Algorithm 1; with ``S_churn`` > 0 Algorithm 2).

    ``sigmas``: an explicit descending schedule of sigma~ = sigma / alpha (at least 2 values > 0, a
    trailing 0 allowed) in place of ``steps`` and the Karras schedule, e.g. another library's.

    sigma~_i = karras_sigmas(steps, sigma_min, sigma_max, rho), then sigma~_N = 0; Heun steps,
    the last (to 0) Euler: NFE = 2 steps - 1. The output is the last x_0 prediction. Defaults of
    the sigma~ range: the process's own, sigma~ at ``eps`` .. T (``eps``: 0 for VE, i.e. sigma_min;
    1e-3 for VP / sub-VP) and steps 0 .. T-1 for a GaussianDiffusion (k-diffusion's choice).
    Churn: gamma_i = min(S_churn / N, sqrt 2 - 1) where S_tmin <= sigma~_i <= S_tmax, sigma~_hat
    clipped to the process's largest sigma~ (time T cannot be exceeded).
    """
    N = check_steps(steps)
    prediction = resolve_prediction(model, process, prediction, "eps")
    s_given = None
    if sigmas is not None:
        s_given = _check_sigmas(sigmas)
        N, sigma_min, sigma_max = s_given.shape[0], float(s_given[-1]), float(s_given[0])
    rho = check_positive(rho, "rho")
    S_churn = _check_nonnegative(S_churn, "S_churn")
    S_noise = _check_nonnegative(S_noise, "S_noise")
    S_tmin, S_tmax = float(S_tmin), float(S_tmax)
    if not S_tmin <= S_tmax:
        raise ValueError(f"S_tmin must not exceed S_tmax; got S_tmin={S_tmin}, S_tmax={S_tmax}")
    lo_proc, hi_proc = _sigma_ratio_range(process)
    discrete = is_discrete(process)
    if not discrete:
        if eps is None:
            eps = time_range(process)[0] if not _zero_noise_at_start(process) else default_eps(process)
        eps = end_time(process, eps)
        if not math.isfinite(hi_proc) and sigma_max is None:  # alpha(T) = 0: start at log-SNR -15
            t0 = np.array([start_time(process, "edm_heun", prediction, needs_f=True)])
            sigma_max = float((_host(process.sigma(t0)) / _host(process.alpha(t0)))[0])
        e = np.array([eps])
        default_min = float((_host(process.sigma(e)) / _host(process.alpha(e)))[0])
    else:
        if eps is not None:
            raise ValueError("eps (the end time) applies to continuous-time processes; pass sigma_min for a GaussianDiffusion")
        default_min = lo_proc
    s_min = default_min if sigma_min is None else check_positive(sigma_min, "sigma_min")
    s_max = hi_proc if sigma_max is None else check_positive(sigma_max, "sigma_max")
    if not math.isfinite(s_max):
        raise ValueError(
            "the process reaches sigma/alpha = inf at its noisy end (zero terminal SNR): pass a finite sigma_max"
        )
    if not s_min < s_max:
        raise ValueError(f"sigma_min must be smaller than sigma_max; got sigma_min={s_min:g}, sigma_max={s_max:g}")
    if not discrete:
        for label, v in (("sigma_min", s_min), ("sigma_max", s_max)):
            if v < lo_proc * (1 - 1e-9) or v > hi_proc * (1 + 1e-9):
                raise ValueError(f"{label} must lie in the process's range [{lo_proc:g}, {hi_proc:g}] of sigma/alpha; got {v:g}")

    s = karras_sigmas(N, s_min, s_max, rho) if s_given is None else s_given
    s_next = np.append(s[1:], 0.0)
    gamma = np.where((s >= S_tmin) & (s <= S_tmax), min(S_churn / N, math.sqrt(2.0) - 1.0), 0.0)
    s_hat = np.minimum(s * (1.0 + gamma), max(s_max, hi_proc))
    s_hat = np.maximum(s_hat, s)
    noise_scale = S_noise * np.sqrt(np.clip(s_hat**2 - s**2, 0.0, None))
    t_cur, alpha_cur, _ = _sigma_ratio_coefficients(process, s)
    _, alpha_hat, t_in_hat = _sigma_ratio_coefficients(process, s_hat)
    last = s_next == 0.0
    s_corr = np.where(last, s_hat, s_next)
    _, alpha_corr, t_in_corr = _sigma_ratio_coefficients(process, s_corr)
    ds = s_next - s_hat
    c = np.where(last, 0.0, 0.5)
    alpha_next = np.where(last, 1.0, alpha_corr)
    plan = EDMPlan(
        index=np.arange(N),
        alpha=alpha_cur,
        noise_scale=noise_scale,
        s_hat=s_hat,
        t_in_hat=t_in_hat,
        alpha_hat=alpha_hat,
        s_corr=s_corr,
        t_in_corr=t_in_corr,
        alpha_corr=alpha_corr,
        w_d=ds * (1.0 - c),
        w_corr=ds * c,
        ds=ds,
        alpha_next=alpha_next,
        sigma_next=alpha_next * s_next,
    )
    churn = S_churn > 0 and bool(np.any(noise_scale > 0))

    def x0(args, x_tilde, t_in, alpha, s_):
        return _denoise(model, args, alpha * x_tilde, t_in, alpha, alpha * s_, prediction, clip_denoised)

    def make_step(corrector: bool):
        def step(state: SampleState, plan_i: tuple, noise_i: Any, args: ModelArgs) -> SampleState:
            p = EDMPlan(*plan_i)
            x_tilde = state.x / p.alpha
            if churn:
                x_tilde = x_tilde + p.noise_scale * noise_i[:, 0, ...]
            first = x0(args, x_tilde, p.t_in_hat, p.alpha_hat, p.s_hat)
            d = (x_tilde - first.x0) / p.s_hat
            if corrector:
                x_euler = x_tilde + p.ds * d
                second = x0(args, x_euler, p.t_in_corr, p.alpha_corr, p.s_corr)
                d_corr = (x_euler - second.x0) / p.s_corr
                x_next = x_tilde + p.w_d * d + p.w_corr * d_corr
            else:
                x_next = x_tilde + p.w_d * d
            x_next = p.alpha_next * x_next
            return SampleState(x_next, flag_nonfinite(state.bad_step, x_next, p.index))

        return step

    # EDM starts from pure noise at sigma~_max: x~ = sigma~_max z, i.e. x = alpha sigma~_max z. The prior
    # draw is prior_std z, so it is rescaled (a no-op for VE and ~1 for VP at their own sigma~_max).
    start_scale = float(alpha_cur[0] * s_max / getattr(process, "prior_std", 1.0))

    def init(x_T: Any) -> SampleState:
        return init_state(x_T * start_scale if start_scale != 1.0 else x_T)

    step = make_step(True)
    return Sampler(
        "edm_heun", plan, init, step, final_x, 1 if churn else 0, 2 * N - 1, np.asarray(t_cur, dtype=np.float64),
        _split_drive(make_step(False)),
    )


def _check_sigmas(sigmas: Any) -> np.ndarray:
    """An explicit sigma~ schedule: finite, strictly decreasing, > 0 (one trailing 0 is dropped)."""
    try:
        s = np.asarray(sigmas, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"sigmas must be a 1-D sequence of noise levels; got {type(sigmas).__name__}") from None
    if s.ndim != 1:
        raise ValueError(f"sigmas must be 1-D; got shape {s.shape}")
    if s.shape[0] and s[-1] == 0.0:
        s = s[:-1]
    if s.shape[0] < 2 or not np.all(np.isfinite(s)) or not np.all(s > 0) or not np.all(np.diff(s) < 0):
        raise ValueError(
            "sigmas must hold at least 2 finite values > 0 in strictly decreasing order (a trailing 0 is allowed); "
            f"got {np.asarray(sigmas).tolist()[:10]}"
        )
    return s


def _check_nonnegative(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a non-negative number; got {value!r}") from None
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a non-negative number; got {value!r}")
    return v


# ----------------------------------------------------------------------------- DPM-Solver++


class DPMPlan(NamedTuple):
    index: np.ndarray
    t_in: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    c_x: np.ndarray  # sigma_next / sigma
    c_d: np.ndarray  # -alpha_next (e^{-h} - 1)
    w_cur: np.ndarray  # D = w_cur x0_i + w_prev x0_{i-1}
    w_prev: np.ndarray
    alpha_next: np.ndarray
    sigma_next: np.ndarray


class DPMState(NamedTuple):
    x: Any
    x0_prev: Any
    bad_step: Any


DPM_SPACINGS = ("linspace", "logsnr")


def dpmpp_2m(
    model, process, *, steps=20, spacing=None, eps=None, clip_denoised=False, prediction=None, times=None
) -> Sampler:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) with x_0 predictions, written against the process interface.

    Grid: ``time_grid`` (GaussianDiffusion: the respaced kept steps, ``spacing`` "linspace",
    "leading", "trailing" or improved-diffusion's strings; SDEs: ``linspace(T, eps, steps)``), or
    ``spacing="logsnr"``: uniform in lambda between the ends (GaussianDiffusion: the nearest steps,
    each kept once, so there may be fewer than ``steps``). One model call per grid point (NFE = the
    number of points); the step from the last point goes to the data (alpha = 1, sigma = 0), first
    order, so the output is the last x_0 prediction (DDIM's ending). The first step is first order.
    """
    prediction = resolve_prediction(model, process, prediction, "eps")
    discrete = is_discrete(process)
    allowed = DPM_SPACINGS + (("leading", "trailing") if discrete else ())
    if spacing is None:  # measured best (docs/samplers.md): log-SNR in continuous time; a chain keeps its respacing
        spacing = "linspace" if discrete else "logsnr"
    check_choice(spacing, allowed, "spacing")
    start = None if discrete else start_time(process, "dpmpp_2m", prediction)
    g = time_grid(process, steps, spacing=spacing, eps=eps, start=start, times=times)
    if times is not None and not discrete:
        start_time(process, "dpmpp_2m", prediction, t_max=g.times[0])
    times, t_in, alpha, sigma = g.times, g.t_in, _host(g.alpha), _host(g.sigma)
    n = times.shape[0]
    with np.errstate(divide="ignore"):  # alpha = 0 at a u / x0 / v model's start: lambda = -inf, h = inf
        lam = np.log(alpha) - np.log(sigma)  # Lu et al.'s lambda = log(alpha / sigma), half the log-SNR
    alpha_next = np.append(alpha[1:], 1.0)
    sigma_next = np.append(sigma[1:], 0.0)
    h = np.append(lam[1:] - lam[:-1], np.inf)  # the step into the data has h = inf
    c_x = sigma_next / sigma
    c_d = -alpha_next * np.expm1(-h)
    w_cur = np.ones(n)
    w_prev = np.zeros(n)
    if n > 2:  # second order on rows 1 .. n-2: r_i = h_{i-1} / h_i
        r = h[:-2] / h[1:-1]
        w_cur[1:-1] = 1.0 + 0.5 / r
        w_prev[1:-1] = -0.5 / r
    plan = DPMPlan(np.arange(n), np.asarray(t_in), alpha, sigma, c_x, c_d, w_cur, w_prev, alpha_next, sigma_next)

    def init(x_T: Any) -> DPMState:
        xp = array_namespace(x_T)
        return DPMState(x_T, xp.zeros_like(x_T), initial_flag(x_T))

    def step(state: DPMState, plan_i: tuple, noise_i: Any, args: ModelArgs) -> DPMState:
        p = DPMPlan(*plan_i)
        d = _denoise(model, args, state.x, p.t_in, p.alpha, p.sigma, prediction, clip_denoised)
        D = p.w_cur * d.x0 + p.w_prev * state.x0_prev
        x_next = p.c_x * state.x + p.c_d * D
        return DPMState(x_next, d.x0, flag_nonfinite(state.bad_step, x_next, p.index))

    return Sampler("dpmpp_2m", plan, init, step, final_x, 0, n, np.asarray(times, dtype=np.float64))


FACTORIES = {
    "ode_euler": ode_euler,
    "ode_heun": ode_heun,
    "ode_rk4": ode_rk4,
    "ode_dopri5": ode_dopri5,
    "edm_heun": edm_heun,
    "dpmpp_2m": dpmpp_2m,
}
