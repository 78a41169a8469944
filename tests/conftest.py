"""Shared test fixtures: the ``xp`` fixture over every namespace, hypothesis profiles, converters.

Profiles (select with DIFFCORE_HYPOTHESIS_PROFILE): ``ci`` (default; deterministic), ``dev``
(random), ``heavy`` (10x the examples). numpy and array_api_strict get the profile's full example
count; torch and jax get a few (see :func:`n_examples`).
"""

from __future__ import annotations

import contextlib
import importlib
import os

# Under pytest-xdist (make test runs two workers on two cores) each worker keeps to one thread:
# two workers of two threads each would oversubscribe the cores. Set before torch or XLA start.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors])
settings.register_profile("ci", max_examples=40, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("dev", max_examples=40, **_COMMON)
settings.register_profile("heavy", max_examples=400, **_COMMON)
settings.load_profile(os.environ.get("DIFFCORE_HYPOTHESIS_PROFILE", "ci"))

try:  # tests run JAX in float64; library code never changes this setting
    import jax

    jax.config.update("jax_enable_x64", True)
except ImportError:  # pragma: no cover - CI installs jax
    jax = None

NAMESPACES = ["numpy", "array_api_strict", "torch", "jax"]


def load_namespace(name: str):
    """The Array API namespace for ``name``; skips the test if the package is missing."""
    if name == "numpy":
        return importlib.import_module("array_api_compat.numpy")
    if name == "array_api_strict":
        return pytest.importorskip("array_api_strict")
    if name == "torch":
        pytest.importorskip("torch")
        return importlib.import_module("array_api_compat.torch")
    if name == "jax":
        return pytest.importorskip("jax.numpy")
    raise ValueError(name)


@pytest.fixture(params=NAMESPACES)
def xp(request):
    """Every Array API namespace the core must run on."""
    return load_namespace(request.param)


def xp_name(xp) -> str:
    """"numpy", "array_api_strict", "torch" or "jax" for a namespace (jax.numpy is "jax")."""
    root = xp.__name__.split(".")[0]
    if root == "array_api_compat":
        return xp.__name__.split(".")[1]
    return {"jax": "jax"}.get(root, root)


def n_examples(xp, full: int | None = None) -> int:
    """The hypothesis example count for ``xp``: full on numpy / strict, a few on torch / jax."""
    full = full or settings().max_examples
    return full if xp_name(xp) in ("numpy", "array_api_strict") else max(3, full // 10)


def to_xp(a, xp, dtype=None):
    """A NumPy array (or scalar) as an array of ``xp`` (float64 unless told otherwise)."""
    a = np.asarray(a)
    if dtype is None:
        dtype = xp.float64 if a.dtype.kind == "f" else getattr(xp, a.dtype.name)
    return xp.asarray(a.astype(a.dtype), dtype=dtype)


def to_np(a) -> np.ndarray:
    """Any namespace's array as a float64-preserving NumPy array."""
    if isinstance(a, (tuple, list)):
        return type(a)(to_np(v) for v in a)
    mod = type(a).__module__
    if mod.startswith("array_api_strict"):
        return np.from_dlpack(a)
    if mod.startswith("torch"):
        t = a.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.asarray(a)


@contextlib.contextmanager
def jax_x64(enabled: bool):
    """Temporarily switch JAX's x64 mode (tests only; the library never touches it)."""
    if jax is None:
        yield
        return
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


@pytest.fixture
def torch_one_thread():
    """torch pinned to one thread for the test (on a shared 2-core machine two threads were far slower
    when another process held a core); restored after."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
