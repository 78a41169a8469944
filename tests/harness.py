"""Cross-framework harness: one core function, the same NumPy inputs, every backend.

    from harness import assert_same_on_all_backends

    assert_same_on_all_backends(mean_flat, x_np)                      # numpy, torch, jax
    assert_same_on_all_backends(fn, x_np, t_np, rtol32=1e-4)          # ints stay ints
    assert_same_on_all_backends(div, x_np, with_backend=True,         # fn(backend, *arrays)
                                backends=("torch", "jax"), expected=exact_np)

``fn`` is written against the Array API. Each floating NumPy argument is cast to the working dtype
(float64, then float32) and converted to the backend's arrays; integer and boolean arrays keep
their dtype; anything that is not a NumPy array (ints, tuples, None, callables) is passed through
as is and stays static under ``jax.jit``. Noise is an argument like any other, made once in NumPy.

Runs: numpy and torch eagerly; JAX eagerly and under ``jax.jit`` -- float64 with x64 on, float32
with x64 off (the path users run) and, eagerly, with x64 on (where a float64 table would promote a
float32 result). Every run is compared with the reference: ``expected`` when given (arrays, or a
callable of the float64 NumPy arguments), else ``fn`` on NumPy in float64 -- for float32, on the
float32-rounded inputs, so the tolerance measures arithmetic, not input rounding.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable

import numpy as np
import pytest

from conftest import jax_x64, to_np

DEFAULT_BACKENDS = ("numpy", "torch", "jax")

__all__ = ["assert_same_on_all_backends", "run_on_backend", "DEFAULT_BACKENDS"]


def _flatten(out: Any) -> list:
    if isinstance(out, dict):
        return [v for k in sorted(out) for v in _flatten(out[k])]
    if isinstance(out, (tuple, list)):
        return [v for item in out for v in _flatten(item)]
    return [out]


def _is_float_array(a: Any) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


def _is_array(a: Any) -> bool:
    return isinstance(a, np.ndarray)


def _namespace_and_backend(name: str):
    """(converter from NumPy, backend object) for ``name``; skips if the framework is missing."""
    import diffcore

    if name == "numpy":
        return (lambda a: a), diffcore.backend("numpy")
    if name == "array_api_strict":
        strict = pytest.importorskip("array_api_strict")
        return strict.asarray, diffcore.backend("numpy")
    if name == "torch":
        torch = pytest.importorskip("torch")
        return torch.asarray, diffcore.backend("torch")
    if name == "jax":
        jnp = pytest.importorskip("jax.numpy")
        return jnp.asarray, diffcore.backend("jax")
    raise ValueError(f"unknown backend {name!r}; the harness knows numpy, array_api_strict, torch, jax")


def _modes(name: str, dtype: str, jit: bool) -> list[tuple[str, Any]]:
    """(label, x64 setting or None) pairs: how to run ``name`` in ``dtype``."""
    if name != "jax":
        return [("eager", None)]
    if dtype == "float64":
        runs = [("eager", True)] + ([("jit", True)] if jit else [])
    else:
        runs = [("eager x64-off", False)] + ([("jit x64-off", False)] if jit else []) + [("eager x64-on", True)]
    return runs


def run_on_backend(
    fn: Callable[..., Any],
    name: str,
    args: Iterable[Any],
    dtype: str = "float64",
    *,
    jit: bool = False,
    with_backend: bool = False,
) -> list[np.ndarray]:
    """``fn`` on backend ``name`` with the NumPy ``args`` converted (floats to ``dtype``), as NumPy.

    ``jit`` runs it under ``jax.jit`` (JAX only). The caller sets JAX's x64 mode.
    """
    args = list(args)
    convert, bk = _namespace_and_backend(name)
    arrays = [convert(a.astype(dtype) if _is_float_array(a) else a) for a in args if _is_array(a)]

    def call(*arrs):
        it = iter(arrs)
        full = [next(it) if _is_array(a) else a for a in args]
        return fn(bk, *full) if with_backend else fn(*full)

    if jit:
        import jax

        out = jax.jit(call)(*arrays)
    else:
        out = call(*arrays)
    return [to_np(o) for o in _flatten(out)]


def assert_same_on_all_backends(
    fn: Callable[..., Any],
    *args: Any,
    rtol64: float = 1e-10,
    rtol32: float = 1e-5,
    atol64: float | None = None,
    atol32: float | None = None,
    jit: bool = True,
    backends: Iterable[str] = DEFAULT_BACKENDS,
    dtypes: Iterable[str] = ("float64", "float32"),
    expected: Any = None,
    with_backend: bool = False,
    check_dtype: bool = True,
) -> dict:
    """Assert that ``fn(*args)`` agrees across backends, dtypes and jit; see the module docstring.

    ``atol`` defaults to ``rtol`` times the largest reference magnitude (at least 1), so entries
    near zero are judged on the scale of the output. ``check_dtype``: every floating output has
    the working dtype. Returns ``{(backend, dtype, mode): [outputs as NumPy]}``.
    """
    results: dict = {}
    for dtype in dtypes:
        if dtype not in ("float64", "float32"):
            raise ValueError(f"dtypes must be float64 and/or float32; got {dtype!r}")
        rounded = [a.astype(dtype).astype(np.float64) if _is_float_array(a) else a for a in args]
        if expected is None:
            if with_backend:
                raise ValueError("with_backend=True needs expected= (the NumPy backend has no autodiff)")
            reference = run_on_backend(fn, "numpy", rounded, "float64")
        elif callable(expected):
            reference = [np.asarray(e, dtype=np.float64) for e in _flatten(expected(*rounded))]
        else:
            reference = [np.asarray(e, dtype=np.float64) for e in _flatten(expected)]
        rtol = rtol64 if dtype == "float64" else rtol32
        atol_given = atol64 if dtype == "float64" else atol32
        for name in backends:
            for label, x64 in _modes(name, dtype, jit):
                ctx = jax_x64(x64) if x64 is not None else contextlib.nullcontext()
                with ctx:
                    outs = run_on_backend(fn, name, args, dtype, jit=label.startswith("jit"), with_backend=with_backend)
                where = f"{name} {dtype} {label}"
                assert len(outs) == len(reference), f"{where}: {len(outs)} outputs, reference has {len(reference)}"
                for k, (out, ref) in enumerate(zip(outs, reference)):
                    if check_dtype and out.dtype.kind == "f":
                        assert out.dtype == np.dtype(dtype), f"{where}: output {k} has dtype {out.dtype}, expected {dtype}"
                    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
                    atol = atol_given if atol_given is not None else rtol * scale
                    np.testing.assert_allclose(
                        out.astype(np.float64), ref, rtol=rtol, atol=atol, err_msg=f"{where}: output {k}"
                    )
                results[(name, dtype, label)] = outs
    return results
