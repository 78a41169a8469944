"""Likelihood terms shared by the variational bound and the losses.

Gaussian KL, the discretized Gaussian decoder L_0 for 8-bit data (Ho et al. 2020, §3.3), and the
continuous Gaussian log-likelihood for real-valued data. All elementwise, any Array API namespace.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from ._array import array_namespace
from .checks import check_same_namespace

__all__ = [
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "gaussian_log_likelihood",
    "standard_normal_logp",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _namespace(**args: Any) -> Any:
    """The namespace of the named arguments: arrays of one framework, or Python numbers beside
    at least one array. None, lists and arrays of two frameworks are a TypeError naming the argument."""
    arrays = {}
    for name, a in args.items():
        if isinstance(a, numbers.Real) and not isinstance(a, bool):
            continue
        try:
            array_namespace(a)
        except TypeError:
            raise TypeError(f"{name} must be an array (or a Python number); got {type(a).__name__}") from None
        arrays[name] = a
    if not arrays:
        raise TypeError(f"at least one of {', '.join(args)} must be an array; got only Python numbers")
    return check_same_namespace(**arrays)


def _at_least_float32(xp: Any, *arrays: Any) -> tuple[Any, ...]:
    """The arrays in float32 where any is float16 / bfloat16 (others unchanged): the decoder's 1e-12
    probability floor is 0 in float16, and its log -inf."""
    low = [a for a in arrays if hasattr(a, "dtype") and a.dtype not in (xp.float32, xp.float64)
           and xp.isdtype(a.dtype, "real floating")]
    if not low:
        return arrays
    return tuple(xp.astype(a, xp.float32) if hasattr(a, "dtype") and a.dtype != xp.float64 else a for a in arrays)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats.

    = 1/2 (-1 + logvar2 - logvar1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^(-logvar2)).
    """
    xp = _namespace(mean1=mean1, logvar1=logvar1, mean2=mean2, logvar2=logvar2)
    return 0.5 * (-1.0 + logvar2 - logvar1 + xp.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * xp.exp(-logvar2))


def approx_standard_normal_cdf(x):
    """Phi(x) ~ 1/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); the Array API has no erf."""
    xp = _namespace(x=x)
    return 0.5 * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
    """log P(x) of 8-bit data x in [-1, 1] under a Gaussian discretized into bins of width 2/255.

    Bin edges x +- 1/255; the lowest bin integrates from -inf, the highest to +inf (Ho et al.
    2020, eq. 13). ``log_scales`` is log(std) = log-variance / 2. Probabilities are clamped at
    1e-12 before the log, as in the reference code. float16 / bfloat16 inputs are computed in
    float32 (the floor, and the CDF differences of narrow bins, vanish in float16) and the
    log-probabilities, which lie in [log 1e-12, 0], cast back.
    """
    xp = _namespace(x=x, means=means, log_scales=log_scales)
    out_dtype = xp.result_type(*[a for a in (x, means, log_scales) if hasattr(a, "dtype")])
    x, means, log_scales = _at_least_float32(xp, x, means, log_scales)
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
    out = xp.where(x < -0.999, log_cdf_plus, xp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))
    if out.dtype != out_dtype and xp.isdtype(out_dtype, "real floating"):
        out = xp.astype(out, out_dtype)
    return out


def gaussian_log_likelihood(x, *, means, log_variance):
    """log N(x; means, e^log_variance), elementwise: the decoder for real-valued data."""
    xp = _namespace(x=x, means=means, log_variance=log_variance)
    return -0.5 * (_LOG_2PI + log_variance + (x - means) ** 2 * xp.exp(-log_variance))


def standard_normal_logp(z):
    """log N(z; 0, 1), elementwise."""
    _namespace(z=z)
    return -0.5 * (_LOG_2PI + z * z)
