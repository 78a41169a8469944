"""Samplers: short pure step functions written once against the process interface, run by a
backend's driver (a Python loop on numpy / torch, ``lax.scan`` under jit on JAX).

One call for users::

    result = diffcore.sample("ddim", model, process, shape=(16, 3, 32, 32), backend="torch", seed=0, steps=50)
    result.x, result.nfe

and the pieces for users who write their own loop: ``build(name, model, process, **options)``
returns a :class:`Sampler` with its plan, ``init``, ``step`` and ``result``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple


import math

import numpy as np

from .._array import (
    array_device,
    array_namespace,
    as_like,
    asarray_on,
    check_float_array,
    concrete_all_finite,
    default_dtype,
    values_checked_upstream,
)
from .._cache import cached
from ..backends import Backend, backend as _get_backend, check_backend_array, check_shape
from ..models import ModelFn, _MeanChannels, mean_channels, split_model
from ._base import Kept, ModelArgs, Sampler, nonfinite_probes, plan_to
from .ancestral import ddim, ddpm
from .control import colorization_basis, colorization_inputs, inpaint
from .grid import time_grid
from .ode import FACTORIES as _ODE_SAMPLERS
from .sde_samplers import FACTORIES as _SDE_SAMPLERS

__all__ = ["SAMPLERS", "Sampler", "SampleResult", "Trajectory", "build", "run", "sample", "register_sampler", "inpaint",
           "colorization_basis", "colorization_inputs", "time_grid"]

SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    **_SDE_SAMPLERS,
    **_ODE_SAMPLERS,
}

# stream ids for fold_in: the prior draw and the loop's per-step noise never share a key
_PRIOR_STREAM = 0
_LOOP_STREAM = 1


def register_sampler(name: str, factory: Callable[..., Sampler]) -> None:
    """Add a sampler factory ``factory(model, process, **options) -> Sampler`` under ``name``."""
    SAMPLERS[name] = factory


class Trajectory(NamedTuple):
    """The states a run kept (``keep=``): ``x`` (K, *shape), x after ``steps[k]`` steps of the
    sampler (0: x_T; the number of steps: the samples, as returned), at process times ``times[k]``
    (the time the next step starts from; NaN for the samples, at the sampler's end)."""

    x: Any
    steps: tuple
    times: np.ndarray


class SampleResult(NamedTuple):
    """The samples, the number of model evaluations it took, and the kept states (``keep=``; else None)."""

    x: Any
    nfe: int
    trajectory: Trajectory | None = None


def build(name: str, model: Callable[..., Any], process: Any, *, backend: str | Backend | None = None, **options: Any) -> Sampler:
    """The sampler ``name`` for ``model`` on ``process`` (see :data:`SAMPLERS`), ready to run many times.

    ``model`` fixes the structure the sampler calls (its pure function, :mod:`diffcore.models`), not
    its weights: ``sampler.sample(model, shape, ...)`` reads the current weights at every run, so a
    sampler built once serves a model being trained (JAX compiles its loop once). ``backend`` is
    the backend whose models it may split (the JAX backend splits flax nnx modules; default: numpy).
    """
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(sorted(SAMPLERS))}")
    _check_process(name, process)
    if "cond" in options:
        raise TypeError("cond is an argument of the run, not of the sampler: pass it to diffcore.sample or Sampler.sample")
    bk = _resolve_backend(backend)
    fn, _ = split_model(model, bk)
    return _build(name, _view(name, fn, process), process, options)


#: samplers that read a learned variance themselves; the others see only the mean channels
_READS_VARIANCE = ("ddpm",)


def _view(name: str, fn: ModelFn, process: Any) -> ModelFn:
    """The model as sampler ``name`` reads it: a learned-variance model's mean channels for every
    sampler but those that use the variance (Improved DDPM's DDIM uses the mean only, too)."""
    learned = getattr(process, "model_var_type", None) in ("learned", "learned_range")
    return mean_channels(fn) if learned and name not in _READS_VARIANCE else fn


def _build(name: str, fn: ModelFn, process: Any, options: dict) -> Sampler:
    """The sampler for the pure function ``fn``; reused from the cache when ``fn`` is reusable."""

    factory = SAMPLERS[name]
    _check_options(name, factory, options)
    prior = getattr(process, "prior_sample", None)

    def make() -> Sampler:
        return factory(fn, process, **options)._replace(model=fn, prior=prior)

    if not fn.reusable:  # its state is invisible to the backend: never reuse a loop built for it
        return make()
    return cached(("sampler", name, fn, process, tuple(sorted(options.items()))), make)


def _check_options(name: str, factory: Callable[..., Any], options: dict) -> None:
    """Unknown options name the sampler and list its own (rather than a bare TypeError)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - a factory without a signature
        return
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    known = [k for k, p in params.items() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"sampler {name!r} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(known)}")


def _check_process(name: str, process: Any) -> None:
    if process is None and name == "langevin":
        return
    if process is None or not all(callable(getattr(process, m, None)) for m in ("alpha", "sigma", "model_time")):
        raise TypeError(
            f"sampler {name!r} needs a process of the process interface (e.g. diffcore.VPSDE() or a "
            f"GaussianDiffusion); got process={process!r}"
        )


def _resolve_backend(backend: Any) -> Backend:
    if backend is None:
        return _get_backend("numpy")
    if isinstance(backend, str):
        return _get_backend(backend)
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a backend name (e.g. 'numpy', 'torch', 'jax') or a Backend; got {type(backend).__name__}")
    return backend


def sample(
    name: str,
    model: Callable[..., Any],
    process: Any,
    shape: tuple[int, ...],
    *,
    backend: str | Backend = "numpy",
    seed: int = 0,
    dtype: Any = None,
    device: Any = None,
    sample_ids: Any = None,
    x_T: Any = None,
    mask: Any = None,
    known: Any = None,
    basis: Any = None,
    cond: Any = None,
    progress: Callable[[int, int], None] | None = None,
    keep: Any = None,
    **options: Any,
) -> SampleResult:
    """Draw ``shape`` samples with sampler ``name`` and return them with the number of model calls.

    ``seed`` seeds the backend's generator (``sample_ids`` seeds each example on its own, so a
    sample does not depend on its batch); ``x_T`` replaces the prior draw; ``mask`` / ``known``
    inpaint (mask 1 where ``known`` holds), in the orthogonal channel ``basis`` (C, C) if given
    (colorization: :func:`colorization_inputs`); ``cond`` conditions the model (class labels...).
    ``keep`` (numbers of steps, e.g. ``[0, 10, 50]``; negative ones count from the end) keeps x
    after those steps: ``result.trajectory`` (:class:`Trajectory`); on JAX the kept states are part
    of the compiled loop's carry. Costs one K-fold select on the state per step.
    Other options go to the sampler (``steps``, ``eta``...). Non-finite values stop the run with
    an error naming the first bad step and its time.

    The model's weights are an argument of the loop: changed weights always give new samples.
    A model whose weights the backend can see (:class:`diffcore.Model`, a flax nnx module on JAX)
    reuses the loop built for the same sampler, process and options (JAX compiles it once); any
    other callable gets a loop of its own on every call. To run one sampler many times, build it
    once: ``s = diffcore.build_sampler(name, model, process, **options)``, then ``s.sample(model, shape)``.
    """
    bk = _resolve_backend(backend)
    if "cond" in options:  # pragma: no cover - cond is a named argument above
        raise TypeError("cond given twice")
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(sorted(SAMPLERS))}")
    _check_process(name, process)
    fn, weights = split_model(model, bk)
    fn = _view(name, fn, process)
    sampler = _build(name, fn, process, options)
    return _run(sampler, fn, weights, shape, bk, seed=seed, dtype=dtype, device=device, sample_ids=sample_ids,
                x_T=x_T, mask=mask, known=known, basis=basis, cond=cond, progress=progress, keep=keep)


def run(
    sampler: Sampler,
    model: Callable[..., Any],
    shape: tuple[int, ...],
    *,
    backend: str | Backend = "numpy",
    seed: int = 0,
    dtype: Any = None,
    device: Any = None,
    sample_ids: Any = None,
    x_T: Any = None,
    mask: Any = None,
    known: Any = None,
    basis: Any = None,
    cond: Any = None,
    progress: Callable[[int, int], None] | None = None,
    keep: Any = None,
) -> SampleResult:
    """Run a built ``sampler`` with ``model``'s current weights (``Sampler.sample``)."""
    bk = _resolve_backend(backend)
    fn, weights = split_model(model, bk)
    if isinstance(getattr(sampler.model, "apply", None), _MeanChannels):
        fn = mean_channels(fn)
    if sampler.model is not None and fn != sampler.model:
        raise ValueError(
            f"sampler {sampler.name!r} was built for another model ({sampler.model!r}); got {fn!r}: build a sampler "
            "for this model, or pass a model of the same structure (a diffcore.Model with the same apply, an nnx "
            "module of the same graph)"
        )
    return _run(sampler, sampler.model or fn, weights, shape, bk, seed=seed, dtype=dtype, device=device,
                sample_ids=sample_ids, x_T=x_T, mask=mask, known=known, basis=basis, cond=cond, progress=progress,
                keep=keep)


def _keep_steps(keep: Any, n: int) -> tuple[int, ...]:
    """The kept numbers of steps, sorted, each in 0..n (negative ones count from n)."""
    try:
        values = [keep] if isinstance(keep, (int, np.integer)) else list(keep)
    except TypeError:
        values = [keep]
    out = set()
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not -n - 1 <= v <= n:
            raise ValueError(f"keep must hold numbers of steps in 0..{n} (or -{n + 1}..-1 from the end); got {keep!r}")
        out.add(int(v) % (n + 1))
    if not out:
        raise ValueError(f"keep must name at least one number of steps in 0..{n}; got {keep!r}")
    return tuple(sorted(out))


def _keeping(sampler: Sampler, steps: tuple[int, ...], like: Any) -> Sampler:
    """``sampler`` whose state carries the kept states (:class:`Kept`): after step i the new x is
    written to the slots kept after i + 1 steps, by one select (no host read: it runs under jit)."""
    xp = array_namespace(like)
    fields = type(sampler.plan)._fields
    ii = fields.index("index")
    idx_dtype = default_dtype(xp, "indexing")
    wanted = asarray_on(xp, np.asarray(steps, dtype=np.int64), array_device(like))
    wanted = xp.reshape(xp.astype(wanted, idx_dtype), (len(steps),) + (1,) * like.ndim)
    inner = sampler.step

    def step(state, plan_i, noise_i, args):
        new = inner(state.state, plan_i, noise_i, args)
        hit = wanted == xp.astype(plan_i[ii], idx_dtype) + 1
        return Kept(new, xp.where(hit, new.x[None, ...], state.xs))

    return sampler._replace(step=step)


def _run(sampler, fn, weights, shape, bk, *, seed, dtype, device, sample_ids, x_T, mask, known, basis, cond, progress,
         keep=None):
    shape = check_shape(shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive sizes (batch first); got {shape}")
    key = bk.key(seed)
    if x_T is None:
        noise = bk.normal(bk.fold_in(key, _PRIOR_STREAM), shape, dtype, sample_ids=sample_ids, device=device)
        x_T = sampler.prior(noise) if sampler.prior is not None else noise
    else:
        check_float_array(x_T, "x_T")
        check_backend_array(bk, x_T, "x_T")
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}; got {tuple(x_T.shape)}")
    if concrete_all_finite(x_T) is False:  # eager arrays only (one read): a NaN start is not the model's fault
        raise FloatingPointError(
            f"sampler {sampler.name!r}: x_T holds non-finite values (NaN or inf) before the first step; "
            "check the x_T passed in, or the prior draw in this dtype"
        )
    if mask is not None or known is not None:  # converted once, here: the loop must not convert or move them
        if mask is None or known is None:
            raise ValueError("inpainting needs both mask and known (the observation); got only one of them")
        sampler = inpaint(sampler, as_like(mask, x_T), as_like(known, x_T), shape,
                          basis=None if basis is None else as_like(basis, x_T))
    elif basis is not None:
        raise ValueError("basis is the basis of mask and known (inpainting, colorization); got a basis without them")
    xp = array_namespace(x_T)
    n_steps = int(np.asarray(sampler.plan[0]).shape[0])
    kept = None
    if keep is not None:
        kept = _keep_steps(keep, n_steps)
        sampler = _keeping(sampler, kept, x_T)

    plan = plan_to(sampler.plan, xp, x_T.dtype, array_device(x_T))
    state = sampler.init(x_T)
    if kept is not None:
        state = Kept(state, xp.stack([x_T] * len(kept)))
    noise_shape = (shape[0], sampler.noise_draws) + shape[1:] if sampler.noise_draws else None
    loop_options = dict(
        key=bk.fold_in(key, _LOOP_STREAM),
        noise_shape=noise_shape,
        sample_ids=sample_ids if noise_shape is not None else None,
        progress=progress,
        args=ModelArgs(weights, cond),
    )
    # the plan's times are valid by construction: no sync per step; eager torch steps keep their
    # non-finite probes aside instead of folding each into the state's flag (flag_nonfinite)
    with values_checked_upstream(), nonfinite_probes() as probes:
        if sampler.drive is not None:
            state = sampler.drive(sampler.step, state, plan, backend=bk, **loop_options)
        else:
            state = bk.loop(sampler.step, state, plan, **loop_options)
    if kept is not None:
        state, xs = state
    bad = probes.first_bad(state.bad_step)
    if bad >= 0:
        when = sampler.times[bad] if bad < len(sampler.times) else sampler.times[-1]
        raise FloatingPointError(
            f"sampler {sampler.name!r}: the state became non-finite at step {bad} (time {when:g} of the process); "
            f"the model may have returned NaN or inf there, or a step size or coefficient overflowed or "
            f"underflowed in {x_T.dtype} (e.g. the corrector's step in float16); the samples were discarded"
        )
    nfe = sampler.nfe if sampler.nfe is not None else int(state.nfe)
    samples = sampler.result(state)
    trajectory = None
    if kept is not None:
        if kept[-1] == n_steps:  # the samples, whichever driver ran the last row
            xs = xp.concat([xs[:-1, ...], samples[None, ...]], axis=0)
        times = [float(sampler.times[k]) if k < len(sampler.times) else math.nan for k in kept]
        trajectory = Trajectory(xs, kept, np.asarray(times))
    return SampleResult(samples, nfe, trajectory)
