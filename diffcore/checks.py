"""Argument validation helpers: the one place diffcore checks Python-level arguments.

Every error names the argument, the value received and what is allowed (docs/README.md's
conventions). A wrong *type* is a ``TypeError``, a value of the right type outside the allowed
range is a ``ValueError``. Array value checks (NaN, ranges) read values only for concrete arrays:
JAX tracers, torch.compile fake tensors and loops whose inputs were checked upstream skip them
(:func:`diffcore._array.concrete_min_max`).

Helpers:

- :func:`check_int` -- an ``int`` (NumPy integers too; bools and floats refused), optionally bounded;
- :func:`check_real` -- a finite real number in an interval (bools, strings and arrays refused);
- :func:`check_positive`, :func:`check_nonnegative` -- finite real numbers > 0 / >= 0;
- :func:`check_bool` -- a real ``bool`` (the string ``"False"`` is not False);
- :func:`check_choice`, :func:`check_prediction` -- one of a fixed set of options;
- :func:`check_shape` -- a shape: a sequence of non-negative integers (``(4, 2.7)`` refused);
- :func:`check_dtype_floating` -- a real floating dtype of the namespace at hand;
- :func:`check_callable`, :func:`check_array`, :func:`check_same_namespace`, :func:`check_finite`.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Callable, Sequence

import numpy as np

from ._array import array_namespace, concrete_min_max

__all__ = [
    "check_int",
    "check_real",
    "check_positive",
    "check_nonnegative",
    "check_bool",
    "check_choice",
    "check_prediction",
    "check_shape",
    "check_dtype_floating",
    "check_callable",
    "check_array",
    "check_same_namespace",
    "check_finite",
    "framework_name",
]


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _describe(value: Any) -> str:
    return f"{value!r} of type {type(value).__name__}"


# ------------------------------------------------------------------------------- numbers


def check_int(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int within [minimum, maximum].

    Python and NumPy integers are accepted; bools, floats (even 10.0), strings and arrays are a
    ``TypeError``; an integer out of range a ``ValueError``.
    """
    if _is_bool(value) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer; got {_describe(value)}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}; got {value}")
    if maximum is not None and value > maximum:
        bound = f"<= {maximum}" if minimum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}; got {value}")
    return value


def check_real(
    value: Any,
    name: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = False,
    high_inclusive: bool = False,
) -> float:
    """``value`` as a finite Python float in the interval (low, high) (ends included on request).

    Python and NumPy reals are accepted; bools, strings, None and arrays are a ``TypeError``;
    NaN, infinities and values outside the interval a ``ValueError``.
    """
    if _is_bool(value) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    value = float(value)
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (math.isfinite(value) and above and below):
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be a finite number in {left}{low}, {high}{right}, got {value!r}")
    return value


def _check_number(value: Any, name: str, what: str, ok: Callable[[float], bool]) -> float:
    if _is_bool(value) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a {what}; got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be a {what}; got {value!r}")
    return v


def check_positive(value: Any, name: str) -> float:
    """``value`` as a finite Python float > 0 (TypeError for bools, strings, None, arrays)."""
    return _check_number(value, name, "positive number", lambda v: v > 0)


def check_nonnegative(value: Any, name: str) -> float:
    """``value`` as a finite Python float >= 0 (TypeError for bools, strings, None, arrays)."""
    return _check_number(value, name, "non-negative number", lambda v: v >= 0)


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a Python bool; anything else (``"False"``, 0, None) is a ``TypeError``."""
    if not _is_bool(value):
        raise TypeError(f"{name} must be a bool (True or False); got {_describe(value)}")
    return bool(value)


# ------------------------------------------------------------------------------- options


def check_choice(value: Any, allowed: Sequence[Any], name: str) -> Any:
    """``value`` if it is one of ``allowed``.

    Where every option is a string, a value that is not a string is a ``TypeError``; an unknown
    string (or any unknown value) is a ``ValueError``. The message lists the options.
    """
    allowed = tuple(allowed)
    listed = ", ".join(map(repr, allowed))
    if all(isinstance(a, str) for a in allowed) and not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {listed}; got {_describe(value)}")
    try:
        known = value in allowed
    except TypeError:  # unhashable / uncomparable values
        known = False
    if not known:
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_prediction(prediction: Any, name: str = "prediction") -> str:
    """One of :data:`diffcore.parametrization.PREDICTIONS` ("eps", "x0", "v", "score", "scaled_score", "u")."""
    from .parametrization import PREDICTIONS

    if type(prediction) is str and prediction in PREDICTIONS:  # the fast path: called inside loops
        return prediction
    return check_choice(prediction, PREDICTIONS, name)


def check_callable(value: Any, name: str, signature: str = "") -> Any:
    if not callable(value):
        raise TypeError(f"{name} must be callable{(' ' + signature) if signature else ''}; got {_describe(value)}")
    return value


# ------------------------------------------------------------------------------- shapes and dtypes


def check_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative Python ints.

    A sequence (tuple, list, ``torch.Size``) of integers; a float entry is accepted only when it
    is integral (4.0), never rounded (``(4, 2.7)`` is a ``TypeError``); bools, strings, None and a
    bare int are refused.
    """
    if type(shape) is tuple and all(type(s) is int and s >= 0 for s in shape):  # the fast path (per draw)
        return shape
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)) or _is_bool(shape):
        raise TypeError(f"{name} must be a tuple of non-negative integers; got {_describe(shape)}")
    out = []
    for i, s in enumerate(shape):
        if _is_bool(s) or isinstance(s, (str, bytes)) or s is None:
            raise TypeError(f"{name} must be a tuple of non-negative integers; {name}[{i}] is {_describe(s)}")
        if isinstance(s, (float, np.floating)):
            if not (math.isfinite(s) and float(s).is_integer()):
                raise TypeError(
                    f"{name} must be a tuple of non-negative integers; {name}[{i}] is {s!r}, not an integer "
                    f"(got {name}={tuple(shape)!r}); it is never rounded"
                )
            s = int(s)
        try:
            s = operator.index(s)
        except TypeError:
            raise TypeError(
                f"{name} must be a tuple of non-negative integers; {name}[{i}] is {_describe(s)}"
            ) from None
        if s < 0:
            raise ValueError(f"{name} must be a tuple of non-negative integers; {name}[{i}] is {s} (got {tuple(shape)!r})")
        out.append(s)
    return tuple(out)


def framework_name(x: Any) -> str:
    """"numpy", "torch", "jax", "array_api_strict", ... : the framework an array belongs to."""
    mod = type(x).__module__ or ""
    root = mod.split(".")[0]
    return {"jaxlib": "jax"}.get(root, root)


def check_dtype_floating(dtype: Any, xp: Any, name: str = "dtype") -> Any:
    """``dtype`` if it is a real floating dtype of namespace ``xp`` (float16, bfloat16, float32,
    float64); a dtype of another framework, a string, an integer or boolean dtype is a ``TypeError``."""
    ns = getattr(xp, "__name__", str(xp))
    try:
        ok = bool(xp.isdtype(dtype, "real floating"))
    except Exception:  # another framework's dtype, a string, a Python type
        raise TypeError(
            f"{name} must be a real floating dtype of {ns} (e.g. {ns.split('.')[-1]}.float32); got {dtype!r}"
            + (" (a str)" if isinstance(dtype, str) else "")
        ) from None
    if not ok:
        raise TypeError(
            f"{name} must be a real floating dtype (float16, bfloat16, float32 or float64); got {dtype!r}: "
            "an integer or boolean dtype would truncate the coefficients"
        )
    return dtype


# ------------------------------------------------------------------------------- arrays


def check_array(x: Any, name: str, *, floating: bool = True, min_ndim: int = 0) -> Any:
    """Return the namespace of ``x`` after checking that it is an array (a real floating one
    unless ``floating=False``) with at least ``min_ndim`` axes. Lists, None and Python numbers are
    a ``TypeError`` naming ``name``."""
    try:
        xp = array_namespace(x)
    except TypeError:
        hint = " (convert lists with xp.asarray)" if isinstance(x, (list, tuple)) else ""
        raise TypeError(f"{name} must be an array of a supported namespace; got {type(x).__name__}{hint}") from None
    if floating and not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must be a real floating-point array; got dtype {x.dtype}")
    if x.ndim < min_ndim:
        what = "a batch axis" if min_ndim == 1 else f"at least {min_ndim} axes"
        raise ValueError(f"{name} must have {what}; got shape {tuple(x.shape)}")
    return xp


def check_same_namespace(**arrays: Any) -> Any:
    """The one namespace of the given named arrays (None values are skipped); arrays of two
    frameworks (a torch ``x`` with a NumPy ``noise``) are a ``TypeError`` naming both."""
    first_name = first_ns = None
    for name, a in arrays.items():
        if a is None:
            continue
        try:
            ns = array_namespace(a)
        except TypeError:
            continue  # reported by the caller's own type check
        if first_ns is None:
            first_name, first_ns, first = name, ns, a
        elif ns is not first_ns:
            raise TypeError(
                f"{name} is a {framework_name(a)} array but {first_name} is a {framework_name(first)} array: "
                f"pass arrays of one framework (convert {name} to {framework_name(first)})"
            )
    return first_ns


def check_unit_range(x: Any, name: str, why: str, hint: str = "") -> None:
    """Raise ValueError if a concrete ``x`` has values outside [-1, 1] or NaN (skipped for traced arrays).

    ``why`` says what needs the range (in the message after "[-1, 1]"), ``hint`` what to do instead.
    """
    lo_hi = concrete_min_max(x)
    if lo_hi is None:
        return
    lo, hi = (float(v) for v in lo_hi)
    if not (lo >= -1.0 and hi <= 1.0):  # also catches NaN
        raise ValueError(f"{name} must lie in [-1, 1] {why}; got values from {lo:g} to {hi:g}{hint}")


def check_finite(x: Any, name: str, error: type = ValueError, where: str = "") -> None:
    """Raise ``error`` if a concrete ``x`` holds NaN or infinity (skipped for traced arrays)."""
    lo_hi = concrete_min_max(x)
    if lo_hi is None:
        return
    lo, hi = (float(v) for v in lo_hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise error(f"{name} must be finite{where}; got values from {lo:g} to {hi:g} (NaN or infinity)")
