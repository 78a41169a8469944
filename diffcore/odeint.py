"""One explicit Runge-Kutta engine for the samplers and the likelihood alike.

- :class:`Tableau`: Butcher tableaux (nodes c, stage matrix A, weights b, error weights e) for
  Euler, Heun (explicit trapezoid), the classic RK4 and Dormand-Prince 5(4) (Hairer, Norsett &
  Wanner, *Solving ODEs I*, Table II.5.2: 7 stages, first same as last).
- :func:`rk_stages`: one explicit RK step over a tuple state, with stage coefficients supplied by
  the caller (numbers times a step, or plan columns of a sampler precomputed on the host), so the
  same code runs the fixed-step samplers' steps and the adaptive solver's attempts.
- The adaptive controller, apart from the stepping: :func:`error_norm` (Hairer II.4, eq. 4.11),
  :func:`step_factor` (h_new = h clip(0.9 err^(-1/5), 0.2, 10), no growth after a rejection) and
  :func:`initial_step` (Hairer's starting step).
- :func:`dopri5`: adaptive Dormand-Prince 5(4) as a batch of independent solves (each example its
  own time, step size, accept / reject and termination) in the backend's bounded while-loop.

Faults stop a solve at once and say why: a non-finite input (``y0``), a non-finite slope at the
start (the model returned non-finite values at t0), a step size that is not finite, and float16 /
bfloat16 states (the controller's error ratios overflow there: use float32) -- instead of spending
the whole step budget and blaming the tolerances.

Written against the Array API: per-example decisions are ``xp.where`` masks, never a Python ``if``
on array values, so everything runs under ``jax.jit``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from ._array import array_device, array_namespace, default_dtype, is_traced, to_numpy
from .backends import StepBudgetExceeded, check_max_steps

__all__ = [
    "Tableau",
    "EULER",
    "HEUN",
    "RK4",
    "DOPRI5",
    "TABLEAUX",
    "rk_stages",
    "error_norm",
    "step_factor",
    "initial_step",
    "dopri5",
    "DopriResult",
    "DopriState",
    "check_solver_dtype",
]


class Tableau(NamedTuple):
    """An explicit Butcher tableau: stage i is evaluated at t + c_i h with input
    y + h sum_j A[i][j] k_j; the solution is y + h sum_j b_j k_j; ``e`` = b - b_hat (error weights of
    an embedded pair, or None); ``order`` of the solution."""

    name: str
    c: tuple
    A: tuple
    b: tuple
    order: int
    e: tuple | None = None


EULER = Tableau("euler", (0.0,), ((),), (1.0,), 1)
HEUN = Tableau("heun", (0.0, 1.0), ((), (1.0,)), (0.5, 0.5), 2)
RK4 = Tableau("rk4", (0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6), 4)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
DOPRI5 = Tableau(
    "dopri5",
    (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    (
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _B5[:6],  # = b (first same as last: stage 7's input is the solution)
    ),
    _B5,
    5,
    (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40),
)
TABLEAUX = {t.name: t for t in (EULER, HEUN, RK4, DOPRI5)}

SAFETY = 0.9
FACTOR_MIN = 0.2
FACTOR_MAX = 10.0


def _same(coef: Any, leaf: Any) -> Any:
    return coef


def _combine(terms: list) -> Any:
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out


def _add(y: tuple, terms: Sequence, ks: list, scale: Callable) -> tuple:
    """y + sum_j coef_j k_j, leaf by leaf (zero coefficients skipped; Python 0.0 only)."""
    live = [(j, c) for j, c in terms if not (isinstance(c, float) and c == 0.0)]
    if not live:
        return y
    return tuple(leaf + _combine([scale(c, leaf) * ks[j][n] for j, c in live]) for n, leaf in enumerate(y))


def rk_stages(
    slope: Callable[[int, tuple], tuple],
    y: tuple,
    A: Sequence[Sequence[tuple]],
    b: Sequence[tuple],
    *,
    scale: Callable[[Any, Any], Any] = _same,
    k1: tuple | None = None,
) -> tuple[tuple, list]:
    """One explicit RK step: k_i = slope(i, y + sum_j A[i] k_j), y_new = y + sum_j b k_j.

    ``A[i]`` and ``b`` are sequences of (j, coefficient) pairs with the step size already folded in
    (a_ij h: numbers, 0-D arrays or per-example arrays, shaped for a leaf by ``scale(coef, leaf)``).
    ``k1`` reuses a known first slope (first same as last). Returns (y_new, [k_1, ..., k_s]).
    """
    ks = [slope(0, y) if k1 is None else k1]
    for i in range(1, len(A)):
        ks.append(slope(i, _add(y, A[i], ks, scale)))
    return _add(y, b, ks, scale), ks


def tableau_terms(tableau: Tableau, h: Any) -> tuple[list, list, list | None]:
    """(A, b, e) of ``tableau`` as (j, coefficient * h) pairs for :func:`rk_stages`."""
    A = [[(j, a * h) for j, a in enumerate(row) if a != 0.0] for row in tableau.A]
    b = [(j, w * h) for j, w in enumerate(tableau.b) if w != 0.0]
    e = None if tableau.e is None else [(j, w * h) for j, w in enumerate(tableau.e) if w != 0.0]
    return A, b, e


# ------------------------------------------------------------------------------ the controller


def error_norm(xp: Any, err: tuple, y: tuple, y_new: tuple, rtol: float, atol: float, rms: Callable) -> Any:
    """Per-example RMS of err / (atol + rtol max(|y|, |y_new|)) over all components (Hairer II.4.11)."""
    return rms([e / (atol + rtol * xp.maximum(xp.abs(a), xp.abs(b))) for e, a, b in zip(err, y, y_new)])


def step_factor(xp: Any, err_norm: Any, rejected_last: Any, order: int = 5) -> Any:
    """h_new / h = clip(0.9 err^(-1/order), 0.2, 10); 10 at err = 0; 0.2 for a non-finite error; no
    growth right after a rejection."""
    finite = xp.isfinite(err_norm)
    safe = xp.where(xp.logical_and(finite, err_norm > 0), err_norm, xp.ones_like(err_norm))
    factor = SAFETY * safe ** (-1.0 / order)
    factor = xp.where(err_norm == 0, xp.full_like(factor, FACTOR_MAX), factor)
    factor = xp.where(finite, factor, xp.full_like(factor, FACTOR_MIN))
    limit = xp.where(rejected_last, xp.ones_like(factor), xp.full_like(factor, FACTOR_MAX))
    return xp.clip(xp.minimum(factor, limit), min=FACTOR_MIN)


def initial_step(xp, call, t0, y0, k1, direction, span, rtol, atol, rms, expand, order: int = 5):
    """Hairer's starting step (II.4): h from ||y0|| / ||f0||, refined with one Euler probe (+1 call)."""
    scale0 = [atol + rtol * xp.abs(y) for y in y0]
    d0 = rms([y / s for y, s in zip(y0, scale0)])
    d1 = rms([k / s for k, s in zip(k1, scale0)])
    small = xp.logical_or(d0 < 1e-5, d1 < 1e-5)
    guess = xp.where(small, xp.full_like(d0, 1e-6), 0.01 * d0 / xp.where(small, xp.ones_like(d1), d1))
    guess = xp.minimum(guess, span)
    probe = tuple(y + expand(direction * guess, y) * k for y, k in zip(y0, k1))
    k_probe = call(t0 + direction * guess, probe)
    safe_guess = xp.where(guess > 0, guess, xp.ones_like(guess))
    d2 = rms([(kp - k) / s for kp, k, s in zip(k_probe, k1, scale0)]) / safe_guess
    dmax = xp.maximum(d1, d2)
    flat = dmax <= 1e-15
    h1 = xp.where(flat, xp.clip(guess * 1e-3, min=1e-6), (0.01 / xp.where(flat, xp.ones_like(dmax), dmax)) ** (1.0 / order))
    return xp.minimum(xp.minimum(100.0 * guess, h1), span)


def check_solver_dtype(xp: Any, dtype: Any, what: str = "the adaptive solver") -> None:
    """float16 / bfloat16 states are refused: the first step size and the error ratios overflow."""
    if xp.finfo(dtype).bits < 32:
        raise TypeError(f"{dtype} is not supported by {what} (its step-size controller overflows in half precision); use float32")


# -------------------------------------------------------------------------------- dopri5


class DopriState(NamedTuple):
    """The loop state, one entry per example unless noted."""

    y: tuple  # the solution, a tuple of arrays with the batch first
    t: Any  # time reached
    h: Any  # signed step size of the next attempt
    k1: tuple  # fn(t, y) (first same as last)
    done: Any  # reached t1 (or failed)
    failed: Any  # non-finite values that no step size can cure
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
    name: str = "y0",
) -> DopriResult:
    """Solve dy/dt = fn(t, y) from t0 to t1 (either direction) for each example independently.

    Args:
        backend: supplies ``while_loop`` (a :class:`diffcore.Backend`).
        fn: ``fn(t_vec, y) -> dy/dt`` with ``t_vec`` one time per example (shape (B,)).
        y0: an array (B, ...) or a tuple of arrays with the same batch size B (float32 / float64).
        t0, t1: numbers, or arrays of shape (B,) (one per example).
        rtol, atol: tolerances (> 0); max_steps: budget of attempts per solve.
        h0: the first step's size (magnitude); by default Hairer's heuristic (+1 evaluation).
        name: what ``y0`` is called in error messages (e.g. "x_T", "x").

    Returns:
        :class:`DopriResult`. Raises StepBudgetExceeded past ``max_steps`` (with ``.times``), and --
        where values can be read, i.e. not inside the caller's ``jax.jit`` -- FloatingPointError at
        once for a non-finite ``y0`` or a non-finite first slope, and (``raise_on_failure``) for
        examples whose values stayed non-finite (``failed``: their ``y`` is the last accepted value).
    """
    from .samplers._base import check_positive  # noqa: PLC0415 (samplers import this module)

    rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    max_steps = check_max_steps(max_steps)
    h0 = None if h0 is None else check_positive(h0, "h0")
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
        check_solver_dtype(xp, leaf.dtype, "the adaptive Dormand-Prince solver")
    B = leaves[0].shape[0]
    if any(leaf.shape[0] != B for leaf in leaves):
        raise ValueError(f"all leaves of y0 must share the batch size; got {[tuple(l.shape) for l in leaves]}")
    _raise_nonfinite(xp, leaves, f"non-finite input {name}: the solve cannot start from NaN or inf")
    dtype, device = leaves[0].dtype, array_device(leaves[0])
    int_dtype = default_dtype(xp, "indexing", device)
    count = float(sum(math.prod(leaf.shape[1:]) for leaf in leaves))  # components per example

    t0, t1 = _times(xp, t0, B, dtype, device, "t0"), _times(xp, t1, B, dtype, device, "t1")
    direction, span = xp.sign(t1 - t0), xp.abs(t1 - t0)
    h_min = 1e-12 * xp.clip(span, min=1.0)  # a non-finite error below this step size ends the example

    def call(t, y):
        out = fn(t, y[0]) if single else fn(t, y)
        return (out,) if single else tuple(out)

    def expand(v, leaf):
        return xp.reshape(v, (B,) + (1,) * (leaf.ndim - 1))

    def rms(values):
        total = None
        for v in values:
            s = v * v
            s = xp.sum(xp.reshape(s, (B, -1)), axis=1) if v.ndim > 1 else s
            total = s if total is None else total + s
        return xp.sqrt(total / count)

    k1 = call(t0, leaves)
    _raise_nonfinite(xp, k1, "fn (the model) returned non-finite values at the start time t0 = {t}", t0)
    evals = 1
    if h0 is None:
        h_start = initial_step(xp, call, t0, leaves, k1, direction, span, rtol, atol, rms, expand)
        evals += 1
    else:
        h_start = xp.minimum(xp.full_like(span, h0), span)

    zeros_int = xp.zeros((B,), dtype=int_dtype, device=device)
    falses = xp.zeros((B,), dtype=xp.bool, device=device)
    state = DopriState(
        leaves, t0, direction * h_start, k1, span == 0, falses, falses, zeros_int + evals, zeros_int,
        zeros_int, xp.asarray(evals, dtype=int_dtype, device=device),
    )
    body = _dopri_body(xp, call, t1, rtol, atol, rms, expand, h_min)

    def cond(s: DopriState) -> Any:
        return xp.any(xp.logical_not(s.done))

    try:
        state = backend.while_loop(cond, body, state, max_steps=max_steps)
    except StepBudgetExceeded as exc:
        times = np.asarray(to_numpy(exc.state.t), dtype=np.float64) if isinstance(exc.state, DopriState) else None
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


def _dopri_body(xp, call, t1, rtol, atol, rms, expand, h_min):
    """One attempt of every unfinished example: 6 new stages (FSAL), error norm, accept / reject,
    the next step size. An example whose state, slope or step size is non-finite fails at once (no
    step size can cure it); a non-finite error fails it once the step is vanishingly small."""
    tab = DOPRI5

    def body(s: DopriState) -> DopriState:
        active = xp.logical_not(s.done)
        remaining = t1 - s.t
        last = xp.abs(s.h) >= xp.abs(remaining)
        h = xp.where(last, remaining, s.h)  # 0 for finished examples: they ride along in place
        t_end = xp.where(last, t1, s.t + h)  # lands exactly on t1
        A, _, e = tableau_terms(tab, h)
        stage_t = [t_end if c == 1.0 else s.t + c * h for c in tab.c]
        y_new, ks = rk_stages(lambda i, yi: call(stage_t[i], yi), s.y, A, A[6], scale=expand, k1=s.k1)
        err = tuple(_combine([expand(c, y) * ks[j][n] for j, c in e]) for n, y in enumerate(s.y))
        err_norm = error_norm(xp, err, s.y, y_new, rtol, atol, rms)
        finite = xp.isfinite(err_norm)
        ok = xp.logical_and(finite, err_norm < 1.0)
        accept = xp.logical_and(active, ok)
        factor = step_factor(xp, err_norm, s.rejected_last, tab.order)
        hopeless = xp.logical_or(xp.abs(h) <= h_min, xp.logical_not(xp.isfinite(h)))
        hopeless = xp.logical_or(hopeless, xp.logical_not(_all_finite(xp, s.k1)))
        failed_now = xp.logical_and(active, xp.logical_and(xp.logical_not(finite), hopeless))
        keep = lambda new, old: xp.where(expand(accept, old), new, old)  # noqa: E731
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

    return body


def _all_finite(xp: Any, leaves: tuple) -> Any:
    """(B,): every component of every leaf finite, per example."""
    out = None
    for leaf in leaves:
        ok = xp.isfinite(leaf)
        if leaf.ndim > 1:
            ok = xp.all(xp.reshape(ok, (leaf.shape[0], -1)), axis=1)
        out = ok if out is None else xp.logical_and(out, ok)
    return out


def _raise_nonfinite(xp: Any, leaves: tuple, message: str, t: Any = None) -> None:
    """FloatingPointError naming the examples, where values can be read (not under jit)."""
    if any(is_traced(leaf) for leaf in leaves):
        return
    ok = np.asarray(to_numpy(_all_finite(xp, leaves)))
    if not ok.all():
        idx = np.flatnonzero(~ok)
        where = "" if t is None else np.asarray(to_numpy(t), dtype=np.float64)[idx][:1].tolist()[0]
        raise FloatingPointError(message.format(t=where) + f" (example(s) {idx[:10].tolist()})")


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
