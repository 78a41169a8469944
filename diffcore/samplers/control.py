"""Controllable generation: inpainting by projection, classifier guidance, classifier-free guidance.

- Inpainting / imputation (Song et al. 2021, App. I; NCSN's inpainting): after every step of any
  sampler, replace the known part with the observation brought to the step's noise level,
  alpha_next * known + sigma_next * z. This is an approximation of sampling from the exact
  conditional (the unknown part never sees how the known part was noised): exact where the two
  parts are independent, biased where they are correlated (docs/samplers.md measures it).
- Classifier guidance (Dhariwal & Nichol 2021; Song et al. 2021, eq. 14): score + scale * grad_x
  log p_t(y | x), i.e. eps - scale * sigma * grad, the gradient from the backend.
- Classifier-free guidance (Ho & Salimans 2021): uncond + scale * (cond - uncond); mixing eps or
  x_0 is the same (they are affine in each other at fixed x_t); learned-variance channels keep the
  conditional prediction.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from .._array import array_namespace, expand_to
from ..parametrization import split_learned_variance, to_eps
from ._base import Sampler

__all__ = ["inpaint", "classifier_free_guidance", "classifier_guidance"]


def _broadcasts(shape: tuple, target: tuple) -> bool:
    if len(shape) > len(target):
        return False
    for a, b in zip(shape[::-1], target[::-1]):
        if a not in (1, b):
            return False
    return True


def inpaint(sampler: Sampler, mask: Any, known: Any, shape: tuple) -> Sampler:
    """``sampler`` with the known part projected onto the current noise level after every step.

    ``mask`` is 1 (or True) where ``known`` holds the observation; both broadcast to ``shape``.
    After the final step the known part equals the clean observation exactly.
    """
    if mask is None or known is None:
        raise ValueError("inpainting needs both mask and known (the observation); got only one of them")
    for name, a in (("mask", mask), ("known", known)):
        if not _broadcasts(tuple(a.shape), tuple(shape)):
            raise ValueError(f"{name} of shape {tuple(a.shape)} does not broadcast to the sample shape {tuple(shape)}")
    fields = type(sampler.plan)._fields
    try:
        ia, is_ = fields.index("alpha_next"), fields.index("sigma_next")
    except ValueError:
        raise ValueError(f"sampler {sampler.name!r} has no alpha_next / sigma_next in its plan: it cannot inpaint") from None
    k = sampler.noise_draws

    def project(x: Any, alpha: Any, sigma: Any, z: Any) -> Any:
        xp = array_namespace(x)
        m = xp.astype(mask, x.dtype)
        return m * (alpha * known + sigma * z) + (1.0 - m) * x

    def step(state, plan_i, noise_i, args):
        new = sampler.step(state, plan_i, noise_i[:, :k, ...] if k else None, args)
        x = project(new.x, plan_i[ia], plan_i[is_], noise_i[:, k, ...])
        return new._replace(x=x)

    def result(state):
        x = sampler.result(state)
        xp = array_namespace(x)
        m = xp.astype(mask, x.dtype)
        return m * known + (1.0 - m) * x

    return sampler._replace(name=sampler.name + "+inpaint", step=step, result=result, noise_draws=k + 1)


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
