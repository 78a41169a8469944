"""Array-API plumbing shared by the core: namespaces, table gathering, argument checks.

Schedule tables live in float64 NumPy. They are cast to the working dtype *after* every derived
coefficient has been computed in float64 (docs/conventions.md: fp16/bf16 tables round abar to 1 and give
NaN), moved to the caller's device, and gathered with ``xp.take``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
from typing import Any, Iterator

import numpy as np
from array_api_compat import array_namespace, device as array_device

__all__ = [
    "array_namespace",
    "array_device",
    "is_traced",
    "as_xp",
    "asarray_on",
    "TableCache",
    "expand_to",
    "linear_combination",
    "mean_flat",
    "check_float_array",
    "check_timesteps",
    "check_same_shape",
]


def is_traced(x: Any) -> bool:
    """True when reading ``x``'s values would fail or force a sync we refuse to add.

    Covers JAX tracers (``jax.jit``, ``vmap``, ``grad``), torch.compile's fake tensors and
    torch.func's batched tensors. Eager JAX arrays are concrete: their values are checked.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):  # first: the eager torch loop asks per step
        compiler = getattr(torch, "compiler", None)
        if compiler is not None and compiler.is_compiling():
            return True
        functorch = getattr(torch._C, "_functorch", None)
        return functorch is not None and functorch.is_batchedtensor(x)
    for cls in type(x).__mro__:
        if cls.__name__ == "Tracer" and (cls.__module__ or "").startswith("jax"):
            return True
    return False


def _numpy_dtype_for(xp: Any, dtype: Any) -> np.dtype | None:
    """The NumPy dtype with the same meaning as ``dtype`` of ``xp``, or None (e.g. bfloat16)."""
    for name in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"):
        candidate = getattr(xp, name, None)
        if candidate is not None and dtype == candidate:
            return np.dtype(name)
    return None


def as_xp(table: np.ndarray, xp: Any, dtype: Any, device: Any) -> Any:
    """Convert a NumPy table to ``xp`` with ``dtype`` on ``device``.

    NumPy does the rounding when it knows the dtype (one correctly rounded cast from float64);
    otherwise (bfloat16) the table goes through float32 and the namespace casts it.
    """
    np_dtype = _numpy_dtype_for(xp, dtype)
    if np_dtype is not None:
        return asarray_on(xp, np.ascontiguousarray(table, dtype=np_dtype), device)
    via = asarray_on(xp, np.ascontiguousarray(table, dtype=np.float32), device)
    return xp.astype(via, dtype)


def asarray_on(xp: Any, host: Any, device: Any) -> Any:
    """``xp.asarray(host, device=device)``, without asking for the device where the namespace's
    default placement already is ``device``: JAX's ``asarray(..., device=)`` takes a path about
    four times slower than a plain ``asarray`` (0.5 ms against 0.1 ms), paid per converted table."""
    out = xp.asarray(host)
    if device is None:
        return out
    try:
        if array_device(out) == device:
            return out
    except Exception:  # pragma: no cover - a namespace whose devices do not compare
        pass
    return xp.asarray(host, device=device)


class TableCache:
    """Per-object cache of converted tables, keyed by (name, namespace, dtype, device).

    Only concrete arrays are stored: a JAX tracer must never outlive its trace.
    """

    def __init__(self) -> None:
        self._store: dict[tuple, Any] = {}

    def get(self, name: str, table: np.ndarray, xp: Any, dtype: Any, device: Any) -> Any:
        try:
            key = (name, xp.__name__, str(dtype), str(device))
        except Exception:  # pragma: no cover - exotic namespaces
            return as_xp(table, xp, dtype, device)
        hit = self._store.get(key)
        if hit is not None:
            return hit
        value = as_xp(table, xp, dtype, device)
        if not is_traced(value):
            self._store[key] = value
        return value

    def __getstate__(self) -> dict:
        return {"_store": {}}


def to_numpy(a: Any) -> np.ndarray:
    """A host NumPy copy of an array of any supported namespace (outside any jit)."""
    mod = type(a).__module__
    if mod.startswith("torch"):
        return a.detach().cpu().numpy()
    if mod.startswith("array_api_strict"):
        return np.from_dlpack(a)
    return np.asarray(a)


def as_like(a: Any, x: Any) -> Any:
    """``a`` (an array of any namespace, or a NumPy array) in x's namespace, dtype and device.
    For arguments given once before a loop (masks, observations), never inside one."""
    xp = array_namespace(x)
    try:
        same = array_namespace(a) is xp
    except TypeError:
        same = False
    if not same:
        a = as_xp(np.asarray(to_numpy(a), dtype=np.float64), xp, x.dtype, array_device(x))
    elif a.dtype != x.dtype:
        a = xp.astype(a, x.dtype)
    return a


def default_dtype(xp: Any, kind: str = "real floating", device: Any = None) -> Any:
    """The namespace's default dtype of ``kind`` ("real floating", "integral", "indexing")."""
    try:
        return xp.__array_namespace_info__().default_dtypes(device=device)[kind]
    except Exception:  # pragma: no cover - namespaces without the inspection API
        return {"real floating": xp.float32}.get(kind, xp.int64)


def expand_to(coeff: Any, x: Any) -> Any:
    """Reshape a per-example coefficient of shape (B,) or () to broadcast against ``x`` (B, ...)."""
    xp = array_namespace(coeff, x)
    if coeff.ndim == 0:
        return xp.reshape(coeff, (1,) * x.ndim)
    return xp.reshape(coeff, (coeff.shape[0],) + (1,) * (x.ndim - 1))


def _fused_torch(torch: Any, coeffs: tuple, values: tuple) -> bool:
    """Whether :func:`linear_combination` may fuse: eager, plain, floating torch tensors of one
    shape and dtype, none wrapped by a torch.func transform (e.g. vmap over the noise alone) or
    requiring grad, and coefficients that scale into that dtype in place without changing the plain
    expression's result type or device (real Python numbers, or real 0-d tensors on its device)."""
    first = values[0]
    if type(first) is not torch.Tensor or not first.is_floating_point() or torch.compiler.is_compiling():
        return False
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    shape, dtype, device, cpu = first.shape, first.dtype, first.device, first.is_cpu
    for v in values:
        if type(v) is not torch.Tensor or v.shape != shape or v.dtype != dtype or v.requires_grad or wrapped(v):
            return False
    for c in coeffs:
        if isinstance(c, (int, float)):
            continue
        # a real 0-d tensor never changes a floating tensor's dtype in promotion; a complex one does
        if (type(c) is not torch.Tensor or c.ndim != 0 or c.requires_grad or wrapped(c) or c.is_complex()
                or not ((cpu and c.is_cpu) or c.device == device)):
            return False
    return True


def linear_combination(*pairs: Any) -> Any:
    """``c_0 v_0 + c_1 v_1 + ...`` for pairs (c_k, v_k) of scalar or 0-d coefficients and arrays.

    On eager torch tensors of one shape and dtype, outside autograd, it is one product and in-place
    ``addcmul_`` into it: k kernels and one new tensor instead of 2k - 1 of each (a DDPM step's
    x_next = c_x x + c_out output + std z: about 25 against 50 us on a (16, 3, 32, 32) float32
    state, docs/performance.md). The sum is the same up to rounding in the last place. Elsewhere,
    and for anything else, the plain expression.
    """
    coeffs, values = pairs[0::2], pairs[1::2]
    torch = sys.modules.get("torch")
    if torch is not None and _fused_torch(torch, coeffs, values):
        out = values[0] * coeffs[0]
        for c, v in zip(coeffs[1:], values[1:]):
            if isinstance(c, (int, float)):
                out.add_(v, alpha=c)
            else:
                out.addcmul_(v, c)
        return out
    out = coeffs[0] * values[0]
    for c, v in zip(coeffs[1:], values[1:]):
        out = out + c * v
    return out


def mean_flat(x: Any) -> Any:
    """Mean over all axes but the first (per-example mean)."""
    xp = array_namespace(x)
    if x.ndim <= 1:
        return x
    return xp.mean(x, axis=tuple(range(1, x.ndim)))


def sum_flat(x: Any) -> Any:
    """Sum over all axes but the first (per-example sum)."""
    xp = array_namespace(x)
    if x.ndim <= 1:
        return x
    return xp.sum(x, axis=tuple(range(1, x.ndim)))


def num_dims(x: Any) -> int:
    """Number of data dimensions per example (product of all axes but the first)."""
    return math.prod(x.shape[1:])


_VALUES_CHECKED = contextvars.ContextVar("diffcore_values_checked", default=False)


@contextlib.contextmanager
def values_checked_upstream() -> Iterator[None]:
    """Skip the value checks (the ones that read array values) inside a loop whose inputs were
    checked before it: times and steps from a plan are in range by construction, and reading them
    again would cost a device-to-host sync per step. Shape and dtype checks still run."""
    token = _VALUES_CHECKED.set(True)
    try:
        yield
    finally:
        _VALUES_CHECKED.reset(token)


def concrete_min_max(x: Any) -> tuple[Any, Any] | None:
    """(min, max) of a non-empty concrete array, or None where reading them is not allowed.

    A concrete JAX array closed over inside ``jax.jit`` still yields traced reductions, so the
    reductions themselves are checked too. Inside :func:`values_checked_upstream`: None.
    """
    if _VALUES_CHECKED.get() or is_traced(x) or math.prod(x.shape) == 0:
        return None
    if type(x).__module__.startswith("torch") and getattr(x, "requires_grad", False):
        x = x.detach()  # reading the values of a training output: no graph, no warning
    xp = array_namespace(x)
    lo, hi = xp.min(x), xp.max(x)
    if is_traced(lo) or is_traced(hi):
        return None
    return lo, hi


def concrete_all_finite(x: Any) -> bool | None:
    """Whether every entry of a concrete array is finite (one reduction, one read), or None where
    reading it is not allowed (as :func:`concrete_min_max`; an empty array is all finite).

    torch: ``sum(x - x)`` is exactly 0 for a finite x and NaN otherwise (flag_nonfinite's test;
    torch's isfinite costs ten times more); elsewhere ``all(isfinite(x))``.
    """
    if _VALUES_CHECKED.get() or is_traced(x) or math.prod(x.shape) == 0:
        return None
    if type(x).__module__.startswith("torch"):
        s = (x.detach() - x.detach()).sum()
        return bool(s == s)
    xp = array_namespace(x)
    ok = xp.all(xp.isfinite(x))
    return None if is_traced(ok) else bool(ok)


def check_float_array(x: Any, name: str) -> Any:
    """Return the namespace of ``x`` after checking that it is a real floating array."""
    try:
        xp = array_namespace(x)
    except TypeError as exc:
        raise TypeError(f"{name} must be an array of a supported namespace; got {type(x).__name__}") from exc
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must be a real floating-point array; got dtype {x.dtype}")
    return xp


def check_per_example(t: Any, name: str, batch: int | None) -> tuple[Any, Any] | None:
    """Check that ``t`` holds one value per example (0-D or (batch,)); return its concrete (min, max)."""
    if t.ndim > 1:
        raise ValueError(f"{name} must be 0-D or 1-D (one value per example); got shape {tuple(t.shape)}")
    if batch is not None and t.ndim == 1 and t.shape[0] != batch:
        raise ValueError(f"{name} has {t.shape[0]} entries but the batch has {batch} examples")
    return concrete_min_max(t)


def check_timesteps(t: Any, num_timesteps: int, name: str = "t", batch: int | None = None) -> Any:
    """Check an integer array of 0-based steps in [0, num_timesteps - 1] (the papers' 1..T).

    The range check reads values, so it is skipped for traced arrays; dtype and shape checks are not.
    """
    try:
        xp = array_namespace(t)
    except TypeError as exc:
        raise TypeError(
            f"{name} must be an integer array of 0-based steps in [0, {num_timesteps - 1}]; got {type(t).__name__}"
        ) from exc
    if not xp.isdtype(t.dtype, "integral"):
        raise TypeError(
            f"{name} must be an integer array of 0-based steps in [0, {num_timesteps - 1}]; got dtype {t.dtype}"
        )
    lo_hi = check_per_example(t, name, batch)
    if lo_hi is not None:
        lo, hi = (int(v) for v in lo_hi)
        if lo < 0 or hi >= num_timesteps:
            raise ValueError(
                f"{name} must lie in [0, {num_timesteps - 1}] (0-based: step 0 is the papers' t=1); "
                f"got values from {lo} to {hi}"
            )
    return xp


def check_same_shape(a: Any, b: Any, name_a: str, name_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name_a} and {name_b} must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
