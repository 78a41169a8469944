"""Controllable generation: inpainting by projection, classifier guidance, classifier-free guidance.

- Inpainting / imputation (Song et al. 2021, App. I; NCSN's inpainting): after every step of any
  sampler, replace the known part with the observation brought to the step's noise level,
  alpha_next * known + sigma_next * z. This is an approximation of sampling from the exact
  conditional (the unknown part never sees how the known part was noised): exact where the two
  parts are independent, biased where they are correlated (docs/samplers.md measures it).
  With an orthogonal channel ``basis`` the known part lives in that basis instead of pixel space:
  colorization (Song et al. 2021, App. I; score_sde's ``get_pc_colorizer``) knows the grey channel
  of a decorrelated colour basis (:func:`colorization_basis`) and generates the two others.
- Classifier guidance (Dhariwal & Nichol 2021; Song et al. 2021, eq. 14): score + scale * grad_x
  log p_t(y | x), i.e. eps - scale * sigma * grad, the gradient from the backend.
- Classifier-free guidance (Ho & Salimans 2021): uncond + scale * (cond - uncond); mixing eps or
  x_0 is the same (they are affine in each other at fixed x_t); learned-variance channels keep the
  conditional prediction.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from .._array import array_namespace, expand_to, is_traced, to_numpy
from ..parametrization import split_learned_variance, to_eps
from ._base import Sampler

__all__ = ["inpaint", "colorization_basis", "colorization_inputs", "change_basis", "classifier_free_guidance",
           "classifier_guidance"]


def _broadcasts(shape: tuple, target: tuple) -> bool:
    if len(shape) > len(target):
        return False
    for a, b in zip(shape[::-1], target[::-1]):
        if a not in (1, b):
            return False
    return True


def change_basis(basis: Any, x: Any) -> Any:
    """``basis`` (C, C) applied on the channel axis (axis 1) of ``x`` (B, C, ...): y[:, i] = sum_j basis[i, j] x[:, j].

    One batched matmul on x viewed as (B, C, rest); the inverse of an orthogonal basis is its transpose.
    """
    xp = array_namespace(x)
    shape = tuple(x.shape)
    y = xp.matmul(basis, xp.reshape(x, (shape[0], shape[1], -1)))
    return xp.reshape(y, shape)


def colorization_basis(channels: int = 3) -> np.ndarray:
    """An orthogonal (C, C) matrix whose first row is (1, ..., 1) / sqrt(C): the grey level (times
    sqrt(C)) and C - 1 colour-difference channels (Helmert's contrasts).

    For C = 3 the rows are (1, 1, 1)/sqrt 3, (-2, 1, 1)/sqrt 6, (0, -1, 1)/sqrt 2: the transpose of
    score_sde's colorization matrix M (up to the sign of the last row). Float64 NumPy.
    """
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 2:
        raise ValueError(f"channels must be an integer >= 2 (colour images have C = 3); got {channels!r}")
    C = int(channels)
    basis = np.zeros((C, C))
    basis[0] = 1.0 / np.sqrt(C)
    for k in range(1, C):  # row k: k - 1 zeros, -(C - k), then C - k ones
        m = C - k
        basis[k, k - 1] = -m
        basis[k, k:] = 1.0
        basis[k] /= np.sqrt(m * (m + 1))
    return basis


def colorization_inputs(images: Any, channels: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask, known, basis) for :func:`diffcore.sample` to colorize ``images``.

    ``images`` (B, C, ...) colour images whose grey level is kept, or (B, 1, ...) grey levels g in
    the data's scale (then the colour image is unknown and its grey level is g: known channel 0 is
    sqrt(C) g). ``mask`` (1, C, 1...) is 1 on the grey channel of :func:`colorization_basis` only;
    ``known`` holds the images in that basis (the colour channels are ignored). NumPy float64.
    """
    x = np.asarray(to_numpy(images), dtype=np.float64)
    if x.ndim < 2 or x.shape[1] not in (1, channels):
        raise ValueError(
            f"images must be (B, {channels}, ...) colour images or (B, 1, ...) grey levels; got shape {x.shape}"
        )
    basis = colorization_basis(channels)
    if x.shape[1] == 1:
        known = np.zeros((x.shape[0], channels) + x.shape[2:])
        known[:, :1] = np.sqrt(channels) * x
    else:
        known = np.asarray(change_basis(basis, x))
    mask = np.zeros((1, channels) + (1,) * (x.ndim - 2))
    mask[:, 0] = 1.0
    return mask, known, basis


def _check_basis(basis: Any, shape: tuple) -> None:
    if len(shape) < 2:
        raise ValueError(f"basis acts on the channel axis (axis 1): the samples need one; got shape {tuple(shape)}")
    C = shape[1]
    if tuple(getattr(basis, "shape", ())) != (C, C):
        raise ValueError(
            f"basis must be a ({C}, {C}) matrix acting on the {C} channels of the samples {tuple(shape)}; "
            f"got shape {tuple(getattr(basis, 'shape', ()))}"
        )
    if is_traced(basis):
        return
    xp = array_namespace(basis)
    exact = basis.dtype in (xp.float32, xp.float64)  # bfloat16 has no NumPy dtype: read it as float32
    b = np.asarray(to_numpy(basis if exact else xp.astype(basis, xp.float32)), dtype=np.float64)
    err = float(np.max(np.abs(b @ b.T - np.eye(C))))
    tol = max(1e-3, 8 * C * float(xp.finfo(basis.dtype).eps))  # a rounded basis: bf16 rounds to ~3e-3
    if not err <= tol:  # NaN fails too
        raise ValueError(
            f"basis must be orthogonal (basis @ basis.T = I: its transpose undoes it); max |basis basis^T - I| = {err:.3g}"
        )


def inpaint(sampler: Sampler, mask: Any, known: Any, shape: tuple, basis: Any = None) -> Sampler:
    """``sampler`` with the known part projected onto the current noise level after every step.

    ``mask`` is 1 (or True) where ``known`` holds the observation; both broadcast to ``shape``.
    After the final step the known part equals the clean observation exactly.

    ``basis`` (optional, an orthogonal (C, C) matrix on the channel axis): ``mask`` and ``known``
    live in that basis. After every step y = basis x, y <- m (alpha known + sigma z) + (1 - m) y,
    x = basis^T y: plain inpainting of the samples expressed in the basis (the model need not be),
    e.g. colorization (:func:`colorization_inputs`; Song et al. 2021, App. I). z is drawn in the
    basis: for an orthogonal basis it is standard normal in both.
    """
    if mask is None or known is None:
        raise ValueError("inpainting needs both mask and known (the observation); got only one of them")
    for name, a in (("mask", mask), ("known", known)):
        if not _broadcasts(tuple(a.shape), tuple(shape)):
            raise ValueError(f"{name} of shape {tuple(a.shape)} does not broadcast to the sample shape {tuple(shape)}")
    if basis is not None:
        _check_basis(basis, tuple(shape))
        basis_t = array_namespace(basis).matrix_transpose(basis)
    fields = type(sampler.plan)._fields
    try:
        ia, is_ = fields.index("alpha_next"), fields.index("sigma_next")
    except ValueError:
        raise ValueError(f"sampler {sampler.name!r} has no alpha_next / sigma_next in its plan: it cannot inpaint") from None
    k = sampler.noise_draws

    def replace(x: Any, value: Any) -> Any:
        """x with its known part (in the basis, if any) replaced by ``value``."""
        xp = array_namespace(x)
        m = xp.astype(mask, x.dtype)
        if basis is None:
            return m * value + (1.0 - m) * x
        y = change_basis(basis, x)
        return change_basis(basis_t, m * value + (1.0 - m) * y)

    def step(state, plan_i, noise_i, args):
        new = sampler.step(state, plan_i, noise_i[:, :k, ...] if k else None, args)
        x = replace(new.x, plan_i[ia] * known + plan_i[is_] * noise_i[:, k, ...])
        return new._replace(x=x)

    def result(state):
        return replace(sampler.result(state), known)

    suffix = "+inpaint" if basis is None else "+inpaint(basis)"
    return sampler._replace(name=sampler.name + suffix, step=step, result=result, noise_draws=k + 1)


def _takes_cond(model: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(model)
    except (TypeError, ValueError):
        return True
    params = list(sig.parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


def _check_conditional(model: Callable[..., Any], what: str) -> None:
    if not _takes_cond(model):
        raise TypeError(
            f"{what} needs a conditional model model(x, t_in, cond); the given model takes no cond argument"
        )


def _coefficients(process: Any, t_in: Any, x: Any) -> tuple[Any, Any]:
    t = process.time_from_model_time(t_in)
    return expand_to(process.alpha(t, dtype=x.dtype), x), expand_to(process.sigma(t, dtype=x.dtype), x)


def _from_eps(eps: Any, prediction: str, x: Any, alpha: Any, sigma: Any) -> Any:
    if prediction == "eps":
        return eps
    x0 = (x - sigma * eps) / alpha
    return {"x0": x0, "v": alpha * eps - sigma * x0, "score": -eps / sigma, "scaled_score": -eps}[prediction]


def classifier_free_guidance(
    model: Callable[..., Any],
    scale: float,
    *,
    null_cond: Any = None,
    learned_variance: bool = False,
) -> Callable[..., Any]:
    """A model that mixes conditional and unconditional predictions: uncond + scale (cond - uncond).

    At fixed x_t, eps, x_0, v and the score are affine in one another with the same coefficients
    for both predictions, so mixing the model's own outputs *is* guiding eps (or x_0, or v): the
    result is the same in every parametrisation, and no division by alpha or sigma is needed (which
    keeps zero-terminal-SNR schedules finite). The unconditional prediction is
    ``model(x, t_in, null_cond)``. With ``learned_variance`` the variance channels (second half of
    axis 1) are the conditional ones (Ho & Salimans 2021; Nichol et al. 2022).
    """
    _check_conditional(model, "classifier-free guidance")
    scale = float(scale)

    def guided(x: Any, t_in: Any, cond: Any = None) -> Any:
        out_c = model(x, t_in, cond)
        out_u = model(x, t_in, null_cond)
        if not learned_variance:
            return out_u + scale * (out_c - out_u)
        mean_c, var_c = split_learned_variance(out_c, x.shape[1])
        mean_u, _ = split_learned_variance(out_u, x.shape[1])
        return array_namespace(x).concat([mean_u + scale * (mean_c - mean_u), var_c], axis=1)

    return guided


def classifier_guidance(
    model: Callable[..., Any],
    process: Any,
    classifier: Callable[..., Any],
    scale: float,
    *,
    backend: Any,
    prediction: str = "eps",
) -> Callable[..., Any]:
    """A model whose score is shifted by scale * grad_x log p_t(y | x_t).

    ``classifier(x, t_in, y)`` returns per-example log p_t(y | x) (shape (B,)); ``y`` is the
    ``cond`` the sampler passes. eps_guided = eps - scale * sigma * grad (Dhariwal & Nichol 2021).
    The unguided model is called without ``cond`` if it takes none.
    """
    if not callable(classifier):
        raise TypeError(f"classifier must be callable classifier(x, t_in, y) -> log p(y|x); got {type(classifier).__name__}")
    conditional = _takes_cond(model)
    scale = float(scale)

    def guided(x: Any, t_in: Any, cond: Any = None) -> Any:
        if cond is None:
            raise ValueError("classifier guidance needs the class labels as cond (the sampler's cond= option)")
        out = model(x, t_in, cond) if conditional else model(x, t_in)
        xp = array_namespace(x)
        grad = backend.grad(lambda z: xp.sum(classifier(z, t_in, cond)))(x)
        alpha, sigma = _coefficients(process, t_in, x)
        eps = to_eps(out, prediction, x, alpha, sigma)
        return _from_eps(eps - scale * sigma * grad, prediction, x, alpha, sigma)

    return guided
