"""What every sampler shares: the sampler record, plans, model calls, the non-finite flag.

A sampler is a short pure step function ``step(state, plan_i, noise_i) -> state`` over a plan
computed before the loop (docs/conventions.md). The plan is a NamedTuple of float64 / int64 NumPy
columns on the host; :func:`plan_to` converts it once to the working namespace, dtype and device,
and the backend's driver hands the step a plain tuple of the i-th entries (rebuild the NamedTuple
with ``Plan(*plan_i)``). ``noise_i`` has shape (B, draws, *sample_shape[1:]) -- batch first, so that
per-sample seeds apply -- and a sampler that needs k standard-normal draws per step declares
``noise_draws = k`` and reads draw j as ``noise_i[:, j, ...]``.

Every plan has the columns ``index`` (the step number, for error messages), ``alpha_next`` and
``sigma_next`` (the noise level the state's ``x`` is at after the step): inpainting projects the
known part onto that level after every step, for every sampler.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
from array_api_compat import is_torch_array

from .._array import array_device, array_namespace, as_xp, default_dtype
from ..checks import check_choice, check_int, check_positive, check_prediction
from ..parametrization import to_eps, to_score, to_x0

__all__ = [
    "Sampler",
    "ModelArgs",
    "SampleState",
    "init_state",
    "final_x",
    "plan_to",
    "call_model",
    "flag_nonfinite",
    "Denoised",
    "denoise",
    "check_steps",
    "check_choice",
    "check_positive",
]


class ModelArgs(NamedTuple):
    """What a step receives besides the state, plan row and noise: the model's weights (a pytree,
    or None for a model whose state the backend cannot see) and its condition (or None). Both are
    arguments of the loop, never constants captured by the step."""

    weights: Any
    cond: Any = None


class Sampler(NamedTuple):
    """A sampler ready to run: ``state = init(x_T)``, then ``step`` over ``plan``, then ``result(state)``.

    ``step(state, plan_i, noise_i, args)`` with ``args`` a :class:`ModelArgs`; ``model`` is the
    pure function the steps call (:class:`diffcore.models.ModelFn`): a sampler built once runs
    again with any weights of a model of the same structure (``Sampler.sample``); ``prior`` draws
    x_T from standard normal noise (the process's ``prior_sample``).

    ``times`` are the process times of the steps (for error messages); ``nfe`` is the number of
    model evaluations of the whole run (``None`` when the state counts them: ``state.nfe``);
    ``drive(step, state, plan, *, backend, key, noise_shape, sample_ids, progress, args)`` replaces the
    backend's ``loop`` for samplers that need another driver (adaptive solvers use the bounded
    while-loop; EDM's last row needs one model call instead of two).
    """

    name: str
    plan: Any
    init: Callable[[Any], Any]
    step: Callable[[Any, tuple, Any], Any]
    result: Callable[[Any], Any]
    noise_draws: int
    nfe: int | None
    times: np.ndarray
    drive: Callable[..., Any] | None = None
    model: Any = None
    prior: Callable[[Any], Any] | None = None

    def sample(self, model: Any, shape: tuple, **options: Any) -> Any:
        """Run this sampler with ``model``'s current weights (see :func:`diffcore.sample` for the
        options: backend, seed, dtype, device, sample_ids, x_T, mask, known, cond, progress)."""
        from . import run

        return run(self, model, shape, **options)


class SampleState(NamedTuple):
    """The state of a sampler that carries only x and the non-finite flag."""

    x: Any
    bad_step: Any


def init_state(x_T: Any) -> SampleState:
    return SampleState(x_T, initial_flag(x_T))


def final_x(state: Any) -> Any:
    return state.x


def plan_to(plan: Any, xp: Any, dtype: Any, device: Any) -> tuple:
    """The plan's columns in ``xp`` on ``device``: floating ones in ``dtype`` (network time inputs,
    fields named ``t_in*``, in at least float32), integer ones in the namespace's indexing dtype.
    Done once, before the loop."""
    # network time inputs keep at least float32: bf16 cannot hold 999 (it rounds to 1000)
    time_dtype = dtype if dtype in (xp.float32, xp.float64) else xp.float32
    names = getattr(type(plan), "_fields", ())
    groups: dict[str, list[int]] = {"index": [], "time": [], "value": []}
    columns = [np.asarray(c) for c in plan]
    for k, column in enumerate(columns):
        if column.dtype.kind in "iu":
            groups["index"].append(k)
        else:
            groups["time" if k < len(names) and names[k].startswith("t_in") else "value"].append(k)
    targets = {"index": default_dtype(xp, "indexing"), "time": time_dtype, "value": dtype}
    out: list[Any] = [None] * len(columns)
    for group, ks in groups.items():
        if not ks:
            continue
        # one host-to-device conversion per dtype (a plan has up to ~40 columns; each conversion
        # costs a dispatch), then rows of the stacked array
        host = np.stack([columns[k] if group == "index" else columns[k].astype(np.float64) for k in ks])
        stacked = as_xp(host, xp, targets[group], device)
        for j, k in enumerate(ks):
            out[k] = stacked[j, ...]
    return tuple(out)


def call_model(model: Callable[..., Any], args: ModelArgs, x: Any, t_in: Any, learned_variance: bool = False) -> Any:
    """model(weights, x, t_in broadcast to one entry per example[, cond]), its shape checked.

    The output must have x's shape (2 C channels on axis 1 with ``learned_variance``): a (B, 1),
    (1, D) or scalar output would otherwise broadcast silently into the samples. The check reads
    shapes only, so it costs nothing inside a compiled loop.
    """
    if is_torch_array(t_in):  # a view, without array_api_compat's dispatch (per step on eager torch)
        t_vec = t_in.expand(x.shape[0])
    else:
        t_vec = array_namespace(x).broadcast_to(t_in, (x.shape[0],))
    out = model(args.weights, x, t_vec, args.cond)
    check_output_shape(out, x, learned_variance)
    return out


def check_output_shape(out: Any, x: Any, learned_variance: bool = False) -> None:
    """The model output has x's shape (2 C channels with ``learned_variance``) and framework."""
    if type(out).__module__.split(".", 1)[0] != type(x).__module__.split(".", 1)[0] and not isinstance(out, type(x)):
        raise TypeError(
            f"the model returned a {type(out).__module__.split('.', 1)[0]} {type(out).__name__} for x of type "
            f"{type(x).__module__.split('.', 1)[0]} {type(x).__name__}: it must return an array of x's framework"
        )
    shape = getattr(out, "shape", None)
    expected = tuple(x.shape)
    if learned_variance and len(expected) >= 2:
        expected = (expected[0], 2 * expected[1]) + expected[2:]
    if shape is None or tuple(shape) != expected:
        got = "an output without a shape" if shape is None else f"shape {tuple(shape)}"
        raise ValueError(
            f"the model returned {got} for x of shape {tuple(x.shape)}; it must return shape {expected}"
            + (" (2 C channels: the mean and the variance outputs)" if learned_variance else " (x's shape)")
        )


def flag_nonfinite(bad_step: Any, value: Any, index: Any) -> Any:
    """``bad_step`` (-1 while all is well) set to ``index`` at the first non-finite ``value``.

    Samplers flag the new state: a non-finite model output reaches it, and so does a finite output
    made non-finite by a conversion (a division by alpha, exp of a log-variance).

    Carried through the loop and raised after it: no host sync per step.

    The test is exact, in both directions. On torch, whose isfinite is four elementwise kernels
    (``x == x``, ``abs``, ``!= inf``, ``*``) and their temporaries, it is one sum instead
    (docs/performance.md): ``value - value`` is exactly 0 where ``value`` is finite and NaN where
    it is inf or NaN, so its sum is exactly 0 for a finite ``value`` -- it cannot overflow, unlike
    a sum of ``value`` itself, which is inf for finite float32 entries near 3.4e38 / size -- and
    NaN otherwise; ``s != s`` is the NaN test. That branch calls tensor methods: array_api_compat's
    wrappers of sum and where cost more than the kernels on a state of this size. Elsewhere
    (NumPy, array_api_strict, XLA) ``all(isfinite(value))`` is already one cheap pass.
    """
    if is_torch_array(value):
        s = (value - value).sum()
        if index.dtype != bad_step.dtype:
            index = index.to(bad_step.dtype)
        return index.where((s != s) & (bad_step < 0), bad_step)
    xp = array_namespace(value)
    bad = xp.logical_not(xp.all(xp.isfinite(value)))
    return xp.where(xp.logical_and(bad_step < 0, bad), xp.astype(index, bad_step.dtype), bad_step)


def initial_flag(x: Any) -> Any:
    xp = array_namespace(x)
    return xp.asarray(-1, dtype=default_dtype(xp, "indexing"), device=array_device(x))


class Denoised(NamedTuple):
    x0: Any
    eps: Any
    output: Any


def denoise(model, args: ModelArgs, x, t_in, alpha, sigma, prediction: str, clip: bool = False) -> Denoised:
    """The model's x_0 and eps at x = alpha x_0 + sigma eps (eps recomputed from the clipped x_0)."""
    output = call_model(model, args, x, t_in)
    x0 = to_x0(output, prediction, x, alpha, sigma)
    if clip:
        x0 = array_namespace(x).clip(x0, min=-1.0, max=1.0)
        eps = (x - alpha * x0) / sigma
    else:
        eps = to_eps(output, prediction, x, alpha, sigma)
    return Denoised(x0, eps, output)


def model_score(model, args: ModelArgs, x, t_in, alpha, sigma, prediction: str) -> tuple[Any, Any]:
    """(score, raw output) of the model at x."""
    output = call_model(model, args, x, t_in)
    return to_score(output, prediction, x, alpha, sigma), output


def check_steps(steps: Any, name: str = "steps") -> int:
    """A number of steps: an integer >= 1 (:func:`diffcore.checks.check_int`)."""
    return check_int(steps, name, 1)


def resolve_prediction(model: Any, process: Any, prediction: str | None, fallback: str) -> str:
    """What the model outputs: ``prediction`` if given, else what the model declares
    (``model.prediction``, e.g. analytic models), else the process's ``model_mean_type``, else
    ``fallback``. A given value that contradicts the model's declaration is refused."""
    declared = getattr(model, "prediction", None)
    if prediction is not None and declared is not None and prediction != declared:
        raise ValueError(f"prediction={prediction!r} but the model declares that it predicts {declared!r}")
    return check_prediction(prediction or declared or getattr(process, "model_mean_type", None) or fallback)
