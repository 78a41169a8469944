"""Divergence of a vector field, for any backend: the trace of its Jacobian, per example.

Built only on a backend's ``vjp`` / ``jvp`` hooks and the Array API, so it runs wherever a backend
has autodiff (torch, JAX, a third party's). ``f`` maps a batch ``(B, ...)`` to ``(B, ...)`` with
the examples independent (no batch norm across examples), so one product with a vector that is
the same basis vector e_d in every example gives column d of every example's Jacobian at once.

- :func:`divergence_exact`: div f(x) = sum_d e_d^T J_f(x) e_d, D products (D = data dimensions).
- :func:`divergence_hutchinson`: div f(x) ~ (1/K) sum_k eps_k^T J_f(x) eps_k with probes of zero
  mean and identity covariance (Rademacher or Gaussian), one product per probe (Hutchinson 1989;
  FFJORD, Grathwohl et al. 2019; score_sde's likelihood).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ._array import array_device, array_namespace, as_xp, check_float_array, sum_flat
from .checks import check_choice

__all__ = ["divergence_exact", "divergence_hutchinson", "as_probes", "DEFAULT_MAX_DIM"]

#: the largest data dimension :func:`divergence_exact` accepts unless told otherwise
DEFAULT_MAX_DIM = 64

_MODES = ("vjp", "jvp")


def _check_mode(mode: str) -> str:
    return check_choice(mode, _MODES, "mode")


def _product(backend: Any, f: Callable[[Any], Any], x: Any, v: Any, mode: str, first: bool) -> tuple[Any, Any]:
    """(f(x), v^T J) for mode 'vjp', (f(x), J v) for mode 'jvp'; the first call checks f's shape."""
    try:
        out, prod = backend.vjp(f, x, v) if mode == "vjp" else backend.jvp(f, x, v)
    except Exception as exc:
        if first:  # a vjp fails inside the framework when f changes the shape: say why
            _check_output(f(x), x, exc)
        raise
    if first:
        _check_output(out, x)
    return out, prod


def _check_output(out: Any, x: Any, cause: BaseException | None = None) -> None:
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(
            f"f must map x of shape {tuple(x.shape)} to an output of the same shape; got {tuple(out.shape)}"
        ) from cause


def divergence_exact(
    backend: Any,
    f: Callable[[Any], Any],
    x: Any,
    *,
    max_dim: int = DEFAULT_MAX_DIM,
    mode: str = "vjp",
    return_output: bool = False,
) -> Any:
    """Per-example divergence tr(J_f(x)) of shape (B,), from D products with basis vectors.

    ``x`` has shape (B, ...) and D = prod(x.shape[1:]) <= ``max_dim`` (above it, use
    :func:`divergence_hutchinson`). ``mode`` picks ``backend.vjp`` (rows of J) or ``backend.jvp``
    (columns). With ``return_output``, returns ``(f(x), divergence)``.
    """
    xp = check_float_array(x, "x")
    mode = _check_mode(mode)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and at least one data axis, (B, ...); got shape {tuple(x.shape)}")
    dim = math.prod(x.shape[1:])
    if isinstance(max_dim, bool) or not isinstance(max_dim, int) or max_dim < 1:
        raise ValueError(f"max_dim must be a positive integer; got {max_dim!r}")
    if dim > max_dim:
        raise ValueError(
            f"divergence_exact needs one {mode} per data dimension, and x of shape {tuple(x.shape)} has "
            f"{dim} > max_dim={max_dim}; use divergence_hutchinson(backend, f, x, probes) with "
            "Rademacher or Gaussian probes (an unbiased estimate), or raise max_dim"
        )
    batch = x.shape[0]
    eye = np.eye(dim, dtype=np.float64)
    device = array_device(x)
    out, total = None, None
    for d in range(dim):
        basis = xp.broadcast_to(as_xp(eye[d].reshape((1,) + tuple(x.shape[1:])), xp, x.dtype, device), x.shape)
        out, prod = _product(backend, f, x, basis, mode, first=d == 0)
        column = xp.reshape(prod, (batch, dim))[:, d]
        total = column if total is None else total + column
    return (out, total) if return_output else total


def as_probes(x: Any, probes: Any, *, cast: bool = False) -> Any:
    """Hutchinson probes for ``x`` as a (K, B, ...) array (a single (B, ...) probe gets K = 1).

    Checks the namespace, the shape, K >= 1 and a real floating dtype equal to x's (``cast``:
    converted to it instead).
    """
    xp = array_namespace(x)
    try:
        array_namespace(x, probes)
    except TypeError:
        raise TypeError(
            f"probes must be an array of the namespace of x ({type(x).__name__}); got {type(probes).__name__}"
        ) from None
    shape = tuple(probes.shape)
    if shape == tuple(x.shape):
        probes = xp.expand_dims(probes, axis=0)
    elif not (len(shape) == x.ndim + 1 and shape[1:] == tuple(x.shape)):
        raise ValueError(
            f"probes must have shape (K, *x.shape) = (K, {', '.join(map(str, x.shape))}) or x's shape "
            f"{tuple(x.shape)}; got {shape}"
        )
    if probes.shape[0] < 1:
        raise ValueError(f"probes must hold at least one probe (K >= 1); got shape {shape}")
    if not xp.isdtype(probes.dtype, "real floating"):
        raise TypeError(f"probes must be a real floating array; got dtype {probes.dtype}")
    if probes.dtype != x.dtype:
        if not cast:
            raise TypeError(f"probes must have the dtype of x ({x.dtype}); got {probes.dtype}")
        probes = xp.astype(probes, x.dtype)
    return probes


def divergence_hutchinson(
    backend: Any,
    f: Callable[[Any], Any],
    x: Any,
    probes: Any,
    *,
    mode: str = "vjp",
    return_output: bool = False,
) -> Any:
    """Per-example Hutchinson estimate (1/K) sum_k eps_k^T J_f(x) eps_k, shape (B,).

    ``probes`` has shape (K, B, ...) or (B, ...) (K = 1), the dtype of ``x``, zero mean and identity
    covariance (``backend.rademacher`` has the lowest variance; ``backend.normal`` also works).
    One ``backend.vjp`` (or ``jvp``) per probe. With ``return_output``, returns ``(f(x), estimate)``.
    """
    check_float_array(x, "x")
    mode = _check_mode(mode)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and at least one data axis, (B, ...); got shape {tuple(x.shape)}")
    probes = as_probes(x, probes)
    count = probes.shape[0]
    out, total = None, None
    for k in range(count):
        eps = probes[k, ...]
        out, prod = _product(backend, f, x, eps, mode, first=k == 0)
        term = sum_flat(prod * eps)
        total = term if total is None else total + term
    estimate = total / count
    return (out, estimate) if return_output else estimate
