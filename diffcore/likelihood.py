"""Likelihood in nats and bits/dim: the exact probability-flow ODE likelihood and the discrete VLB.

- ODE likelihood (Song et al. 2021, §4.3 and App. D.2; FFJORD, Grathwohl et al. 2019): by the
  instantaneous change of variables, log p_0(x(0)) = log p_T(x(T)) + int_eps^T div f~(x(t), t) dt,
  f~ = f - 1/2 g^2 s the probability-flow drift, integrated on the augmented state (x, delta log p)
  with the adaptive Dormand-Prince solver as a batch of independent solves, in the backend's own
  bounded while-loop (no SciPy, no device-to-host round trip per evaluation). The divergence is
  Hutchinson's estimate with probes fixed for the solve, the exact trace (small dimensions), or a
  given callable (analytic models). The whole solve is one step of a one-row plan run by the
  backend's loop driver, so JAX compiles it once (``lax.scan`` under ``jax.jit``) and reuses the
  compilation while the model, process and options are the same objects.
- 8-bit images in [-1, 1]: uniform dequantisation ((x + 1) 127.5 + u) / 128 - 1 and the bits/dim
  offset +7 = -log2(2 / 256) (the density lives on bins of width 2/256); repeated dequantisation
  draws are averaged, as the papers report.
- Discrete VLB (Ho et al. 2020; Nichol & Dhariwal 2021) for GaussianDiffusion: L_T + sum L_{t-1} +
  L_0 in bits/dim, one batched model call per timestep (the backend's loop driver over a plan of
  steps), on all steps or every k-th with a random offset per example (unbiased: each step is
  visited with probability 1/k and weighted by k). It is already in bits of the 8-bit data: no offset.
"""

from __future__ import annotations

import contextvars
import math
from typing import Any, Callable, NamedTuple

import numpy as np

from ._array import (
    array_device,
    array_namespace,
    as_xp,
    check_float_array,
    check_same_shape,
    concrete_min_max,
    default_dtype,
    is_traced,
    sum_flat,
    to_numpy,
    values_checked_upstream,
)
from ._cache import cached
from .autodiff import DEFAULT_MAX_DIM, as_probes
from .backends import StepBudgetExceeded, backend as _get_backend, backend_for, check_backend_array
from .diffusion import GaussianDiffusion
from .checks import check_bool, check_callable, check_finite, check_int, check_unit_range
from .models import split_model
from .process import drift_coefficients, is_discrete, require, require_continuous, start_time
from .samplers._base import ModelArgs, call_model, check_choice, check_positive, check_steps, resolve_prediction
from .samplers.grid import end_time
from .samplers.ode import pf_ode_drift
from .odeint import check_solver_dtype, dopri5

__all__ = [
    "LikelihoodResult",
    "ode_likelihood",
    "vlb_bpd",
    "dequantize",
    "nll",
    "bits_per_dim",
    "DEQUANT_OFFSET_BITS",
]

_LN2 = math.log(2.0)
#: bits/dim offset of 8-bit data dequantised into [-1, 1]: -log2(2/256)
DEQUANT_OFFSET_BITS = 7.0

# fold_in streams: probes, dequantisation noise and VLB noise never share a key
_PROBE_STREAM, _DEQUANT_STREAM, _VLB_STREAM, _OFFSET_STREAM = 11, 12, 13, 14


class LikelihoodResult(NamedTuple):
    """Per-example negative log-likelihood in nats and bits/dim, and model evaluations."""

    nll: Any  # nats, (B,)
    bpd: Any  # bits/dim, (B,)
    nfe: Any  # drift evaluations per example, (B,) (ODE, summed over dequantisation draws) or an int (VLB)
    prior_logp: Any = None  # log p_T(x(T)) (ODE; mean over dequantisation draws), (B,)
    delta_logp: Any = None  # int div f~ dt (ODE; mean over dequantisation draws), (B,)


def bits_per_dim(nll_nats: Any, num_dims: int, offset: float = 0.0) -> Any:
    """nats -> bits/dim: nll / (D ln 2) + offset."""
    return nll_nats / (num_dims * _LN2) + offset


def _check_8bit_range(x: Any) -> None:
    check_unit_range(x, "x", "for 8-bit dequantisation (data scaled as pixel / 127.5 - 1)")


def dequantize(x: Any, u: Any) -> Any:
    """Uniform dequantisation of 8-bit data in [-1, 1]: ((x + 1) 127.5 + u) / 128 - 1, u ~ U[0, 1)."""
    check_float_array(x, "x")
    _check_8bit_range(x)
    check_float_array(u, "u")
    check_same_shape(x, u, "x", "u")
    lo_hi = concrete_min_max(u)
    if lo_hi is not None and not (float(lo_hi[0]) >= 0.0 and float(lo_hi[1]) < 1.0):
        raise ValueError(f"u must hold uniform draws in [0, 1); got values from {float(lo_hi[0]):g} to {float(lo_hi[1]):g}")
    return ((x + 1.0) * 127.5 + u) / 128.0 - 1.0


def _resolve_backend(backend: Any, x: Any) -> Any:
    """The backend given (a name or an object) or x's own; x must be an array of its framework."""
    if backend is None:
        return backend_for(x)
    bk = _get_backend(backend) if isinstance(backend, str) else backend
    check_backend_array(bk, x, "x")
    return bk


def _check_process(process: Any, what: str) -> None:
    if process is None or not all(callable(getattr(process, m, None)) for m in ("alpha", "sigma", "model_time", "prior_logp")):
        raise TypeError(f"{what} needs a process of the process interface (e.g. diffcore.VPSDE()); got {process!r}")


def _reused(fn: Any, key: tuple, make: Callable[[], Any]) -> Any:
    """A step for the model function ``fn``: from the cache when ``fn`` is reusable (its weights
    travel as loop arguments), else built for this call only."""
    return cached(key, make) if fn.reusable else make()


def _tile(a: Any, reps: int) -> Any:
    """``a`` repeated ``reps`` times along the batch axis (block-major), or ``a`` itself."""
    if reps == 1 or a is None or not hasattr(a, "shape") or getattr(a, "ndim", 0) < 1:
        return a
    return array_namespace(a).concat([a] * reps, axis=0)


class _BudgetedLoop:
    """A backend whose ``while_loop`` stops at a budget held in an array instead of raising.

    The overrun is then read from the solution (examples that did not reach T) and reported with
    the times reached, the same way on every backend, including from inside JAX's compiled solve
    (where a raise from the loop could only come back as a host-callback error). The budget is an
    array (``budget``, 0-D), so one compiled solve serves every ``max_steps``.
    """

    # the wrapped loop's own bound: never reached (the budget array stops the loop first)
    _NO_LIMIT = 2**31 - 2

    def __init__(self, bk: Any, budget: Any, report: Callable[[Any], None] | None = None) -> None:
        self._bk = bk
        self._budget = budget
        self._report = report

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bk, name)

    def while_loop(self, cond: Callable, body: Callable, state: Any, *, max_steps: int) -> Any:
        budget = self._budget
        xp = array_namespace(budget)
        count = xp.zeros_like(budget)

        def c(s):
            return xp.logical_and(cond(s[0]), s[1] < budget)

        report = self._report

        def b(s):
            new = body(s[0])
            t = getattr(new, "t", None)
            if report is not None and t is not None and not is_traced(t):  # eager solves only
                report(t)
            return new, s[1] + 1

        return self._bk.while_loop(c, b, (state, count), max_steps=self._NO_LIMIT)[0]


#: the running ODE solve's progress report ``report(t)`` (t the times reached, one per example):
#: a context variable, so that the cached step (reused across calls) is not built around it
_SOLVE_REPORT: "contextvars.ContextVar[Callable[[Any], None] | None]" = contextvars.ContextVar(
    "diffcore_ode_report", default=None
)




# --------------------------------------------------------------------------------- ODE likelihood


class _OdeState(NamedTuple):
    """The one-step loop state of an ODE likelihood solve (inputs, then the solution)."""

    x: Any  # (B, ...): the data in, z(T) out
    probes: Any  # (K, B, ...) Hutchinson probes, or None
    logp_T: Any  # (B,) log p_T(z(T))
    delta: Any  # (B,) int_eps^T div f~ dt
    nfe: Any  # (B,) drift evaluations each example needed
    steps: Any  # (B,) solver attempts
    t: Any  # (B,) the time each example reached (T unless the budget ran out or it failed)
    failed: Any  # (B,) non-finite values at a vanishing step
    max_steps: Any  # 0-D: the solver's budget of attempts (an array: not a compile-time constant)


def _make_ode_step(
    bk: Any,
    model: Callable,
    sde: Any,
    prediction: str,
    divergence: Any,
    prior: Callable,
    eps: float,
    rtol: float,
    atol: float,
    T: float,
) -> Callable:

    pf_drift = pf_ode_drift(model, sde, prediction)

    def drift(y: Any, t: Any, args: ModelArgs) -> Any:
        """f~(y, t) = f(t) y - 1/2 g(t)^2 s(y, t), t one time per example."""
        return pf_drift(t, y, args)

    def step(state: _OdeState, plan_i: tuple, noise_i: Any, args: ModelArgs) -> _OdeState:
        x = state.x
        xp = array_namespace(x)
        B, D = x.shape[0], math.prod(x.shape[1:])
        device = array_device(x)

        if callable(divergence):

            def fn(t: Any, y: tuple) -> tuple:
                z = y[0]
                # div f~ = D f(t) - 1/2 g(t)^2 div s
                div_s = divergence(z, t)
                f, g2 = drift_coefficients(sde, t, z.dtype)
                div = D * f - 0.5 * g2 * div_s
                return drift(z, t, args), div

        else:
            # One vector-Jacobian product per evaluation on a tiled batch: R copies of the batch,
            # copy r multiplied by its own vector (the basis vector e_r for the exact trace, probe r
            # for Hutchinson). The examples are independent, so this is R products in one model call.
            if divergence == "exact":
                R = D
                picks = as_xp(np.eye(D, dtype=np.float64)[:, None, :], xp, x.dtype, device)  # (D, 1, D)
                vectors = xp.reshape(xp.broadcast_to(picks, (D, B, D)), (D * B,) + tuple(x.shape[1:]))  # block d: e_d
            else:
                R = state.probes.shape[0]
                vectors = xp.reshape(state.probes, (R * B,) + tuple(x.shape[1:]))
            args_r = ModelArgs(args.weights, _tile(args.cond, R))

            def fn(t: Any, y: tuple) -> tuple:
                z = y[0]
                t_r = _tile(t, R)
                out, prod = bk.vjp(lambda v: drift(v, t_r, args_r), _tile(z, R), vectors)
                if divergence == "exact":  # sum_d (e_d^T J)_d, block by block
                    div = xp.sum(xp.reshape(prod, (R, B, D)) * picks, axis=(0, 2))
                else:
                    div = xp.mean(xp.reshape(sum_flat(prod * vectors), (R, B)), axis=0)
                return (out[:B, ...] if R > 1 else out), div

        y0 = (x, xp.zeros((B,), dtype=x.dtype, device=device))
        solver_backend = _BudgetedLoop(bk, state.max_steps, _SOLVE_REPORT.get())
        sol = dopri5(solver_backend, fn, y0, float(eps), T, rtol=rtol, atol=atol, max_steps=_BudgetedLoop._NO_LIMIT, name="x")
        z_T, delta = sol.y
        logp_T = prior(z_T)
        if logp_T.dtype != x.dtype:
            logp_T = xp.astype(logp_T, x.dtype)
        return _OdeState(
            z_T, state.probes, logp_T, delta,
            xp.astype(sol.nfe, state.nfe.dtype), xp.astype(sol.steps, state.steps.dtype),
            xp.astype(sol.t, x.dtype), sol.failed, state.max_steps,
        )

    return step


def ode_likelihood(
    model: Callable[..., Any],
    sde: Any,
    x: Any,
    *,
    backend: Any = None,
    prediction: str | None = None,
    divergence: str | Callable[[Any, Any], Any] = "hutchinson",
    probe: str = "rademacher",
    num_probes: int = 1,
    probes: Any = None,
    seed: int = 0,
    sample_ids: Any = None,
    eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
    prior_logp: Callable[[Any], Any] | None = None,
    dequantize_8bit: bool = False,
    num_dequant: int = 1,
    cond: Any = None,
    t_max: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LikelihoodResult:
    """-log p_eps(x) by the probability-flow ODE, per example, in nats and bits/dim.

    log p_eps(x) = log p_T(z(T)) + int_eps^T div f~(z(t), t) dt, z(eps) = x, f~ = f - 1/2 g^2 s
    (Song et al. 2021, eq. 39), solved by adaptive Dormand-Prince 5(4), each example its own solve.

    Args:
        model, sde: a network ``model(x, t_in[, cond])`` predicting ``prediction`` and an SDE.
        backend: a backend or its name (default: the backend of x's namespace). It supplies the
            loop (compiled under JAX), autodiff and the random probes.
        divergence: "hutchinson" (``num_probes`` ``probe`` vectors, "rademacher" or "gaussian",
            fixed for the solve), "exact" (the Jacobian trace, D <= 64), or a callable
            ``div(x, t) -> (B,)`` giving div_x of the *score* (analytic models).
        probes: explicit Hutchinson probes, (K, B, ...) or (B, ...), used for every dequantisation
            draw in place of drawn ones (e.g. the same probes on two backends).
        sample_ids: per-example seeds for probes and dequantisation (results then do not depend on
            the batch); default: the batch position.
        rtol, atol: the solver's tolerances (> 0); max_steps: its budget of attempts per example.
        prior_logp: log p_T replacing ``sde.prior_logp`` (e.g. the exact marginal at T in tests).
        t_max: where the solve ends (default T; where alpha(T) = 0 and the drift or divergence needs
            f = alpha'/alpha or x_0 from an eps / score output, the time of log-SNR -15, see
            :func:`diffcore.process.start_time`); the prior is evaluated there.
        dequantize_8bit: treat x as 8-bit data in [-1, 1]: average over ``num_dequant`` uniform
            dequantisation draws and add the +7 bits/dim offset.
        progress: ``progress(done, total)`` with total = 1000 per dequantisation draw and done the
            thousandths of [eps, T] the slowest example has integrated: after every solver step on
            eager backends (NumPy, torch; one host read a step), after each draw on JAX (compiled).
    Returns:
        :class:`LikelihoodResult` (nats, bits/dim, NFE per example). A solve past ``max_steps``
        raises StepBudgetExceeded naming the times reached (``.times``); non-finite values at a
        vanishing step raise FloatingPointError.

    Under JAX the solve is compiled once per (model, sde, prior_logp, divergence, options, shapes)
    and reused while the *same objects* are passed: build the model and callables once.
    """
    xp = check_float_array(x, "x")
    _check_process(sde, "ode_likelihood")
    bk = _resolve_backend(backend, x)
    if x.ndim < 2:
        raise ValueError(f"x must be a batch (B, ...); got shape {tuple(x.shape)}")
    num_probes = check_steps(num_probes, "num_probes")
    num_dequant = check_steps(num_dequant, "num_dequant")
    check_choice(probe, ("rademacher", "gaussian"), "probe")
    if not callable(divergence):
        check_choice(divergence, ("hutchinson", "exact"), "divergence")
    rtol = check_positive(rtol, "rtol")
    atol = check_positive(atol, "atol")
    max_steps = check_steps(max_steps, "max_steps")
    require_continuous(sde, "ode_likelihood", "for a GaussianDiffusion use vlb_bpd")
    eps = end_time(sde, eps)
    if prior_logp is not None and not callable(prior_logp):
        raise TypeError(f"prior_logp must be callable prior_logp(z) -> (B,); got {type(prior_logp).__name__}")
    B, D = x.shape[0], math.prod(x.shape[1:])
    if divergence == "exact" and D > DEFAULT_MAX_DIM:
        raise ValueError(
            f"divergence='exact' needs D vector-Jacobian products and x has D = {D} > {DEFAULT_MAX_DIM} "
            "dimensions per example; use divergence='hutchinson' (an unbiased estimate)"
        )
    if probes is not None:
        if divergence != "hutchinson":
            raise ValueError(f"probes are Hutchinson probes: they need divergence='hutchinson'; got {divergence!r}")
        probes = as_probes(x, probes, cast=True)
    if dequantize_8bit:
        _check_8bit_range(x)
    check_solver_dtype(xp, x.dtype, "ode_likelihood's adaptive solver")
    lo_hi = concrete_min_max(x)  # eager arrays: a NaN / inf input stops here, not after the step budget
    if lo_hi is not None and not all(math.isfinite(float(v)) for v in lo_hi):
        raise FloatingPointError("ode_likelihood: non-finite input x (NaN or inf); the solve cannot start there")
    device = array_device(x)
    key = bk.key(seed)
    idx = default_dtype(xp, "indexing", device)
    if sample_ids is None:
        sample_ids = xp.arange(B, dtype=idx, device=device)
    draw = bk.rademacher if probe == "rademacher" else bk.normal
    prior = prior_logp or sde.prior_logp

    prediction = resolve_prediction(model, sde, prediction, "score")
    T_end = start_time(sde, "ode_likelihood", prediction, needs_f=callable(divergence), t_max=t_max)
    fn, weights = split_model(model, bk)
    step = _reused(
        fn, ("ode", bk, fn, sde, prediction, divergence, prior, eps, rtol, atol, T_end),
        lambda: _make_ode_step(bk, fn, sde, prediction, divergence, prior, eps, rtol, atol, T_end),
    )
    plan = (xp.zeros((1,), dtype=idx, device=device),)
    zeros = xp.zeros((B,), dtype=x.dtype, device=device)
    ints = xp.zeros((B,), dtype=idx, device=device)
    falses = xp.zeros((B,), dtype=xp.bool, device=device)
    budget = xp.asarray(max_steps, dtype=idx, device=device)

    nll_sum = logp_sum = delta_sum = nfe_sum = None
    for j in range(num_dequant):
        data = x
        if dequantize_8bit:
            u = bk.uniform(bk.fold_in(bk.fold_in(key, _DEQUANT_STREAM), j), x.shape, x.dtype, sample_ids=sample_ids, device=device)
            data = ((x + 1.0) * 127.5 + u) / 128.0 - 1.0  # dequantize(x, u); x's range checked above
        draw_probes = probes
        if divergence == "hutchinson" and draw_probes is None:
            pk = bk.fold_in(bk.fold_in(key, _PROBE_STREAM), j)
            draw_probes = xp.stack(
                [draw(bk.fold_in(pk, k), x.shape, x.dtype, sample_ids=sample_ids, device=device) for k in range(num_probes)]
            )
        state = _OdeState(data, draw_probes, zeros, zeros, ints, ints, zeros, falses, budget)
        token = _SOLVE_REPORT.set(None if progress is None else _solve_report(progress, j, num_dequant, eps, T_end))
        try:
            with values_checked_upstream():  # inputs were checked above: no sync per evaluation
                out = bk.loop(step, state, plan, args=ModelArgs(weights, cond))
        finally:
            _SOLVE_REPORT.reset(token)
        if progress is not None:
            progress(1000 * (j + 1), 1000 * num_dequant)
        _raise_if_unfinished(out, T_end, max_steps, rtol, atol)
        nll = -(out.logp_T + out.delta)
        nll_sum = nll if nll_sum is None else nll_sum + nll
        logp_sum = out.logp_T if logp_sum is None else logp_sum + out.logp_T
        delta_sum = out.delta if delta_sum is None else delta_sum + out.delta
        nfe_sum = out.nfe if nfe_sum is None else nfe_sum + out.nfe

    nll = nll_sum / num_dequant
    bpd = bits_per_dim(nll, D, DEQUANT_OFFSET_BITS if dequantize_8bit else 0.0)
    return LikelihoodResult(nll, bpd, nfe_sum, logp_sum / num_dequant, delta_sum / num_dequant)


def _solve_report(progress: Callable[[int, int], None], draw: int, draws: int, t0: float, t1: float) -> Callable[[Any], None]:
    """``report(t)``: ``progress`` in thousandths of [t0, t1] reached by the slowest example."""
    span = t1 - t0

    def report(t: Any) -> None:
        xp = array_namespace(t)
        t_min = xp.min(t)
        t_min = t_min.detach() if hasattr(t_min, "detach") else t_min  # a torch time may carry autograd
        frac = (float(t_min) - t0) / span if span > 0 else 1.0
        progress(1000 * draw + min(1000, max(0, int(1000 * frac))), 1000 * draws)

    return report


def _raise_if_unfinished(out: _OdeState, T: float, max_steps: int, rtol: float, atol: float) -> None:
    """StepBudgetExceeded / FloatingPointError for examples that did not reach T (one host read)."""
    failed = to_numpy(out.failed)
    t = np.asarray(to_numpy(out.t), dtype=np.float64)
    if failed.any():
        idx = np.flatnonzero(failed)
        raise FloatingPointError(
            f"ode_likelihood: the model returned non-finite values (or the drift or divergence overflowed) for "
            f"example(s) {idx[:10].tolist()} at times {t[idx][:10].tolist()}; the solve was abandoned"
        )
    if np.any(t != T):
        steps = to_numpy(out.steps)
        idx = np.flatnonzero(t != T)
        err = StepBudgetExceeded(
            f"ode_likelihood: the solve ran out of its step budget (max_steps={max_steps}, rtol={rtol:g}, "
            f"atol={atol:g}) before example(s) {idx[:10].tolist()} reached T={T:g}; times reached: "
            f"{np.array2string(t[idx][:10], precision=6)}; raise max_steps or loosen the tolerances",
            steps=int(steps.max()),
            state=out,
        )
        err.times = t
        raise err


# ------------------------------------------------------------------------------------ VLB


class _VlbState(NamedTuple):
    total: Any  # (B,) the bound so far, bits/dim, in at least float32
    x: Any  # (B, ...) the data
    offset: Any  # (B,) the stride offset in 1..k (0 for stride 1)
    bad_step: Any  # (B,) the first step whose model output was non-finite, -1 while all is well


def _make_vlb_step(model: Callable, diffusion: GaussianDiffusion, clip_denoised: bool, decoder: str) -> Callable:
    last = diffusion.num_timesteps - 1
    learned = diffusion.model_var_type in ("learned", "learned_range")

    def step(state: _VlbState, plan_i: tuple, noise: Any, args: ModelArgs) -> _VlbState:
        start, strided, weight = plan_i
        xp = array_namespace(state.x)
        t_raw = start + strided * state.offset  # steps o + j k (strided rows) or the row's step
        valid = t_raw <= last
        t = xp.where(valid, t_raw, xp.full_like(t_raw, last))
        # the model sees x's dtype; the noise is drawn in the accumulator's (>= float32)
        x_t = diffusion.q_sample(state.x, t, noise=xp.astype(noise, state.x.dtype))
        output = call_model(model, args, x_t, diffusion.model_time(t), learned)
        finite = xp.isfinite(output)
        if output.ndim > 1:
            finite = xp.all(finite, axis=tuple(range(1, output.ndim)))
        newly_bad = xp.logical_and(xp.logical_and(valid, xp.logical_not(finite)), state.bad_step < 0)
        bad_step = xp.where(newly_bad, xp.astype(t, state.bad_step.dtype), state.bad_step)
        # the terms in the accumulator's dtype: in float16 the decoder's floor is 0 and the KL overflows
        wd = state.total.dtype
        terms, _ = diffusion.vb_terms_bpd(
            xp.astype(output, wd), xp.astype(state.x, wd), xp.astype(x_t, wd), t,
            clip_denoised=clip_denoised, decoder=decoder,
        )
        added = xp.where(valid, terms * weight, xp.zeros_like(terms))  # 0 * NaN would be NaN
        return _VlbState(state.total + added, state.x, state.offset, bad_step)

    return step


def _raise_if_vlb_nonfinite(out: _VlbState, diffusion: GaussianDiffusion) -> None:
    """FloatingPointError naming the examples and steps of a non-finite model output (one host read)."""
    if is_traced(out.bad_step) or is_traced(out.total):
        return
    bad = np.asarray(to_numpy(out.bad_step))
    if np.any(bad >= 0):
        idx = np.flatnonzero(bad >= 0)
        steps = bad[idx]
        t_in = diffusion.timestep_map[steps]
        raise FloatingPointError(
            f"vlb_bpd: the model output was non-finite (NaN or inf) at step t={steps[:10].tolist()} (0-based; "
            f"the network received original steps {t_in[:10].tolist()}) for example(s) {idx[:10].tolist()}"
        )
    total = np.asarray(to_numpy(out.total), dtype=np.float64)
    if not np.all(np.isfinite(total)):
        idx = np.flatnonzero(~np.isfinite(total))
        raise FloatingPointError(
            f"vlb_bpd: the bound was non-finite for example(s) {idx[:10].tolist()} although the model output "
            f"was finite (a variance or a KL term overflowed in {out.total.dtype})"
        )


def vlb_bpd(
    model: Callable[..., Any],
    diffusion: GaussianDiffusion,
    x: Any,
    *,
    backend: Any = None,
    seed: int = 0,
    sample_ids: Any = None,
    stride: int = 1,
    clip_denoised: bool = False,
    decoder: str = "discretized",
    cond: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> LikelihoodResult:
    """The discrete variational bound -log p(x) <= L_T + sum_t L_{t-1} + L_0 in bits/dim, per example.

    One batched model call per visited step, run by the backend's loop driver (step noise from
    ``fold_in(key, i)`` with ``sample_ids``). ``stride`` k > 1 visits L_0 always and the KL terms
    at steps o + j k with a random offset o in 1..k per example, each weighted by k: an unbiased
    estimate of the full bound with about T / k model calls. ``decoder`` "discretized" for 8-bit
    data in [-1, 1], "gaussian" for real-valued data (then the bound is of a density: nats / (D ln 2)).
    float16 / bfloat16 data: the model sees x_t in that dtype; the terms and the sum are float32, and so
    is the result. A non-finite model output raises FloatingPointError naming the step and examples.
    ``progress(done, total)`` counts the visited terms (the loop driver's: per chunk on JAX).
    """
    xp = check_float_array(x, "x")
    bk = _resolve_backend(backend, x)
    require(diffusion, "discrete_chain", "vlb_bpd", "the discrete VLB needs DDPM's chain; use ode_likelihood for SDEs")
    check_callable(model, "model", "model(x_t, t_in[, cond]) -> output")
    if x.ndim < 1:
        raise ValueError("x must have a batch axis; got a 0-D array")
    stride = check_int(stride, "stride", 1)
    clip_denoised = check_bool(clip_denoised, "clip_denoised")
    check_choice(decoder, ("discretized", "gaussian"), "decoder")
    B = x.shape[0]
    T = diffusion.num_timesteps
    if stride >= T:
        raise ValueError(f"stride must be smaller than the number of steps {T}; got {stride}")
    if decoder == "discretized":
        check_unit_range(
            x, "x", "for decoder='discretized' (8-bit data scaled as pixel / 127.5 - 1)",
            ": scale the data to [-1, 1], or use decoder='gaussian' for real-valued data",
        )
    check_finite(x, "x")
    device = array_device(x)
    idx = default_dtype(xp, "indexing", device)
    # the bound is summed in at least float32: in float16 the small per-step terms are lost
    wd = x.dtype if x.dtype in (xp.float32, xp.float64) else xp.float32
    key = bk.key(seed)
    if sample_ids is None:
        sample_ids = xp.arange(B, dtype=idx, device=device)
    if stride > 1:
        u = bk.uniform(bk.fold_in(key, _OFFSET_STREAM), (B,), x.dtype, sample_ids=sample_ids, device=device)
        offset = xp.astype(xp.floor(u * stride), idx) + 1  # in 1..k
        # rows: L_0 (step 0, weight 1), then the KL terms at offset + j k (weight k)
        n_kl = -(-(T - 1) // stride)
        start = np.concatenate([[0], np.arange(n_kl) * stride])
        strided = np.concatenate([[0], np.ones(n_kl, dtype=np.int64)])
        weight = np.concatenate([[1.0], np.full(n_kl, float(stride))])
    else:
        offset = xp.zeros((B,), dtype=idx, device=device)
        start, strided, weight = np.arange(T), np.zeros(T, dtype=np.int64), np.ones(T)
    plan = (
        xp.asarray(start, dtype=idx, device=device),
        xp.asarray(strided, dtype=idx, device=device),
        as_xp(weight, xp, wd, device),
    )
    fn, weights = split_model(model, bk)
    step = _reused(
        fn, ("vlb", fn, diffusion, bool(clip_denoised), decoder),
        lambda: _make_vlb_step(fn, diffusion, bool(clip_denoised), decoder),
    )
    bad_step = xp.full((B,), -1, dtype=idx, device=device)
    state = _VlbState(diffusion.prior_bpd(xp.astype(x, wd)), x, offset, bad_step)
    noise_key = bk.fold_in(key, _VLB_STREAM)
    with values_checked_upstream():  # the visited steps are valid by construction: no sync per step
        out = bk.loop(
            step, state, plan, key=noise_key, noise_shape=tuple(x.shape), sample_ids=sample_ids,
            args=ModelArgs(weights, cond), progress=progress,
        )
    _raise_if_vlb_nonfinite(out, diffusion)
    total = out.total
    return LikelihoodResult(total * (math.prod(x.shape[1:]) * _LN2), total, int(start.shape[0]))


def nll(model: Callable[..., Any], process: Any, x: Any, *, backend: Any = None, **options: Any) -> LikelihoodResult:
    """One call: the discrete VLB for a GaussianDiffusion, the ODE likelihood for an SDE.

    ``options`` go to :func:`vlb_bpd` or :func:`ode_likelihood` (e.g. ``dequantize_8bit=True``
    for 8-bit images with the ODE).
    """
    _check_process(process, "nll")
    if is_discrete(process):
        return vlb_bpd(model, process, x, backend=backend, **options)
    return ode_likelihood(model, process, x, backend=backend, **options)
