"""Likelihood terms shared by the variational bound and the losses.

Gaussian KL, the discretized Gaussian decoder L_0 for 8-bit data (Ho et al. 2020, §3.3), and the
continuous Gaussian log-likelihood for real-valued data. All elementwise, any Array API namespace.
"""

from __future__ import annotations

import math

from ._array import array_namespace

__all__ = [
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "gaussian_log_likelihood",
    "standard_normal_logp",
]

_LOG_2PI = math.log(2.0 * math.pi)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats.

    = 1/2 (-1 + logvar2 - logvar1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^(-logvar2)).
    """
    xp = array_namespace(mean1, logvar1, mean2, logvar2)
    return 0.5 * (-1.0 + logvar2 - logvar1 + xp.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * xp.exp(-logvar2))


def approx_standard_normal_cdf(x):
    """Phi(x) ~ 1/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); the Array API has no erf."""
    xp = array_namespace(x)
    return 0.5 * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
    """log P(x) of 8-bit data x in [-1, 1] under a Gaussian discretized into bins of width 2/255.

    Bin edges x +- 1/255; the lowest bin integrates from -inf, the highest to +inf (Ho et al.
    2020, eq. 13). ``log_scales`` is log(std) = log-variance / 2. Probabilities are clamped at
    1e-12 before the log, as in the reference code.
    """
    xp = array_namespace(x, means, log_scales)
    half = 1.0 / 255.0
    centered = x - means
    inv_stdv = xp.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + half))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - half))
    tiny = 1e-12
    log_cdf_plus = xp.log(xp.clip(cdf_plus, min=tiny))
    log_one_minus_cdf_min = xp.log(xp.clip(1.0 - cdf_min, min=tiny))
    log_cdf_delta = xp.log(xp.clip(cdf_plus - cdf_min, min=tiny))
    # Data at -1 / +1 are the lowest / highest bins (the reference code's 0.999 thresholds).
    return xp.where(x < -0.999, log_cdf_plus, xp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def gaussian_log_likelihood(x, *, means, log_variance):
    """log N(x; means, e^log_variance), elementwise: the decoder for real-valued data."""
    xp = array_namespace(x, means, log_variance)
    return -0.5 * (_LOG_2PI + log_variance + (x - means) ** 2 * xp.exp(-log_variance))


def standard_normal_logp(z):
    """log N(z; 0, 1), elementwise."""
    return -0.5 * (_LOG_2PI + z * z)
