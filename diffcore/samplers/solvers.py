"""An adaptive Dormand-Prince 5(4) ODE solver, run as a batch of independent solves.

``dopri5(backend, fn, y0, t0, t1, rtol=..., atol=...)`` integrates dy/dt = fn(t, y) from ``t0`` to
``t1`` (either direction) for every example of a batch at once, but each example is its own solve:
its own time, step size, error norm, accept / reject decision, step count and termination. Nothing
is shared across the batch, so an example's result does not depend on the batch it is solved in
(score_sde's RK45 shares one step size over the batch; docs/likelihood.md).

- Method: Dormand & Prince (1980), the coefficients of Hairer, Norsett & Wanner, *Solving ODEs I*,
  Table II.5.2: 7 stages, first same as last (FSAL), 6 new evaluations per attempt; the 5th-order
  solution is propagated and the embedded 4th-order one estimates the error.
- Error norm (Hairer II.4, eq. 4.11), per example: RMS over all of that example's components of
  err_c / (atol + rtol max(|y_c|, |y_new,c|)); a step is accepted when the norm is < 1.
- Controller: h_new = h * clip(0.9 * err^(-1/5), 0.2, 10); no growth on the attempt right after a
  rejection. Initial step: Hairer's heuristic (II.4, "Starting step size") unless ``h0`` is given.
  The last step of each example is clipped to land exactly on ``t1``.
- Loop: ``backend.while_loop`` (``lax.while_loop`` under JAX), bounded by ``max_steps`` attempts;
  running past it raises :class:`diffcore.backend.StepBudgetExceeded` with the step count and the
  times each example had reached.

The state is a NamedTuple pytree and ``y`` may be a tuple of arrays with the batch first (e.g.
``(x, delta_logp)`` for likelihoods); the error norm then runs over all leaves of an example.
Written against the Array API: per-example decisions are ``xp.where`` masks, never a Python ``if``
on array values, so the body runs under ``jax.jit``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from .._array import array_device, array_namespace, default_dtype, is_traced, to_numpy
from ..backend import StepBudgetExceeded, check_max_steps
from ._base import check_positive

__all__ = ["dopri5", "DopriResult", "DopriState"]

# Dormand-Prince 5(4): nodes, stage matrix (row i holds a_i1..a_i,i-1), error weights b5 - b4.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),  # = b5 (FSAL)
)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)

SAFETY = 0.9
FACTOR_MIN = 0.2
FACTOR_MAX = 10.0
_ERROR_EXPONENT = -1.0 / 5.0  # -1 / (order of the embedded estimate + 1)


class DopriState(NamedTuple):
    """The loop state, one entry per example unless noted."""

    y: tuple  # the solution, a tuple of arrays with the batch first
    t: Any  # time reached
    h: Any  # signed step size of the next attempt
    k1: tuple  # fn(t, y) (first same as last)
    done: Any  # reached t1 (or failed)
    failed: Any  # non-finite error at a vanishing step size
    rejected_last: Any  # the previous attempt was rejected (no step growth next)
    nfe: Any  # evaluations this example needed
    steps: Any  # attempts (accepted + rejected)
    accepted: Any  # accepted steps
    evals: Any  # 0-D: batch evaluations of fn (what the solve cost)


class DopriResult(NamedTuple):
    """y at t1 (y0's structure); per-example NFE, attempts and final time; the totals."""

    y: Any
    nfe: Any
    steps: Any
    t: Any
    accepted: Any
    nfe_total: Any
    failed: Any


def dopri5(
    backend: Any,
    fn: Callable[[Any, Any], Any],
    y0: Any,
    t0: Any,
    t1: Any,
    *,
    rtol: float,
    atol: float,
    max_steps: int = 10_000,
    h0: float | None = None,
    raise_on_failure: bool = True,
) -> DopriResult:
    """Solve dy/dt = fn(t, y) from t0 to t1 for each example of the batch independently.

    Args:
        backend: supplies ``while_loop`` (a :class:`diffcore.Backend`).
        fn: ``fn(t_vec, y) -> dy/dt`` with ``t_vec`` one time per example (shape (B,)) and ``y``
            in the structure of ``y0``.
        y0: an array (B, ...) or a tuple of arrays with the same batch size B.
        t0, t1: start and end times: numbers, or arrays of shape (B,) (one per example).
        rtol, atol: relative and absolute tolerances (> 0).
        max_steps: budget of attempts (accepted + rejected) per solve.
        h0: the first step's size (magnitude); by default Hairer's heuristic (+1 evaluation).

    Returns:
        :class:`DopriResult`; ``nfe`` counts the evaluations each example needed, ``nfe_total``
        the batch evaluations of ``fn`` (the cost: finished examples ride along until the last
        one is done). Raises StepBudgetExceeded past ``max_steps`` (with ``.steps`` and
        ``.times``, the time each example had reached) and, with ``raise_on_failure``,
        FloatingPointError when an example's error stays non-finite down to a vanishing step
        (both only where values can be read, i.e. not inside the caller's ``jax.jit``); ``failed``
        marks those examples (their ``y`` is the last accepted value, at time ``t``).
    """
    rtol = check_positive(rtol, "rtol")
    atol = check_positive(atol, "atol")
    max_steps = check_max_steps(max_steps)
    if h0 is not None:
        h0 = check_positive(h0, "h0")
    if not callable(fn):
        raise TypeError(f"fn must be callable fn(t, y) -> dy/dt; got {type(fn).__name__}")

    single = not isinstance(y0, (tuple, list))
    leaves = (y0,) if single else tuple(y0)
    if not leaves:
        raise ValueError("y0 must be an array or a non-empty tuple of arrays")
    xp = array_namespace(*leaves)
    for i, leaf in enumerate(leaves):
        if not xp.isdtype(leaf.dtype, "real floating"):
            raise TypeError(f"y0 leaf {i} must be a real floating array; got dtype {leaf.dtype}")
        if leaf.ndim < 1:
            raise ValueError(f"y0 leaf {i} must have a batch axis; got a 0-D array")
    B = leaves[0].shape[0]
    if any(leaf.shape[0] != B for leaf in leaves):
        raise ValueError(f"all leaves of y0 must share the batch size; got {[tuple(l.shape) for l in leaves]}")
    dtype, device = leaves[0].dtype, array_device(leaves[0])
    int_dtype = default_dtype(xp, "indexing", device)
    count = float(sum(math.prod(leaf.shape[1:]) for leaf in leaves))  # components per example

    t0 = _times(xp, t0, B, dtype, device, "t0")
    t1 = _times(xp, t1, B, dtype, device, "t1")
    direction = xp.sign(t1 - t0)
    span = xp.abs(t1 - t0)
    # a step below this that still gives a non-finite error ends the example as failed
    h_min = 1e-12 * xp.clip(span, min=1.0)

    def call(t, y):
        out = fn(t, y[0]) if single else fn(t, y)
        return (out,) if single else tuple(out)

    def expand(v, leaf):
        return xp.reshape(v, (B,) + (1,) * (leaf.ndim - 1))

    def per_example_sq(values):
        total = None
        for v in values:
            s = v * v
            if v.ndim > 1:
                s = xp.sum(xp.reshape(s, (B, -1)), axis=1)
            total = s if total is None else total + s
        return total

    def rms(values):
        return xp.sqrt(per_example_sq(values) / count)

    k1 = call(t0, leaves)
    evals = 1
    if h0 is None:
        # Hairer's starting step (II.4): h from ||y0|| / ||f0||, refined with one Euler probe.
        scale0 = [atol + rtol * xp.abs(y) for y in leaves]
        d0 = rms([y / s for y, s in zip(leaves, scale0)])
        d1 = rms([k / s for k, s in zip(k1, scale0)])
        small = xp.logical_or(d0 < 1e-5, d1 < 1e-5)
        guess = xp.where(small, xp.full_like(d0, 1e-6), 0.01 * d0 / xp.where(small, xp.ones_like(d1), d1))
        guess = xp.minimum(guess, span)
        probe_t = t0 + direction * guess
        probe = tuple(y + expand(direction * guess, y) * k for y, k in zip(leaves, k1))
        k_probe = call(probe_t, probe)
        evals += 1
        safe_guess = xp.where(guess > 0, guess, xp.ones_like(guess))
        d2 = rms([(kp - k) / s for kp, k, s in zip(k_probe, k1, scale0)]) / safe_guess
        dmax = xp.maximum(d1, d2)
        flat = dmax <= 1e-15
        h1 = xp.where(
            flat,
            xp.clip(guess * 1e-3, min=1e-6),
            (0.01 / xp.where(flat, xp.ones_like(dmax), dmax)) ** (1.0 / 5.0),
        )
        h_start = xp.minimum(xp.minimum(100.0 * guess, h1), span)
    else:
        h_start = xp.minimum(xp.full_like(span, h0), span)

    zeros_int = xp.zeros((B,), dtype=int_dtype, device=device)
    state = DopriState(
        y=leaves,
        t=t0,
        h=direction * h_start,
        k1=k1,
        done=span == 0,
        failed=xp.zeros((B,), dtype=xp.bool, device=device),
        rejected_last=xp.zeros((B,), dtype=xp.bool, device=device),
        nfe=zeros_int + evals,
        steps=zeros_int,
        accepted=zeros_int,
        evals=xp.asarray(evals, dtype=int_dtype, device=device),
    )

    def cond(s: DopriState) -> Any:
        return xp.any(xp.logical_not(s.done))

    def body(s: DopriState) -> DopriState:
        active = xp.logical_not(s.done)
        remaining = t1 - s.t
        last = xp.abs(s.h) >= xp.abs(remaining)
        h = xp.where(last, remaining, s.h)  # 0 for finished examples: they ride along in place
        t_end = xp.where(last, t1, s.t + h)  # lands exactly on t1
        ks = [s.k1]
        stage_y = s.y
        for i in range(1, 7):
            stage_y = tuple(
                y + expand(h, y) * _combine([a * kj[n] for a, kj in zip(_A[i], ks) if a != 0.0])
                for n, y in enumerate(s.y)
            )
            stage_t = t_end if _C[i] == 1.0 else s.t + _C[i] * h
            ks.append(call(stage_t, stage_y))
        y_new = stage_y  # the 7th stage's input is the 5th-order solution (FSAL)
        err = tuple(
            expand(h, y) * _combine([e * k[n] for e, k in zip(_E, ks) if e != 0.0]) for n, y in enumerate(s.y)
        )
        scaled = [
            e / (atol + rtol * xp.maximum(xp.abs(y), xp.abs(yn))) for e, y, yn in zip(err, s.y, y_new)
        ]
        err_norm = rms(scaled)
        finite = xp.isfinite(err_norm)
        ok = xp.logical_and(finite, err_norm < 1.0)
        accept = xp.logical_and(active, ok)
        safe_err = xp.where(xp.logical_and(finite, err_norm > 0), err_norm, xp.ones_like(err_norm))
        factor = SAFETY * safe_err**_ERROR_EXPONENT
        factor = xp.where(err_norm == 0, xp.full_like(factor, FACTOR_MAX), factor)
        factor = xp.where(finite, factor, xp.full_like(factor, FACTOR_MIN))
        grow_limit = xp.where(s.rejected_last, xp.ones_like(factor), xp.full_like(factor, FACTOR_MAX))
        factor = xp.clip(xp.minimum(factor, grow_limit), min=FACTOR_MIN)
        failed_now = xp.logical_and(active, xp.logical_and(xp.logical_not(finite), xp.abs(h) <= h_min))
        keep = lambda new, old: xp.where(expand(accept, old), new, old)
        steps_inc = xp.astype(active, s.steps.dtype)
        return DopriState(
            y=tuple(keep(yn, y) for yn, y in zip(y_new, s.y)),
            t=xp.where(accept, t_end, s.t),
            h=xp.where(active, h * factor, s.h),
            k1=tuple(keep(kn, k) for kn, k in zip(ks[6], s.k1)),
            done=xp.logical_or(s.done, xp.logical_or(xp.logical_and(accept, last), failed_now)),
            failed=xp.logical_or(s.failed, failed_now),
            rejected_last=xp.where(active, xp.logical_not(ok), s.rejected_last),
            nfe=s.nfe + 6 * steps_inc,
            steps=s.steps + steps_inc,
            accepted=s.accepted + xp.astype(accept, s.accepted.dtype),
            evals=s.evals + 6,
        )

    try:
        state = backend.while_loop(cond, body, state, max_steps=max_steps)
    except StepBudgetExceeded as exc:
        times = None
        if isinstance(exc.state, DopriState):
            times = np.asarray(to_numpy(exc.state.t), dtype=np.float64)
        where = "" if times is None else f"; times reached per example: {np.array2string(times, precision=6, threshold=20)}"
        err = StepBudgetExceeded(
            f"dopri5 ran out of its step budget: {exc.steps} steps taken (max_steps={max_steps}) before every "
            f"example reached t1 (rtol={rtol:g}, atol={atol:g}){where}; raise max_steps or loosen the tolerances",
            steps=exc.steps,
            state=exc.state,
        )
        err.times = times
        raise err from None

    if raise_on_failure and not is_traced(state.failed):
        failed = np.asarray(to_numpy(state.failed))
        if failed.any():
            idx = np.flatnonzero(failed)
            times = np.asarray(to_numpy(state.t), dtype=np.float64)[idx]
            raise FloatingPointError(
                f"dopri5: fn returned non-finite values for example(s) {idx[:10].tolist()} at times "
                f"{times[:10].tolist()} even at a vanishing step size; the solve was abandoned"
            )
    y = state.y[0] if single else state.y
    return DopriResult(y, state.nfe, state.steps, state.t, state.accepted, state.evals, state.failed)


def _combine(terms: list) -> Any:
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out


def _times(xp: Any, t: Any, B: int, dtype: Any, device: Any, name: str) -> Any:
    """``t`` (a number or an array of shape () or (B,)) as a (B,) array of ``dtype``."""
    if isinstance(t, bool):
        raise TypeError(f"{name} must be a number or an array of times; got {t!r}")
    if isinstance(t, (int, float, np.integer, np.floating)):
        if not math.isfinite(float(t)):
            raise ValueError(f"{name} must be finite; got {t!r}")
        return xp.full((B,), float(t), dtype=dtype, device=device)
    try:
        array_namespace(t)
    except TypeError:
        raise TypeError(f"{name} must be a number or an array of times; got {type(t).__name__}") from None
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != B):
        raise ValueError(f"{name} must be 0-D or have one entry per example ({B}); got shape {tuple(t.shape)}")
    t = xp.astype(t, dtype) if t.dtype != dtype else t
    return xp.broadcast_to(t, (B,)) if t.ndim == 0 else t


