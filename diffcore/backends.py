"""The backend seam: what the core needs from a framework and cannot get from the Array API.

A backend supplies its array namespace, random numbers from its own keys or generators, loop
drivers, autodiff hooks and devices. Backends are found through the entry-point group
``diffcore.backends`` and selected with :func:`backend`; a third party adds one by registering an
entry point, without touching diffcore (docs/backends.md).

Keys are opaque to the core: a backend makes them with ``key(seed)`` and derives per-step keys
with ``fold_in(key, i)``, so that nobody pre-draws T x B x D noise. With ``sample_ids``, row ``b``
of a draw comes from ``fold_in(key, sample_ids[b])``, so a sample does not depend on the batch it
was drawn in (EDM's per-sample seeds).
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np
import array_api_compat
import array_api_compat.numpy as np_xp

from .checks import check_int, check_shape as _check_shape

__all__ = [
    "Backend",
    "NumPyBackend",
    "backend",
    "available_backends",
    "backend_for",
    "LoopError",
    "StepBudgetExceeded",
    "python_loop",
    "NO_ARGS",
    "python_while_loop",
    "check_state_unchanged",
    "plan_length",
    "check_shape",
    "check_loop_args",
    "per_sample_rows",
    "check_backend_array",
    "mix64",
    "mix64_array",
    "splitmix64_array",
]

ENTRY_POINT_GROUP = "diffcore.backends"

# The pip extra that installs each known framework backend.
_EXTRAS = {"torch": "torch", "jax": "jax"}


class _NoArgs:
    """The marker of a loop without extra step arguments (steps then take three)."""

    def __repr__(self) -> str:
        return "NO_ARGS"


NO_ARGS = _NoArgs()


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

    Random draws: ``dtype=None`` is the framework's default floating dtype; ``device=None`` its
    default device. ``sample_ids`` (1-D integers, one per row of ``shape[0]``) draws row ``b``
    from ``fold_in(key, sample_ids[b])`` with shape ``shape[1:]``.
    """

    name: str

    @property
    def xp(self) -> Any:
        """The Array API namespace of this backend's arrays."""

    # random numbers -------------------------------------------------------------------------
    def key(self, seed: int) -> Any:
        """A fresh key from a non-negative integer seed."""

    def fold_in(self, key: Any, data: Any) -> Any:
        """A new key derived deterministically from ``key`` and the integer ``data``."""

    def normal(
        self, key: Any, shape: Sequence[int], dtype: Any = None, *, sample_ids: Any = None, device: Any = None
    ) -> Any:
        """Standard normal draws."""

    def rademacher(
        self, key: Any, shape: Sequence[int], dtype: Any = None, *, sample_ids: Any = None, device: Any = None
    ) -> Any:
        """Draws of +-1 with equal probability."""

    def uniform(
        self, key: Any, shape: Sequence[int], dtype: Any = None, *, sample_ids: Any = None, device: Any = None
    ) -> Any:
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
        sample_ids: Any = None,
        progress: Callable[[int, int], None] | None = None,
        args: Any = ...,
    ) -> Any:
        """Run ``step`` over every entry of ``plan`` and return the final state.

        With ``args`` (a pytree: a model's weights and condition), each step is called
        ``step(state, plan_i, noise_i, args)`` and ``args`` is an argument of the loop: a compiled
        loop takes it as a traced input, never as a constant, so new values need no recompiling.

        Step ``i`` gets ``noise_i = normal(fold_in(key, i), noise_shape, sample_ids=sample_ids)``
        in the dtype and on the device of the state's first floating field.
        ``progress(done, total)`` is called as the loop advances.
        """

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

    # devices --------------------------------------------------------------------------------
    def devices(self) -> list:
        """The devices this backend can place arrays on (CPU first)."""

    def device(self, spec: Any = None) -> Any:
        """The device object for ``spec`` ("cpu", "cuda", "cuda:1", a device; None: the default)."""


# ---------------------------------------------------------------------------------------------
# random-number helpers shared by the eager backends

_M64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def mix64(state: int, data: int) -> int:
    """A 64-bit key state derived from ``state`` and ``data`` (splitmix64; order-sensitive)."""
    return _splitmix64(state ^ _splitmix64(int(data) & _M64))


def splitmix64_array(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function (Steele et al. 2014) elementwise over a uint64 array."""
    z = z + np.uint64(0x9E3779B97F4A7C15)  # uint64 arrays wrap modulo 2**64
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def mix64_array(state: Any, data: Any) -> np.ndarray:
    """``mix64`` elementwise over broadcast uint64 arrays of states and data (integers; negative
    data taken modulo 2**64, as ``mix64`` does)."""
    s = np.asarray(state, dtype=np.uint64)
    d = np.asarray(data)
    # signed (and float or bool) values through int64, so that negatives wrap modulo 2**64 on every
    # platform (a negative float cast straight to uint64 is undefined in C: it saturates on aarch64)
    d = d.astype(np.uint64) if d.dtype.kind == "u" else d.astype(np.int64).view(np.uint64)
    return splitmix64_array(s ^ splitmix64_array(d))


def check_seed(seed: Any) -> int:
    return check_int(seed, "seed", 0)


def check_shape(shape: Any, sample_ids: Any = None) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints; with ``sample_ids``, one id per row of shape[0]."""
    out = _check_shape(shape)
    if sample_ids is not None:
        ids_shape = tuple(sample_ids.shape) if hasattr(sample_ids, "shape") else (len(sample_ids),)
        if len(ids_shape) != 1:
            raise ValueError(f"sample_ids must be 1-D (one id per example); got shape {ids_shape}")
        if not out or out[0] != ids_shape[0]:
            raise ValueError(
                f"sample_ids has {ids_shape[0]} entries, but shape {out} needs one per row of its first axis"
            )
    return out


def per_sample_rows(bk: Any, method: str, key: Any, shape: tuple, dtype: Any, sample_ids: Any, device: Any):
    """Row b of the draw ``bk.<method>(fold_in(key, sample_ids[b]), shape[1:])``, stacked (eager)."""
    ids = sample_ids.tolist() if hasattr(sample_ids, "tolist") else list(sample_ids)
    draw = getattr(bk, method)
    rows = [draw(bk.fold_in(key, int(i)), shape[1:], dtype, device=device) for i in ids]
    if not rows:
        return draw(key, shape, dtype, device=device)
    return array_api_compat.array_namespace(rows[0]).stack(rows, axis=0)


def _is_strict(obj: Any) -> bool:
    return type(obj).__module__.startswith("array_api_strict")


def _numpy_dtype(dtype: Any) -> np.dtype:
    """NumPy's dtype for ``dtype`` (a NumPy dtype or one of array_api_strict's); None is float64."""
    if dtype is None:
        return np.dtype(np.float64)
    if _is_strict(dtype):
        return np.dtype(str(dtype).rsplit(".", 1)[-1])
    if type(dtype).__module__.split(".")[0] in ("torch", "jax", "jaxlib"):
        raise TypeError(f"dtype {dtype!r} belongs to another framework; the numpy backend takes NumPy dtypes (e.g. np.float32)")
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out is None or out.kind != "f":
        raise TypeError(f"dtype must be a NumPy floating dtype (e.g. np.float32); got {dtype!r}")
    return out


def check_backend_array(bk: Any, x: Any, name: str) -> None:
    """Refuse an array of another framework than the backend's (a mixed run fails deep inside)."""
    found = backend_name_for(x)
    if found is not None and found != bk.name and bk.name in ("numpy", "torch", "jax"):
        raise TypeError(
            f"{name} is a {found} array but the backend is {bk.name!r}: pass a {bk.name} array, "
            f"or backend={found!r}"
        )


def backend_name_for(x: Any) -> str | None:
    """"numpy", "torch" or "jax" for an array of that framework (numpy for array_api_strict), else None."""
    if array_api_compat.is_torch_array(x):
        return "torch"
    if array_api_compat.is_jax_array(x):
        return "jax"
    if isinstance(x, np.ndarray) or _is_strict(x):
        return "numpy"
    return None


class _NumPyKey(NamedTuple):
    """A counter-based key: the seed and the path of fold_in data that led to it."""

    seed: int
    path: tuple[int, ...] = ()


def _check_numpy_key(key: Any) -> _NumPyKey:
    if not isinstance(key, _NumPyKey):
        raise TypeError(f"key must come from NumPyBackend.key(seed) or fold_in; got {type(key).__name__}")
    return key


class NumPyBackend:
    """The NumPy reference backend: eager loops, NumPy random numbers, no autodiff.

    Keys are (seed, fold_in path) pairs fed to ``np.random.SeedSequence(seed, spawn_key=path)``.
    It also serves array_api_strict (NumPy underneath): a strict dtype or device in a draw, or a
    strict state in a loop, gets its noise as array_api_strict arrays.
    ``stop_gradient`` is the identity (NumPy has no gradients to stop); ``grad``, ``vjp`` and
    ``jvp`` raise and name the backends that have them. The only device is "cpu".
    """

    name = "numpy"

    @property
    def xp(self) -> Any:
        return np_xp

    # random numbers -------------------------------------------------------------------------
    def key(self, seed: int) -> _NumPyKey:
        return _NumPyKey(check_seed(seed))

    def fold_in(self, key: _NumPyKey, data: Any) -> _NumPyKey:
        key = _check_numpy_key(key)
        return _NumPyKey(key.seed, key.path + (int(data),))

    def _generator(self, key: _NumPyKey) -> np.random.Generator:
        key = _check_numpy_key(key)
        return np.random.default_rng(np.random.SeedSequence(key.seed, spawn_key=key.path))

    def _draw(self, method, draw, key, shape, dtype, sample_ids, device):
        shape = check_shape(shape, sample_ids)
        device = self.device(device)
        if sample_ids is not None:
            return per_sample_rows(self, method, key, shape, dtype, sample_ids, device)
        out = np.asarray(draw(self._generator(key), shape)).astype(_numpy_dtype(dtype), copy=False)
        if _is_strict(device) or _is_strict(dtype):
            # array_api_strict wraps NumPy: its arrays get NumPy's draws in their own namespace
            import array_api_strict

            return array_api_strict.asarray(out, device=device if _is_strict(device) else None)
        return out

    def normal(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> np.ndarray:
        return self._draw("normal", lambda g, s: g.standard_normal(s), key, shape, dtype, sample_ids, device)

    def rademacher(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> np.ndarray:
        return self._draw(
            "rademacher", lambda g, s: 2.0 * g.integers(0, 2, size=s) - 1.0, key, shape, dtype, sample_ids, device
        )

    def uniform(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> np.ndarray:
        # drawn in the target precision: a float64 draw rounded to float32 can reach 1.0
        single = _numpy_dtype(dtype) == np.float32
        return self._draw(
            "uniform", lambda g, s: g.random(s, dtype=np.float32 if single else np.float64), key, shape, dtype, sample_ids, device
        )

    # loop drivers ---------------------------------------------------------------------------
    def loop(self, step, state, plan, *, key=None, noise_shape=None, sample_ids=None, progress=None, args=NO_ARGS):
        return python_loop(
            self, step, state, plan, key=key, noise_shape=noise_shape, sample_ids=sample_ids, progress=progress,
            args=args,
        )

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

    # devices --------------------------------------------------------------------------------
    def devices(self) -> list:
        return ["cpu"]

    def device(self, spec: Any = None) -> Any:
        if spec is None or (isinstance(spec, str) and spec == "cpu"):
            return "cpu"
        if _is_strict(spec):  # array_api_strict's devices are NumPy's CPU under another name
            return spec
        raise ValueError(f"device {spec!r} is not available on the numpy backend; available: ['cpu']")

    def __repr__(self) -> str:
        return "NumPyBackend()"


# ---------------------------------------------------------------------------------------------
# loop drivers shared by the eager backends, and the state checks every driver uses



def _leaf_signature(x: Any) -> tuple:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    return (tuple(shape) if shape is not None else None, str(dtype) if dtype is not None else type(x).__name__)


def _describe(where: str | int) -> str:
    return f"step {where}" if isinstance(where, int) else where


def _same_signature(before: Any, after: Any) -> bool:
    """Cheap equality of structure, shapes and dtypes (no strings built); False may be spurious."""
    if type(before) is not type(after):
        return False
    if isinstance(before, (tuple, list)):
        return len(before) == len(after) and all(_same_signature(b, a) for b, a in zip(before, after))
    if isinstance(before, dict):
        return before.keys() == after.keys() and all(_same_signature(before[k], after[k]) for k in before)
    try:
        return bool(before.shape == after.shape and before.dtype == after.dtype)
    except AttributeError:
        return not hasattr(before, "shape") and not hasattr(after, "shape")


def check_state_unchanged(before: Any, after: Any, step_index: int | str, path: str = "") -> None:
    """Raise LoopError naming the first field whose structure, shape or dtype changed.

    Works on NamedTuples (nested ones too: fields are named ``outer.inner``), tuples, lists and
    dicts of arrays, and on anything with ``shape`` and ``dtype`` (``jax.ShapeDtypeStruct``).
    ``step_index`` names where it happened: a step number or a phrase.
    """
    if _same_signature(before, after):  # the fast path: nothing to report
        return
    where = _describe(step_index)
    fields = getattr(type(before), "_fields", None)
    if fields is not None or isinstance(before, (tuple, list, dict)):
        if type(after) is not type(before):
            what = f"state field {path!r}" if path else "the state"
            raise LoopError(
                f"{where} returned a {type(after).__name__} for {what}, expected {type(before).__name__}"
            )
        if fields is not None:
            items = [(name, getattr(before, name), getattr(after, name)) for name in fields]
        elif isinstance(before, dict):
            if set(before) != set(after):
                raise LoopError(f"{where} changed the keys of {path or 'the state'}: {sorted(before)} became {sorted(after)}")
            items = [(str(k), before[k], after[k]) for k in before]
        else:
            if len(before) != len(after):
                raise LoopError(f"{where} changed the length of {path or 'the state'}: {len(before)} became {len(after)}")
            items = [(str(i), b, a) for i, (b, a) in enumerate(zip(before, after))]
        for name, b, a in items:
            check_state_unchanged(b, a, step_index, f"{path}.{name}" if path else name)
        return
    if _leaf_signature(before) != _leaf_signature(after):
        what = f"state field {path!r}" if path else "the state"
        raise LoopError(
            f"{where} changed {what}: shape/dtype {_leaf_signature(before)} became {_leaf_signature(after)}"
        )


def plan_length(plan: tuple) -> int:
    if not isinstance(plan, tuple) or not plan:
        raise ValueError(f"plan must be a non-empty tuple of 1-D arrays of equal length; got {type(plan).__name__}")
    if any(getattr(p, "ndim", None) != 1 for p in plan):
        raise ValueError(
            f"plan must be a tuple of 1-D arrays of equal length; got shapes {[tuple(getattr(p, 'shape', ())) for p in plan]}"
        )
    lengths = {int(p.shape[0]) for p in plan}
    if len(lengths) != 1:
        raise ValueError(
            f"plan must be a tuple of 1-D arrays of equal length; got shapes {[tuple(p.shape) for p in plan]}"
        )
    return lengths.pop()


def check_loop_args(plan: tuple, key: Any, noise_shape: Any, sample_ids: Any) -> tuple[int, tuple | None]:
    """(number of steps, noise shape as a tuple or None) after checking a driver's arguments."""
    n = plan_length(plan)
    if noise_shape is not None:
        if key is None:
            raise ValueError("key is required when noise_shape is given")
        noise_shape = check_shape(noise_shape, sample_ids)
    elif sample_ids is not None:
        raise ValueError("sample_ids needs noise_shape (it seeds the rows of each step's noise)")
    return n, noise_shape


def python_loop(
    bk, step, state, plan, *, key=None, noise_shape=None, sample_ids=None, progress=None, step_fn=None, args=NO_ARGS
):
    """The eager driver shared by the NumPy and torch backends: a plain Python loop.

    ``step_fn`` (e.g. ``torch.compile(step)``), when given, runs in place of ``step``. With
    ``args``, each step is called ``step(state, plan_i, noise_i, args)``.

    The state's structure, shapes and dtypes are checked after the first step (naming the field
    and step 0) and again after the last (naming the field): a step's output signature follows from
    its input signatures, as ``lax.scan`` assumes, so per-step checks would only add cost
    (docs/performance.md); a step that changes the state later still fails, naming the field.
    """
    extra = () if args is NO_ARGS else (args,)
    n, noise_shape = check_loop_args(plan, key, noise_shape, sample_ids)
    if sample_ids is not None:  # read the ids back to the host once, not once per step
        sample_ids = tuple(int(i) for i in (sample_ids.tolist() if hasattr(sample_ids, "tolist") else sample_ids))
    run = step_fn or step
    dtype, device = _state_dtype(state), _state_device(state)
    noise_at = None
    if noise_shape is not None:
        # a backend may offer the loop's draws prepared once (shape, dtype, device checked once):
        # ``step_noise(key, shape, dtype, device=, sample_ids=)(i)`` must equal the generic draw
        prepared = getattr(bk, "step_noise", None)
        if prepared is not None:
            noise_at = prepared(key, noise_shape, dtype, device=device, sample_ids=sample_ids)
        else:
            normal, fold_in = bk.normal, bk.fold_in  # looked up once, not at every step

            def noise_at(i: int) -> Any:
                return normal(fold_in(key, i), noise_shape, dtype, sample_ids=sample_ids, device=device)

    if all(hasattr(p, "unbind") for p in plan):
        # torch: a chunk of rows' 0-d entries from one unbind per column (memory stays bounded on
        # long plans), instead of one indexing per entry and step
        rows = (row for a in range(0, n, 256) for row in zip(*(p[a : a + 256].unbind(0) for p in plan)))
    else:
        rows = (tuple(p[i] for p in plan) for i in range(n))
    initial = state
    for i, plan_i in enumerate(rows):
        noise_i = None if noise_at is None else noise_at(i)
        new_state = run(state, plan_i, noise_i, *extra)
        if i == 0:
            check_state_unchanged(state, new_state, i)
        state = new_state
        if progress is not None:
            progress(i + 1, n)
    if n > 1:
        check_state_unchanged(initial, state, f"a step after step 0 (of {n})")
    return state


def check_max_steps(max_steps: Any) -> int:
    return check_int(max_steps, "max_steps", 1)


def budget_message(steps: int, max_steps: int) -> str:
    return (
        f"while-loop exceeded its step budget: {steps} steps reached (max_steps={max_steps}) "
        "and its condition still holds"
    )


def python_while_loop(cond, body, state, *, max_steps):
    """The eager bounded while-loop: ``body`` at most ``max_steps`` times, then StepBudgetExceeded."""
    max_steps = check_max_steps(max_steps)
    steps = 0
    while bool(cond(state)):
        if steps >= max_steps:
            raise StepBudgetExceeded(budget_message(steps, max_steps), steps=steps, state=state)
        new_state = body(state)
        check_state_unchanged(state, new_state, steps)
        state = new_state
        steps += 1
    return state


def _leaves(state: Any):
    if isinstance(state, dict):
        for v in state.values():
            yield from _leaves(v)
    elif isinstance(state, (tuple, list)):
        for v in state:
            yield from _leaves(v)
    elif state is not None:
        yield state


def _first_float_leaf(state: Any) -> Any:
    for leaf in _leaves(state):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            continue
        try:
            if array_api_compat.array_namespace(leaf).isdtype(dtype, "real floating"):
                return leaf
        except TypeError:
            continue
    return None


def _state_dtype(state: Any) -> Any:
    """The dtype of the first floating array in a state (the dtype of its noise)."""
    leaf = _first_float_leaf(state)
    return None if leaf is None else leaf.dtype


def _state_device(state: Any) -> Any:
    """The device of the first floating array in a state (where its noise is drawn)."""
    leaf = _first_float_leaf(state)
    return None if leaf is None else array_api_compat.device(leaf)


# ---------------------------------------------------------------------------------------------
# registry


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list[str]:
    """Names of the registered backends (installed or not: loading may still fail)."""
    return sorted(set(_entry_points()) | {"numpy"})


def _install_hint(name: str, ep: Any = None) -> str:
    if name in _EXTRAS:
        return f"pip install 'diffcore[{_EXTRAS[name]}]'"
    dist = getattr(getattr(ep, "dist", None), "name", None)
    return f"pip install '{dist}'" if dist else f"install the package that provides backend {name!r}"


@functools.lru_cache(maxsize=None)
def backend(name: str = "numpy") -> Backend:
    """The backend registered under ``name`` in the ``diffcore.backends`` entry-point group.

    The framework is imported here, not by ``import diffcore``.

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
            # torch and jax are registered by diffcore's own distribution: missing only when diffcore
            # runs from a source tree that was never installed
            hint = f"; install it with: {_install_hint(name)}"
        raise ValueError(f"unknown backend {name!r}; known backends: {known}{hint}")
    try:
        factory = eps[name].load()
    except ImportError as exc:
        raise ImportError(
            f"backend {name!r} needs a framework that is not installed ({exc}); "
            f"install it with: {_install_hint(name, eps[name])}"
        ) from exc
    obj = factory() if callable(factory) and isinstance(factory, type) else factory
    if callable(obj) and not hasattr(obj, "name"):
        obj = obj()
    if not isinstance(obj, Backend):
        members = set(Backend.__annotations__) | {m for m in vars(Backend) if not m.startswith("_")}
        missing = sorted(m for m in members if not hasattr(obj, m))
        raise TypeError(
            f"entry point {eps[name].value!r} for backend {name!r} does not implement the Backend "
            f"protocol; missing: {missing}"
        )
    return obj




def backend_for(x: Any) -> Backend:
    """The backend whose arrays ``x`` belongs to (numpy for NumPy and array_api_strict)."""
    if array_api_compat.is_torch_array(x):
        return backend("torch")
    if array_api_compat.is_jax_array(x):
        return backend("jax")
    return backend("numpy")
