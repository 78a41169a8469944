"""PyTorch backend for diffcore: torch.Generator random numbers, an eager loop driver (the step
optionally compiled with ``torch.compile``), ``torch.func`` autodiff, CPU / CUDA / MPS devices.

Registered in the ``diffcore.backends`` entry-point group as ``torch``; get it with
``diffcore.backend("torch")``.
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref
from typing import Any, NamedTuple

import array_api_compat.torch as torch_xp
import torch
import torch.func

from diffcore.backends import (
    NO_ARGS,
    check_seed,
    check_shape,
    mix64,
    per_sample_rows,
    python_loop,
    python_while_loop,
)

__all__ = ["TorchBackend", "TorchKey"]


class TorchKey(NamedTuple):
    """A counter-based key: a 64-bit state. Each draw seeds a fresh ``torch.Generator`` with it.

    ``fold_in`` mixes integers into the state (splitmix64), so keys are values: drawing from a
    key never changes it, and the draws of step i do not depend on the draws before it.
    """

    state: int


def _check_key(key: Any) -> TorchKey:
    if not isinstance(key, TorchKey):
        raise TypeError(f"key must come from TorchBackend.key(seed) or fold_in; got {type(key).__name__}")
    return key


# torch.compile'd step functions, per step and options (a compile is paid once per step function).
_COMPILED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _compiled(step: Any, options: Any) -> Any:
    opts = dict(options) if isinstance(options, dict) else {}
    cache_key = tuple(sorted((k, repr(v)) for k, v in opts.items()))
    try:
        per_step = _COMPILED.setdefault(step, {})
    except TypeError:  # not weak-referenceable (e.g. a bound method): compile without caching
        return torch.compile(step, **opts)
    if cache_key not in per_step:
        per_step[cache_key] = torch.compile(step, **opts)
    return per_step[cache_key]


# One torch.Generator per thread and device, reseeded at every draw: creating one per draw costs
# twice as much as seeding one (docs/performance.md). Per thread, so that concurrent draws never
# share a generator between its seeding and its use.
_GENERATORS = threading.local()


def _generator(device: torch.device) -> torch.Generator:
    if device.type != "cpu" and device.index is None:  # "the current device" may change: no reuse
        return torch.Generator(device=device)
    gens = getattr(_GENERATORS, "by_device", None)
    if gens is None:
        gens = _GENERATORS.by_device = {}
    gen = gens.get(device)
    if gen is None:
        gen = gens[device] = torch.Generator(device=device)
    return gen


@functools.lru_cache(maxsize=None)
def _quiet_jvp_setup() -> None:
    # torch.func.jvp's first call imports decompositions that call the deprecated torch.jit.script
    # and warn about it: torch's business, not the caller's.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
        try:
            import torch._decomp.decompositions_for_jvp  # noqa: F401
        except ImportError:  # pragma: no cover - moved in another torch version
            pass


class TorchBackend:
    """The PyTorch backend.

    Random numbers: keys are :class:`TorchKey` values; each draw seeds a ``torch.Generator`` on the
    target device (so the same key gives different numbers on CPU and CUDA, as in torch itself;
    the CPU generator, mt19937, uses 32 bits of the seed). Draws go to ``device`` (default: torch's
    default device); loops draw each step's noise on the device of the state.

    Loops: a Python loop (the NumPy backend's, :func:`diffcore.backends.python_loop`); with
    ``compile=True`` (or a dict of ``torch.compile`` options) the step runs through
    ``torch.compile``. The driver does not switch off autograd: wrap sampling in ``torch.no_grad()``.

    Autodiff: ``torch.func`` (grad, vjp, jvp); ``stop_gradient`` is ``detach``.
    """

    name = "torch"

    def __init__(self, compile: bool | dict = False):
        if not isinstance(compile, (bool, dict)):
            raise TypeError(f"compile must be a bool or a dict of torch.compile options; got {compile!r}")
        self.compile = compile

    @property
    def xp(self) -> Any:
        return torch_xp

    # random numbers -------------------------------------------------------------------------
    def key(self, seed: int) -> TorchKey:
        return TorchKey(mix64(0, check_seed(seed)))

    def fold_in(self, key: TorchKey, data: Any) -> TorchKey:
        return TorchKey(mix64(_check_key(key).state, int(data)))

    def _draw(self, method, fill, key, shape, dtype, sample_ids, device):
        shape = check_shape(shape, sample_ids)
        device = self.device(device)
        dtype = dtype or torch.get_default_dtype()
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a torch floating dtype (e.g. torch.float32); got {dtype!r}")
        if sample_ids is not None:
            return per_sample_rows(self, method, key, shape, dtype, sample_ids, device)
        gen = _generator(device)
        gen.manual_seed(_check_key(key).state)  # resets the whole state: as good as a fresh generator
        return fill(shape, gen, dtype, device)

    def normal(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> torch.Tensor:
        return self._draw(
            "normal", lambda s, g, dt, dev: torch.randn(s, generator=g, dtype=dt, device=dev),
            key, shape, dtype, sample_ids, device,
        )

    def rademacher(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> torch.Tensor:
        def fill(s, g, dt, dev):
            bits = torch.randint(0, 2, s, generator=g, device=dev)
            return (2 * bits - 1).to(dt)

        return self._draw("rademacher", fill, key, shape, dtype, sample_ids, device)

    def uniform(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> torch.Tensor:
        return self._draw(
            "uniform", lambda s, g, dt, dev: torch.rand(s, generator=g, dtype=dt, device=dev),
            key, shape, dtype, sample_ids, device,
        )

    # loop drivers ---------------------------------------------------------------------------
    def loop(
        self, step, state, plan, *, key=None, noise_shape=None, sample_ids=None, progress=None, compile=None,
        args=NO_ARGS,
    ):
        """:func:`diffcore.backends.python_loop`; ``compile`` overrides the backend's option."""
        options = self.compile if compile is None else compile
        step_fn = _compiled(step, options) if options else None
        return python_loop(
            self, step, state, plan, key=key, noise_shape=noise_shape, sample_ids=sample_ids,
            progress=progress, step_fn=step_fn, args=args,
        )

    def while_loop(self, cond, body, state, *, max_steps):
        return python_while_loop(cond, body, state, max_steps=max_steps)

    # autodiff -------------------------------------------------------------------------------
    def stop_gradient(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()

    def grad(self, f):
        return torch.func.grad(f)

    def vjp(self, f, x, v):
        out, pullback = torch.func.vjp(f, x)
        return out, pullback(v)[0]

    def jvp(self, f, x, v):
        _quiet_jvp_setup()
        return torch.func.jvp(f, (x,), (v,))

    # devices --------------------------------------------------------------------------------
    def devices(self) -> list:
        found = [torch.device("cpu")]
        if torch.cuda.is_available():
            found += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            found.append(torch.device("mps"))
        return found

    def device(self, spec: Any = None) -> torch.device:
        if spec is None:
            return torch.get_default_device()
        if type(spec) is torch.device and spec.type == "cpu":  # the fast path: loops draw on the state's device
            return spec
        try:
            dev = spec if isinstance(spec, torch.device) else torch.device(spec)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device {spec!r} is not a torch device ({exc}); available: {self._names()}") from None
        if dev.type == "cpu":
            return dev
        if dev.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if (dev.index or 0) < count:
                return dev
        elif dev.type == "mps" and any(d.type == "mps" for d in self.devices()):
            return dev
        elif dev.type not in ("cuda", "mps"):
            return dev  # meta, xpu, ...: torch will say if it cannot use them
        raise ValueError(f"device {spec!r} is not available to torch here; available: {self._names()}")

    def _names(self) -> list[str]:
        return [str(d) for d in self.devices()]

    def __repr__(self) -> str:
        return f"TorchBackend(compile={self.compile!r})"
