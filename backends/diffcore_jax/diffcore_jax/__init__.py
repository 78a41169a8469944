"""JAX backend for diffcore: ``jax.random`` keys, ``lax.scan`` / ``lax.while_loop`` drivers under
``jax.jit``, JAX autodiff, CPU / GPU devices.

Registered in the ``diffcore.backends`` entry-point group as ``jax``; get it with
``diffcore.backend("jax")``. This package never changes JAX's global settings (x64 included).
"""

from __future__ import annotations

import contextlib

import functools
import sys
import threading
import weakref
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from diffcore.backends import (
    NO_ARGS,
    StepBudgetExceeded,
    _leaves,
    _state_dtype,
    budget_message,
    check_loop_args,
    check_max_steps,
    check_seed,
    check_shape,
    check_state_unchanged,
)

__all__ = ["JaxBackend"]


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_key(key: Any) -> Any:
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must come from JaxBackend.key(seed) (a jax.random key); got {type(key).__name__}")
    return key


def _float_dtype(dtype: Any) -> Any:
    """``dtype``, or JAX's default float (float64 with x64 on, else float32)."""
    try:
        out = jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)
    except TypeError:
        out = None
    if out is None or not jnp.issubdtype(out, jnp.floating):
        raise TypeError(f"dtype must be a JAX / NumPy floating dtype (e.g. jnp.float32); got {dtype!r}")
    return out


_DRAWS = {
    "normal": lambda k, s, dt: jax.random.normal(k, s, dt),
    "rademacher": lambda k, s, dt: jax.random.rademacher(k, s, dtype=dt),
    "uniform": lambda k, s, dt: jax.random.uniform(k, s, dt),
}


def _draw(method: str, key: Any, shape: tuple, dtype: Any, sample_ids: Any) -> Any:
    """A draw; with ``sample_ids``, row b from ``fold_in(key, sample_ids[b])`` (vmapped, jit-safe)."""
    dtype = _float_dtype(dtype)
    if sample_ids is not None:
        sample_ids = jnp.asarray(sample_ids)
        if not jnp.issubdtype(sample_ids.dtype, jnp.integer):
            raise TypeError(f"sample_ids must be integers; got dtype {sample_ids.dtype}")
    return _compiled_draw(method, shape, dtype, key, sample_ids)


@functools.partial(jax.jit, static_argnames=("method", "shape", "dtype"))
def _compiled_draw(method, shape, dtype, key, sample_ids):
    # one compiled program per (method, shape, dtype): eager draws do not dispatch op by op
    fill = _DRAWS[method]
    if sample_ids is None:
        return fill(key, shape, dtype)
    return jax.vmap(lambda i: fill(jax.random.fold_in(key, i), shape[1:], dtype))(sample_ids)


# Eager key and fold_in through one compiled program each: jax.random's own functions dispatch op
# by op outside jit (0.17 and 0.34 ms against 0.03 and 0.04 ms a call). Python ints in int32's
# range only: a jitted argument outside it overflows where the eager functions take (or refuse)
# it their own way, so those keep the eager path and its behaviour.
_INT32_END = 2**31
_jit_key = jax.jit(jax.random.key)
_jit_fold_in = jax.jit(jax.random.fold_in)


def _step_noise(key, i, noise_shape, dtype, sample_ids):
    if noise_shape is None:
        return None
    return _draw("normal", jax.random.fold_in(key, i), noise_shape, dtype, sample_ids)


def _as_struct(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


# Compiled loops, one jitted function per step function (or per (cond, body) pair), kept while that
# function lives and no longer: a jit with the step as a *static* argument would keep every step --
# and the model it calls -- alive in jit's own cache. The jitted function holds the step weakly.
_SCAN_RUNNERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_WHILE_RUNNERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_RUNNERS_LOCK = threading.Lock()


def _runner(table: Any, fns: tuple, make: Callable[..., Any]) -> Any:
    """``jax.jit`` of ``make(*weak references to fns)``, found again while the functions live."""
    try:
        refs = tuple(weakref.ref(f) for f in fns)
    except TypeError:  # not weak-referenceable: compile for this call only
        return make(*((lambda f=f: f) for f in fns))
    with _RUNNERS_LOCK:
        level = table
        for f in fns[:-1]:
            level = level.setdefault(f, weakref.WeakKeyDictionary())
        runner = level.get(fns[-1])
        if runner is None:
            runner = level[fns[-1]] = make(*refs)
    return runner


def _make_scan(step_ref: Callable[[], Any]) -> Any:
    return jax.jit(functools.partial(_scan_impl, step_ref), static_argnames=("noise_shape", "length", "has_args"))


def _scan_impl(step_ref, state, plan, key, sample_ids, start, args, *, noise_shape, length, has_args):
    """Steps start .. start + length - 1 of the plan, one ``lax.scan`` (compiled once per shape)."""
    step = step_ref()
    dtype = _state_dtype(state)
    extra = (args,) if has_args else ()

    def body(carry, i):
        plan_i = tuple(p[i] for p in plan)
        return step(carry, plan_i, _step_noise(key, i, noise_shape, dtype, sample_ids), *extra), None

    # One abstract step first, so that a change of shape or dtype names the field instead of
    # ending in lax.scan's generic carry error. Runs at trace time only.
    out = jax.eval_shape(lambda c, i: body(c, i)[0], _as_struct(state), jnp.asarray(start))
    check_state_unchanged(state, out, "the step function")
    state, _ = lax.scan(body, state, start + jnp.arange(length))
    return state


def _make_while(cond_ref: Callable[[], Any], body_ref: Callable[[], Any]) -> Any:
    return jax.jit(functools.partial(_while_impl, cond_ref, body_ref))


def _while_impl(cond_ref, body_ref, state, max_steps):
    """``lax.while_loop`` with a step counter; returns (state, steps, budget exceeded)."""
    cond, body = cond_ref(), body_ref()
    pred = jax.eval_shape(cond, _as_struct(state))
    if getattr(pred, "shape", None) != () or not jnp.issubdtype(pred.dtype, jnp.bool_):
        raise TypeError(f"cond must return a scalar boolean array; got {pred}")
    check_state_unchanged(state, jax.eval_shape(body, _as_struct(state)), "the body function")

    def keep_going(carry):
        s, n = carry
        return jnp.logical_and(cond(s), n < max_steps)

    def advance(carry):
        s, n = carry
        return body(s), n + 1

    state, steps = lax.while_loop(keep_going, advance, (state, jnp.zeros((), jnp.int32)))
    return state, steps, jnp.logical_and(steps >= max_steps, cond(state))


def _report_budget(max_steps: int, steps: Any, exceeded: Any) -> None:
    if bool(exceeded):
        raise StepBudgetExceeded(budget_message(int(steps), max_steps), steps=int(steps))


def _progress_chunk(n: int) -> int:
    """Steps per reported chunk of an n-step scan: the divisor of n nearest n / 10 among those in
    [n / 20, n / 4] (every chunk one length: one compilation; a remainder chunk would compile a
    second scan, 2-5 s for a small U-Net on a CPU), else ceil(n / 10)."""
    fits = [c for c in range(max(1, -(-n // 20)), max(1, n // 4) + 1) if n % c == 0]
    return min(fits, key=lambda c: abs(c - n / 10)) if fits else max(1, -(-n // 10))


class JaxBackend:
    """The JAX backend.

    Random numbers: ``jax.random`` typed keys (``jax.random.key``), ``fold_in`` per step inside
    jit; per-sample rows are vmapped over ``fold_in(key, sample_ids[b])``. ``device=`` places an
    eager draw with ``jax.device_put``; inside jit arrays live where the computation runs.

    Loops: ``loop`` is ``lax.scan`` under ``jax.jit`` (compiled once per step function and shapes,
    kept while the step function lives: pass the same function object to reuse the compilation;
    ``args`` are traced inputs, so new weights need no recompiling);
    with ``progress`` the scan runs in chunks of ``chunk_size`` steps (default: about a tenth of the
    plan, a divisor of its length where one lies between a twentieth and a quarter, so that every
    chunk has one length and one compilation) and reports between them (through ``jax.debug.callback`` when called inside jit).
    ``while_loop`` is ``lax.while_loop`` with a step counter; a budget overrun raises
    StepBudgetExceeded after the loop (inside the caller's jit it is raised from a host callback and
    surfaces as a JaxRuntimeError carrying the same message).

    Autodiff: ``jax.grad``, ``jax.vjp``, ``jax.jvp``, ``lax.stop_gradient``.
    """

    name = "jax"

    @property
    def xp(self) -> Any:
        return jnp

    # random numbers -------------------------------------------------------------------------
    def key(self, seed: int) -> jax.Array:
        seed = check_seed(seed)
        return _jit_key(seed) if seed < _INT32_END else jax.random.key(seed)

    def fold_in(self, key: jax.Array, data: Any) -> jax.Array:
        if type(data) is int and -_INT32_END <= data < _INT32_END:
            return _jit_fold_in(_check_key(key), data)
        return jax.random.fold_in(_check_key(key), data)

    def _sample(self, method, key, shape, dtype, sample_ids, device):
        shape = check_shape(shape, sample_ids)
        out = _draw(method, _check_key(key), shape, dtype, sample_ids)
        if device is not None and not _is_tracer(out):
            out = jax.device_put(out, self.device(device))
        return out

    def normal(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> jax.Array:
        return self._sample("normal", key, shape, dtype, sample_ids, device)

    def rademacher(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> jax.Array:
        return self._sample("rademacher", key, shape, dtype, sample_ids, device)

    def uniform(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> jax.Array:
        return self._sample("uniform", key, shape, dtype, sample_ids, device)

    # loop drivers ---------------------------------------------------------------------------
    def loop(
        self, step, state, plan, *, key=None, noise_shape=None, sample_ids=None, progress=None, chunk_size=None,
        args=NO_ARGS,
    ):
        """``lax.scan`` of ``step`` over ``plan`` under ``jax.jit``; see the class docstring."""
        n, noise_shape = check_loop_args(plan, key, noise_shape, sample_ids)
        if noise_shape is not None:
            _check_key(key)
        if chunk_size is None:
            chunk = n if progress is None else _progress_chunk(n)
        elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
        else:
            chunk = chunk_size
        plan = tuple(p if isinstance(p, jax.Array) else jnp.asarray(p) for p in plan)  # asarray costs a dispatch
        if sample_ids is not None:
            sample_ids = jnp.asarray(sample_ids)
        traced = any(_is_tracer(x) for x in _leaves(state))
        has_args = args is not NO_ARGS
        scan = _runner(_SCAN_RUNNERS, (step,), _make_scan)
        done = 0
        while done < n:
            length = min(chunk, n - done)
            state = scan(
                state, plan, key, sample_ids, done, args if has_args else None,
                noise_shape=noise_shape, length=length, has_args=has_args,
            )
            done += length
            if progress is not None:
                if traced:  # inside the caller's jit: report when the chunk has run
                    jax.debug.callback(functools.partial(_call_progress, progress, done, n), jax.tree.leaves(state))
                else:
                    # wait for the chunk: a report at dispatch would say nothing, and Ctrl-C would
                    # have to wait for the whole run
                    jax.block_until_ready(state)
                    progress(done, n)
        return state

    def while_loop(self, cond, body, state, *, max_steps):
        max_steps = check_max_steps(max_steps)
        state, steps, exceeded = _runner(_WHILE_RUNNERS, (cond, body), _make_while)(state, max_steps)
        if _is_tracer(steps):
            jax.debug.callback(functools.partial(_report_budget, max_steps), steps, exceeded)
            return state
        if bool(exceeded):
            raise StepBudgetExceeded(budget_message(int(steps), max_steps), steps=int(steps), state=state)
        return state

    # models ---------------------------------------------------------------------------------
    def split_model(self, model: Any) -> tuple | None:
        """(apply, weights, key) of a flax nnx module: its graph definition is the static part and
        its state the weights, an argument of compiled loops (None for other kinds of model)."""
        nnx = sys.modules.get("flax.nnx")  # a module of nnx exists only if flax was imported
        if nnx is None or not isinstance(model, nnx.Module):
            return None
        graphdef, state = nnx.split(model)
        return _NnxApply(graphdef), state, ("nnx", graphdef)

    def trainer(
        self, network: Any, optimizer: Any, *, ema: bool = True, compiler_options: Any = None, mesh: Any = None
    ) -> Any:
        """A :class:`diffcore_jax.training.JaxTrainer` for an nnx ``UNet2D`` / ``MLP``
        (``diffcore_jax.networks``) with ``optimizer`` (a ``diffcore.training.OptimizerConfig``):
        optax AdamW, one jitted step per objective, EMA of the weights with ``ema``;
        ``compiler_options`` go to ``jax.jit``; ``mesh`` (None, "auto" or a ``jax.sharding.Mesh``
        with a "data" axis): data parallelism over its devices (see ``JaxTrainer``)."""
        from .training import JaxTrainer

        return JaxTrainer(self, network, optimizer, ema=ema, compiler_options=compiler_options, mesh=mesh)

    def world(self, coordinator: str | None = None, num_processes: int | None = None,
              process_id: int | None = None, *, device: Any = None, **options: Any) -> Any:
        """This process's ``diffcore.distributed.World``: joins a ``jax.distributed`` job when
        ``coordinator`` is given or a launcher's environment names one (``JAX_COORDINATOR_ADDRESS``,
        SLURM, Open MPI), else ``LOCAL``; see :func:`diffcore_jax.distributed.init_world` (options:
        ``heartbeat_timeout``, ``shutdown_timeout``, ``initialization_timeout``, ``local_device_ids``).
        ``device`` is accepted as the torch backend's is, and checked; a JAX process computes on its
        local devices (a mesh over all processes' devices in training)."""
        from .distributed import init_world

        if device is not None:
            self.device(device)
        return init_world(coordinator, num_processes, process_id, **options)

    def network(self, config: Any, *, seed: int = 0, weights: Any = None, device: Any = None) -> Any:
        """The diffcore nnx network for a ``UNetConfig`` / ``MLPConfig``: initialised from ``seed``,
        or loaded with NumPy ``weights`` in the network's layout; its state on ``device``."""
        from flax import nnx

        from diffcore.networks import UNetConfig

        from .networks import MLP, UNet2D, load_numpy_weights

        net = (UNet2D if isinstance(config, UNetConfig) else MLP)(config, rngs=nnx.Rngs(check_seed(seed)))
        if weights is not None:
            load_numpy_weights(net, weights)
        if device is not None:
            nnx.update(net, jax.device_put(nnx.state(net), self.device(device)))
        return net

    def inference(self) -> Any:
        """A context for evaluating a network: nothing to switch off (JAX records no gradients)."""
        return contextlib.nullcontext()

    # autodiff -------------------------------------------------------------------------------
    def stop_gradient(self, x: Any) -> Any:
        return lax.stop_gradient(x)

    def grad(self, f):
        return jax.grad(f)

    def vjp(self, f, x, v):
        out, pullback = jax.vjp(f, x)
        return out, pullback(v)[0]

    def jvp(self, f, x, v):
        return jax.jvp(f, (x,), (v,))

    # devices --------------------------------------------------------------------------------
    def devices(self) -> list:
        found = list(jax.devices("cpu"))
        for platform in ("gpu", "tpu"):
            try:
                found += jax.devices(platform)
            except RuntimeError:
                pass
        return found

    def device(self, spec: Any = None) -> Any:
        if spec is None:  # this process's first device (in a jax.distributed job, devices()[0] is process 0's)
            return jax.local_devices()[0]
        if isinstance(spec, jax.Device):
            return spec
        if isinstance(spec, str):
            kind, _, index = spec.partition(":")
            platform = {"cuda": "gpu", "rocm": "gpu"}.get(kind, kind)
            try:
                devs = jax.devices(platform)
                return devs[int(index or 0)]
            except (RuntimeError, ValueError, IndexError):
                pass
        raise ValueError(
            f"device {spec!r} is not available to jax here; available: {[str(d) for d in self.devices()]}"
        )

    def __repr__(self) -> str:
        return "JaxBackend()"


class _NnxApply:
    """``apply(state, x, t_in[, cond])`` of an nnx module given by its graph definition."""

    __slots__ = ("graphdef", "__weakref__")

    def __init__(self, graphdef: Any) -> None:
        self.graphdef = graphdef

    def __call__(self, state: Any, x: Any, t_in: Any, cond: Any = None) -> Any:
        from flax import nnx

        module = nnx.merge(self.graphdef, state)
        return module(x, t_in) if cond is None else module(x, t_in, cond)


def _call_progress(progress, done, total, _state):
    progress(done, total)
