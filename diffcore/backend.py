"""The backend seam: what the core needs from a framework and cannot get from the Array API.

A backend supplies its array namespace, random numbers from its own keys or generators, loop
drivers, autodiff hooks and devices. Backends are found through the entry-point group
``diffcore.backends`` and selected with :func:`backend`; a third party adds one by registering an
entry point, without touching diffcore.

Keys are opaque to the core: a backend makes them with ``key(seed)`` and derives per-step keys
with ``fold_in(key, i)``, so that nobody pre-draws T x B x D noise.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np
import array_api_compat
import array_api_compat.numpy as np_xp

__all__ = ["Backend", "NumPyBackend", "backend", "available_backends", "backend_for", "LoopError", "StepBudgetExceeded"]

ENTRY_POINT_GROUP = "diffcore.backends"

# The pip extra that installs each known framework backend.
_EXTRAS = {"torch": "torch", "jax": "jax"}


class LoopError(ValueError):
    """A step function returned a state whose structure, shape or dtype changed."""


class StepBudgetExceeded(RuntimeError):
    """A bounded while-loop reached its step budget before its condition turned false."""

    def __init__(self, message: str, steps: int, state: Any = None):
        super().__init__(message)
        self.steps = steps
        self.state = state


@runtime_checkable
class Backend(Protocol):
    """What a framework adapter provides to the core.

    ``step(state, plan_i, noise_i) -> state``: ``state`` is a NamedTuple (a pytree under JAX),
    ``plan_i`` the i-th entries of a tuple of 1-D arrays computed before the loop, ``noise_i``
    the i-th step's noise drawn by the backend from ``fold_in(key, i)`` (None if no noise shape).
    """

    name: str

    @property
    def xp(self) -> Any:
        """The Array API namespace of this backend's arrays."""

    # random numbers -------------------------------------------------------------------------
    def key(self, seed: int) -> Any:
        """A fresh key / generator state from an integer seed."""

    def fold_in(self, key: Any, data: int) -> Any:
        """A new key derived deterministically from ``key`` and the integer ``data``."""

    def normal(self, key: Any, shape: Sequence[int], dtype: Any = None) -> Any:
        """Standard normal draws."""

    def rademacher(self, key: Any, shape: Sequence[int], dtype: Any = None) -> Any:
        """Draws of +-1 with equal probability."""

    def uniform(self, key: Any, shape: Sequence[int], dtype: Any = None) -> Any:
        """Uniform draws on [0, 1)."""

    # loop drivers ---------------------------------------------------------------------------
    def loop(
        self,
        step: Callable[[Any, tuple, Any], Any],
        state: Any,
        plan: tuple,
        *,
        key: Any = None,
        noise_shape: Sequence[int] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Any:
        """Run ``step`` over every entry of ``plan`` and return the final state."""

    def while_loop(
        self,
        cond: Callable[[Any], Any],
        body: Callable[[Any], Any],
        state: Any,
        *,
        max_steps: int,
    ) -> Any:
        """Apply ``body`` while ``cond(state)`` holds; raise StepBudgetExceeded past ``max_steps``."""

    # autodiff -------------------------------------------------------------------------------
    def stop_gradient(self, x: Any) -> Any:
        """``x`` with its gradient cut (identity in value)."""

    def grad(self, f: Callable[..., Any]) -> Callable[..., Any]:
        """Gradient of a scalar-valued ``f`` with respect to its first argument."""

    def vjp(self, f: Callable[[Any], Any], x: Any, v: Any) -> tuple[Any, Any]:
        """(f(x), v^T J_f(x))."""

    def jvp(self, f: Callable[[Any], Any], x: Any, v: Any) -> tuple[Any, Any]:
        """(f(x), J_f(x) v)."""


class _NumPyKey(NamedTuple):
    """A counter-based key: the seed and the path of fold_in data that led to it."""

    seed: int
    path: tuple[int, ...] = ()


class NumPyBackend:
    """The NumPy reference backend: eager loops, NumPy random numbers, no autodiff.

    ``stop_gradient`` is the identity (NumPy has no gradients to stop); ``grad``, ``vjp`` and
    ``jvp`` raise and name the backends that have them.
    """

    name = "numpy"

    @property
    def xp(self) -> Any:
        return np_xp

    # random numbers -------------------------------------------------------------------------
    def key(self, seed: int) -> _NumPyKey:
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        return _NumPyKey(int(seed))

    def fold_in(self, key: _NumPyKey, data: int) -> _NumPyKey:
        return _NumPyKey(key.seed, key.path + (int(data),))

    def _generator(self, key: _NumPyKey) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(key.seed, spawn_key=key.path))

    def normal(self, key: _NumPyKey, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        return self._generator(key).standard_normal(tuple(shape)).astype(dtype or np.float64, copy=False)

    def rademacher(self, key: _NumPyKey, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        bits = self._generator(key).integers(0, 2, size=tuple(shape))
        return (2 * bits - 1).astype(dtype or np.float64)

    def uniform(self, key: _NumPyKey, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        return self._generator(key).random(tuple(shape)).astype(dtype or np.float64, copy=False)

    # loop drivers ---------------------------------------------------------------------------
    def loop(self, step, state, plan, *, key=None, noise_shape=None, progress=None):
        return python_loop(self, step, state, plan, key=key, noise_shape=noise_shape, progress=progress)

    def while_loop(self, cond, body, state, *, max_steps):
        return python_while_loop(cond, body, state, max_steps=max_steps)

    # autodiff -------------------------------------------------------------------------------
    def stop_gradient(self, x: Any) -> Any:
        return x

    def _no_autodiff(self, what: str):
        raise NotImplementedError(
            f"the numpy backend has no automatic differentiation, so it cannot compute {what}; "
            "use diffcore.backend('torch') or diffcore.backend('jax')"
        )

    def grad(self, f):
        self._no_autodiff("grad")

    def vjp(self, f, x, v):
        self._no_autodiff("vjp")

    def jvp(self, f, x, v):
        self._no_autodiff("jvp")

    def __repr__(self) -> str:
        return "NumPyBackend()"


def _leaf_signature(x: Any) -> tuple:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    return (tuple(shape) if shape is not None else None, str(dtype) if dtype is not None else type(x).__name__)


def check_state_unchanged(before: Any, after: Any, step_index: int) -> None:
    """Raise LoopError naming the first field whose structure, shape or dtype changed."""
    fields = getattr(type(before), "_fields", None)
    if fields is not None:
        if type(after) is not type(before):
            raise LoopError(
                f"step {step_index} returned a {type(after).__name__}, expected {type(before).__name__}"
            )
        for name in fields:
            a, b = getattr(before, name), getattr(after, name)
            if _leaf_signature(a) != _leaf_signature(b):
                raise LoopError(
                    f"step {step_index} changed state field {name!r}: shape/dtype "
                    f"{_leaf_signature(a)} became {_leaf_signature(b)}"
                )
        return
    if _leaf_signature(before) != _leaf_signature(after):
        raise LoopError(
            f"step {step_index} changed the state: shape/dtype {_leaf_signature(before)} "
            f"became {_leaf_signature(after)}"
        )


def plan_length(plan: tuple) -> int:
    if not isinstance(plan, tuple) or not plan:
        raise ValueError("plan must be a non-empty tuple of 1-D arrays of equal length")
    lengths = {int(p.shape[0]) for p in plan}
    if any(p.ndim != 1 for p in plan) or len(lengths) != 1:
        raise ValueError(
            f"plan must be a tuple of 1-D arrays of equal length; got shapes {[tuple(p.shape) for p in plan]}"
        )
    return lengths.pop()


def python_loop(bk, step, state, plan, *, key=None, noise_shape=None, progress=None, step_fn=None):
    """The eager driver shared by the NumPy and torch backends: a plain Python loop."""
    n = plan_length(plan)
    if noise_shape is not None and key is None:
        raise ValueError("key is required when noise_shape is given")
    run = step_fn or step
    for i in range(n):
        plan_i = tuple(p[i] for p in plan)
        noise_i = None
        if noise_shape is not None:
            noise_i = bk.normal(bk.fold_in(key, i), noise_shape, dtype=_state_dtype(state))
        new_state = run(state, plan_i, noise_i)
        check_state_unchanged(state, new_state, i)
        state = new_state
        if progress is not None:
            progress(i + 1, n)
    return state


def python_while_loop(cond, body, state, *, max_steps):
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer; got {max_steps!r}")
    steps = 0
    while bool(cond(state)):
        if steps >= max_steps:
            raise StepBudgetExceeded(
                f"while-loop exceeded its step budget: {steps} steps reached (max_steps={max_steps})",
                steps=steps,
                state=state,
            )
        new_state = body(state)
        check_state_unchanged(state, new_state, steps)
        state = new_state
        steps += 1
    return state


def _state_dtype(state: Any) -> Any:
    """The dtype of the first floating array in a state (the dtype of its noise)."""
    leaves = state if isinstance(state, tuple) else (state,)
    for leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None:
            try:
                if array_api_compat.array_namespace(leaf).isdtype(dtype, "real floating"):
                    return dtype
            except TypeError:
                continue
    return None


# ---------------------------------------------------------------------------------------------
# registry


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list[str]:
    """Names of the registered backends (installed or not: loading may still fail)."""
    return sorted(set(_entry_points()) | {"numpy"})


@functools.lru_cache(maxsize=None)
def backend(name: str = "numpy") -> Backend:
    """The backend registered under ``name`` in the ``diffcore.backends`` entry-point group.

    >>> diffcore.backend("numpy").name
    'numpy'
    """
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a string; got {type(name).__name__}")
    eps = _entry_points()
    if name not in eps:
        if name == "numpy":
            return NumPyBackend()
        known = ", ".join(repr(n) for n in available_backends())
        hint = ""
        if name in _EXTRAS:
            hint = f"; install it with: pip install 'diffcore[{_EXTRAS[name]}]' (and the backends/diffcore_{name} package)"
        raise ValueError(f"unknown backend {name!r}; known backends: {known}{hint}")
    try:
        factory = eps[name].load()
    except ImportError as exc:
        extra = _EXTRAS.get(name, name)
        raise ImportError(
            f"backend {name!r} needs a framework that is not installed ({exc}); "
            f"install it with: pip install 'diffcore[{extra}]'"
        ) from exc
    obj = factory() if callable(factory) and isinstance(factory, type) else factory
    if callable(obj) and not hasattr(obj, "name"):
        obj = obj()
    return obj


def backend_for(x: Any) -> Backend:
    """The backend whose arrays ``x`` belongs to (numpy for NumPy and array_api_strict)."""
    if array_api_compat.is_torch_array(x):
        return backend("torch")
    if array_api_compat.is_jax_array(x):
        return backend("jax")
    return backend("numpy")
