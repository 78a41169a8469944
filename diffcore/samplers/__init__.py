"""Samplers: short pure step functions written once against the process interface, run by a
backend's driver (a Python loop on numpy / torch, ``lax.scan`` under jit on JAX).

One call for users::

    result = diffcore.sample("ddim", model, process, shape=(16, 3, 32, 32), backend="torch", seed=0, steps=50)
    result.x, result.nfe

and the pieces for users who write their own loop: ``build(name, model, process, **options)``
returns a :class:`Sampler` with its plan, ``init``, ``step`` and ``result``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from .._array import array_device, array_namespace, as_like, values_checked_upstream
from .._cache import cached
from ..backend import Backend, backend as _get_backend
from ._base import Sampler, plan_to
from .ancestral import ddim, ddpm
from .control import inpaint
from .grid import time_grid
from .ode import FACTORIES as _ODE_SAMPLERS
from .sde_samplers import FACTORIES as _SDE_SAMPLERS

__all__ = ["SAMPLERS", "Sampler", "SampleResult", "build", "sample", "register_sampler", "inpaint", "time_grid"]

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


class SampleResult(NamedTuple):
    """The samples and the number of model evaluations it took."""

    x: Any
    nfe: int


def build(name: str, model: Callable[..., Any], process: Any, **options: Any) -> Sampler:
    """The sampler ``name`` for ``model`` on ``process`` (see :data:`SAMPLERS`)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(sorted(SAMPLERS))}")
    if not callable(model):
        raise TypeError(f"model must be callable model(x, t_in, cond=None); got {type(model).__name__}")
    # the same sampler object for the same inputs, so that JAX compiles its loop once
    key = ("sampler", name, model, process, tuple(sorted(options.items())))
    return cached(key, lambda: SAMPLERS[name](model, process, **options))


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
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> SampleResult:
    """Draw ``shape`` samples with sampler ``name`` and return them with the number of model calls.

    ``seed`` seeds the backend's generator (``sample_ids`` seeds each example on its own, so a
    sample does not depend on its batch); ``x_T`` replaces the prior draw; ``mask`` / ``known``
    inpaint (mask 1 where ``known`` holds). Other options go to the sampler (``steps``, ``eta``...).
    Non-finite model outputs stop the run with an error naming the first bad step and its time.
    """
    bk = _get_backend(backend) if isinstance(backend, str) else backend
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive sizes (batch first); got {shape}")
    sampler = build(name, model, process, **options)
    key = bk.key(seed)
    if x_T is None:
        noise = bk.normal(bk.fold_in(key, _PRIOR_STREAM), shape, dtype, sample_ids=sample_ids, device=device)
        x_T = process.prior_sample(noise)
    elif tuple(x_T.shape) != shape:
        raise ValueError(f"x_T must have shape {shape}; got {tuple(x_T.shape)}")
    if mask is not None or known is not None:  # converted once, here: the loop must not convert or move them
        if mask is None or known is None:
            raise ValueError("inpainting needs both mask and known (the observation); got only one of them")
        sampler = inpaint(sampler, as_like(mask, x_T), as_like(known, x_T), shape)
    xp = array_namespace(x_T)

    plan = plan_to(sampler.plan, xp, x_T.dtype, array_device(x_T))
    state = sampler.init(x_T)
    noise_shape = (shape[0], sampler.noise_draws) + shape[1:] if sampler.noise_draws else None
    loop_options = dict(
        key=bk.fold_in(key, _LOOP_STREAM),
        noise_shape=noise_shape,
        sample_ids=sample_ids if noise_shape is not None else None,
        progress=progress,
    )
    with values_checked_upstream():  # the plan's times are valid by construction: no sync per step
        if sampler.drive is not None:
            state = sampler.drive(sampler.step, state, plan, backend=bk, **loop_options)
        else:
            state = bk.loop(sampler.step, state, plan, **loop_options)
    bad = int(state.bad_step)
    if bad >= 0:
        raise FloatingPointError(
            f"sampler {name!r}: the model returned a non-finite value at step {bad} "
            f"(time {sampler.times[bad]:g} of the process); the samples were discarded"
        )
    nfe = sampler.nfe if sampler.nfe is not None else int(state.nfe)
    return SampleResult(sampler.result(state), nfe)
