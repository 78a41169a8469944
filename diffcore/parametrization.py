"""Conversions among the quantities a network may predict: eps, x_0, v, the score, sigma * score.

All in terms of the marginal x_t = alpha x_0 + sigma eps (alpha, sigma broadcast against x_t), so
they serve every process (discrete, VP, sub-VP, VE). v = alpha eps - sigma x_0 (Salimans & Ho 2022,
"Progressive Distillation"); for alpha^2 + sigma^2 != 1 (VE) the inverse below is the general one.
The score of q(x_t | x_0) at x_t is -eps / sigma.

The flow-velocity prediction "u" = eps - x_0 is what rectified-flow models predict (diffusers'
flow-matching schedulers; for x_t = (1 - t) x_0 + t eps it is dx_t/dt). From x_t = alpha x_0 +
sigma eps: x_0 = (x_t - sigma u) / (alpha + sigma), eps = (x_t + alpha u) / (alpha + sigma), finite
wherever alpha + sigma > 0 -- in particular at alpha = 0, where eps and score outputs cannot give x_0.
"""

from __future__ import annotations

from typing import Any

from .checks import check_prediction  # noqa: F401  (re-exported: the allowed values live here)

__all__ = [
    "PREDICTIONS",
    "check_prediction",
    "x0_from_eps",
    "eps_from_x0",
    "v_from_eps_x0",
    "x0_from_v",
    "eps_from_v",
    "score_from_eps",
    "eps_from_score",
    "to_x0",
    "to_eps",
    "to_score",
    "to_v",
    "to_scaled_score",
    "u_from_eps_x0",
    "x0_from_u",
    "eps_from_u",
    "to_u",
]

#: "scaled_score" is NCSNv2's network output net(x) = sigma * score (Song & Ermon 2020), i.e. -eps.
#: "u" is the flow velocity eps - x_0 (rectified flow).
PREDICTIONS = ("eps", "x0", "v", "score", "scaled_score", "u")




def x0_from_eps(x_t, eps, alpha, sigma):
    """x_0 = (x_t - sigma eps) / alpha."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t, x0, alpha, sigma):
    """eps = (x_t - alpha x_0) / sigma."""
    return (x_t - alpha * x0) / sigma


def v_from_eps_x0(eps, x0, alpha, sigma):
    """v = alpha eps - sigma x_0."""
    return alpha * eps - sigma * x0


def x0_from_v(x_t, v, alpha, sigma):
    """x_0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)."""
    return (alpha * x_t - sigma * v) / (alpha * alpha + sigma * sigma)


def eps_from_v(x_t, v, alpha, sigma):
    """eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)."""
    return (sigma * x_t + alpha * v) / (alpha * alpha + sigma * sigma)


def score_from_eps(eps, sigma):
    """grad log q_t(x_t) = -eps / sigma."""
    return -eps / sigma


def eps_from_score(score, sigma):
    """eps = -sigma * score."""
    return -sigma * score


def to_x0(output, prediction: str, x_t, alpha, sigma):
    """The x_0 implied by a network output of kind ``prediction``."""
    check_prediction(prediction)
    if prediction == "x0":
        return output
    if prediction == "v":
        return x0_from_v(x_t, output, alpha, sigma)
    if prediction == "u":
        return x0_from_u(x_t, output, alpha, sigma)
    return x0_from_eps(x_t, to_eps(output, prediction, x_t, alpha, sigma), alpha, sigma)


def to_eps(output, prediction: str, x_t, alpha, sigma):
    """The eps implied by a network output of kind ``prediction``."""
    check_prediction(prediction)
    if prediction == "eps":
        return output
    if prediction == "x0":
        return eps_from_x0(x_t, output, alpha, sigma)
    if prediction == "v":
        return eps_from_v(x_t, output, alpha, sigma)
    if prediction == "scaled_score":
        return -output
    if prediction == "u":
        return eps_from_u(x_t, output, alpha, sigma)
    return eps_from_score(output, sigma)


def to_score(output, prediction: str, x_t, alpha, sigma):
    """The score grad log p_t(x_t) implied by a network output of kind ``prediction``."""
    check_prediction(prediction)
    if prediction == "score":
        return output
    if prediction == "scaled_score":
        return output / sigma
    return score_from_eps(to_eps(output, prediction, x_t, alpha, sigma), sigma)


def to_v(output, prediction: str, x_t, alpha, sigma):
    """The v implied by a network output of kind ``prediction``."""
    check_prediction(prediction)
    if prediction == "v":
        return output
    eps = to_eps(output, prediction, x_t, alpha, sigma)
    x0 = to_x0(output, prediction, x_t, alpha, sigma)
    return v_from_eps_x0(eps, x0, alpha, sigma)


def to_scaled_score(output, prediction: str, x_t, alpha, sigma):
    """NCSNv2's sigma * score implied by a network output of kind ``prediction``."""
    check_prediction(prediction)
    if prediction == "scaled_score":
        return output
    return -to_eps(output, prediction, x_t, alpha, sigma)


def u_from_eps_x0(eps, x0):
    """u = eps - x_0 (the flow velocity of x_t = (1 - t) x_0 + t eps)."""
    return eps - x0


def x0_from_u(x_t, u, alpha, sigma):
    """x_0 = (x_t - sigma u) / (alpha + sigma)."""
    return (x_t - sigma * u) / (alpha + sigma)


def eps_from_u(x_t, u, alpha, sigma):
    """eps = (x_t + alpha u) / (alpha + sigma)."""
    return (x_t + alpha * u) / (alpha + sigma)


def to_u(output, prediction: str, x_t, alpha, sigma):
    """The flow velocity u = eps - x_0 implied by a network output of kind ``prediction``."""
    check_prediction(prediction)
    if prediction == "u":
        return output
    return u_from_eps_x0(to_eps(output, prediction, x_t, alpha, sigma), to_x0(output, prediction, x_t, alpha, sigma))


def split_learned_variance(model_output, channels: int) -> tuple[Any, Any]:
    """Split a (B, 2C, ...) output into the mean part and the variance part along axis 1."""
    if model_output.ndim < 2 or model_output.shape[1] != 2 * channels:
        raise ValueError(
            f"model_output must have 2*C = {2 * channels} channels on axis 1 for a learned variance; "
            f"got shape {tuple(model_output.shape)}"
        )
    return model_output[:, :channels, ...], model_output[:, channels:, ...]
