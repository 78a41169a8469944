"""PyTorch backend for diffcore: keyed random numbers (torch's CPU generator with its state
derived from the full 64-bit key on CPU, torch's device generator on CUDA), an eager loop driver (the step
optionally compiled with ``torch.compile``), ``torch.func`` autodiff, CPU / CUDA / MPS devices.

Registered in the ``diffcore.backends`` entry-point group as ``torch``; get it with
``diffcore.backend("torch")``.
"""

from __future__ import annotations

import functools
import sys
import threading
import warnings
import weakref
from typing import Any, NamedTuple

import array_api_compat.torch as torch_xp
import numpy as np
import torch
import torch.func

from diffcore.backends import (
    NO_ARGS,
    check_seed,
    check_shape,
    mix64,
    mix64_array,
    splitmix64_array,
    per_sample_rows,
    python_loop,
    python_while_loop,
)

__all__ = ["TorchBackend", "TorchKey"]


class TorchKey(NamedTuple):
    """A key: a 64-bit state. A CPU draw runs torch's mt19937 from a state derived from all 64 bits
    (a splitmix64 hash of the state per state word); a CUDA draw seeds torch's device generator.

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


# Accelerators: one torch.Generator per thread and device, reseeded at every draw (creating one
# per draw costs twice as much as seeding one; docs/performance.md). CUDA's generator is Philox
# and ``manual_seed`` takes all 64 bits of the key. Per thread, so that concurrent draws never
# share a generator between its seeding and its use.
_GENERATORS = threading.local()


def _generator(device: torch.device) -> torch.Generator:
    if device.index is None:  # "the current device" may change: no reuse
        return torch.Generator(device=device)
    gens = getattr(_GENERATORS, "by_device", None)
    if gens is None:
        gens = _GENERATORS.by_device = {}
    gen = gens.get(device)
    if gen is None:
        gen = gens[device] = torch.Generator(device=device)
    return gen


# CPU draws: torch's own generator (mt19937, with its vectorised normal and uniform fills), its
# 624-word state filled from the key's 64 bits. ``manual_seed`` would keep only 32 bits (keys s and
# s + 2**32 would draw alike), and NumPy's Philox + ziggurat, tried before, cost 2.4x torch's randn
# on image-sized draws (docs/performance.md). The state words of key k are the low and high halves
# of ``mix64(k, 2**63 + j)`` (= ``fold_in(k, 2**63 + j)``, splitmix64), j = 0..311: a hash of the
# whole key per word, as NumPy seeds its mt19937 from a SeedSequence; the data 2**63 + j keep them
# apart from the small integers (steps, example ids) folded into keys. They are computed for many
# keys at once in NumPy (all rows of a ``sample_ids`` draw; a loop's next 64 steps), then copied
# into a kept serialized generator state and loaded with ``set_state`` (about 2 us a draw).
_MT_N = 624
_MT_OFFSET = 24  # bytes before the state words (uint64 each) in torch's serialized CPU generator state
# the inner hash of mix64(k, 2**63 + j), the same for every key
_MT_WORD_MIX = splitmix64_array(np.uint64(2**63) + np.arange(_MT_N // 2, dtype=np.uint64))


def _mt_layout_ok(state: torch.Tensor) -> bool:
    """Whether ``state`` (of ``manual_seed(5489)``) has mt19937's words as uint64 at _MT_OFFSET:
    word 0 is the seed, word 1 is 1812433253 * (w0 ^ (w0 >> 30)) + 1 mod 2**32 (Matsumoto and
    Nishimura 1998's initialisation)."""
    raw = state.numpy()
    if raw.size < _MT_OFFSET + 8 * _MT_N:
        return False
    words = raw[_MT_OFFSET : _MT_OFFSET + 16].view(np.uint64)
    return words.tolist() == [5489, (1812433253 * (5489 ^ (5489 >> 30)) + 1) & 0xFFFFFFFF]


@functools.lru_cache(maxsize=None)
def _mt_template() -> np.ndarray:
    """torch's serialized CPU generator state after ``manual_seed(5489)`` (left = 1, no cached
    normal: the first draw from a loaded state starts with a fresh twist), layout checked."""
    state = torch.Generator().manual_seed(5489).get_state()
    if not _mt_layout_ok(state):
        raise RuntimeError(
            f"torch {torch.__version__}: the CPU generator's serialized state has an unknown layout, so the "
            "torch backend cannot key its CPU draws by 64 bits; please report it with your torch version"
        )
    out = state.numpy().copy()
    out.flags.writeable = False
    return out


_LITTLE_ENDIAN = sys.byteorder == "little"


def _mt_words(keys: np.ndarray) -> np.ndarray:
    """The 624 mt19937 state words (as uint64 values below 2**32, torch's layout) of each 64-bit key
    state in ``keys`` (uint64, shape (n,)): shape (n, 624), the low then the high half of
    ``mix64(k, 2**63 + j)`` for j = 0..311."""
    halves = splitmix64_array(keys[:, None] ^ _MT_WORD_MIX[None, :])  # (n, 312) = mix64(k, 2**63 + j)
    if _LITTLE_ENDIAN:  # the uint32 view is (low, high) per uint64
        return halves.view(np.uint32).astype(np.uint64)
    words = np.empty((len(keys), _MT_N), dtype=np.uint64)
    words[:, 0::2] = halves & np.uint64(0xFFFFFFFF)
    words[:, 1::2] = halves >> np.uint64(32)
    return words


class _KeyedMT:
    """This thread's torch CPU generator and a serialized state to load words into."""

    __slots__ = ("gen", "state", "words")

    def __init__(self) -> None:
        self.gen = torch.Generator()
        self.state = torch.from_numpy(_mt_template().copy())
        self.words = self.state.numpy()[_MT_OFFSET : _MT_OFFSET + 8 * _MT_N].view(np.uint64)

    def load(self, words: np.ndarray) -> torch.Generator:
        """The generator, its state set to ``words`` (a row of :func:`_mt_words`)."""
        self.words[:] = words
        self.gen.set_state(self.state)
        return self.gen


_KEYED_MT = threading.local()


def _keyed_mt(words: np.ndarray) -> torch.Generator:
    """This thread's kept CPU generator, loaded with ``words`` (a row of :func:`_mt_words`)."""
    mt = getattr(_KEYED_MT, "mt", None)
    if mt is None:
        mt = _KEYED_MT.mt = _KeyedMT()
    return mt.load(words)


def _mt_fill(method: str, gen: torch.Generator, out: torch.Tensor) -> None:
    if method == "normal":
        out.normal_(generator=gen)
    elif method == "uniform":
        out.uniform_(generator=gen)  # [0, 1)
    else:
        out.random_(0, 2, generator=gen).mul_(2).sub_(1)


@functools.lru_cache(maxsize=None)
def _below_one(dtype: torch.dtype) -> float:
    """The largest value below 1 in ``dtype``."""
    return torch.nextafter(torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype)).item()


def _host_ids(sample_ids: Any) -> np.ndarray:
    """The ids as a NumPy array. Inside a torch.func transform (e.g. sliced score matching's vjp
    through a network with keyed dropout) any op on a tensor, ``.cpu()`` included, returns a wrapped
    tensor without storage: a CPU tensor is read with ``.numpy()`` (no op), a wrapped one by ``tolist``."""
    if not isinstance(sample_ids, torch.Tensor):
        return np.asarray(sample_ids)
    if sample_ids.device.type == "cpu":
        try:
            return sample_ids.numpy()
        except RuntimeError:
            pass
    return np.asarray(sample_ids.tolist())


_ROWS_PER_BATCH = 256
_STEPS_PER_BATCH = 64  # a loop's step draws: the words of 64 steps at once (about 1 us a step)


def _cpu_draw(method: str, key: TorchKey, shape: tuple, dtype: torch.dtype, sample_ids: Any) -> torch.Tensor:
    """A CPU draw from mt19937 keyed by the key's 64 bits; with ``sample_ids``, row b keyed by
    ``fold_in(key, sample_ids[b])`` (one reset per row into one output buffer). bfloat16 / float16
    are drawn in float32 and rounded (uniforms kept below 1)."""
    out = torch.empty(shape, dtype=dtype if dtype in (torch.float32, torch.float64) else torch.float32, device=_CPU)
    if sample_ids is None:
        _mt_fill(method, _keyed_mt(_mt_words(np.array([key.state], dtype=np.uint64))[0]), out)
    else:
        ids = _host_ids(sample_ids)
        if out.numel() == 0:
            return out.to(dtype)
        rows = out.view(len(ids), -1)  # row b as a flat view (also for shape (B,))
        for a in range(0, len(ids), _ROWS_PER_BATCH):  # bounded memory: 5 KB of state per row
            words = _mt_words(mix64_array(np.uint64(key.state), ids[a : a + _ROWS_PER_BATCH]))
            for b, row in enumerate(words, start=a):
                _mt_fill(method, _keyed_mt(row), rows[b])
    if out.dtype != dtype:
        out = out.to(dtype)
        if method == "uniform":  # float32 values just below 1 may round up to 1 in bf16 / fp16
            out = out.clamp_(max=_below_one(dtype))
    return out


_CPU = torch.device("cpu")
try:  # torch.get_default_device() imports and scans the mode stack per call (~20 us a draw here)
    _function_modes = torch._C._len_torch_function_stack
    _DEVICE_CONTEXT = torch._GLOBAL_DEVICE_CONTEXT
except AttributeError:  # pragma: no cover - another torch version
    _function_modes = _DEVICE_CONTEXT = None


def _default_device() -> torch.device:
    """``torch.get_default_device()``, with a fast answer when no device context or mode is active."""
    if _function_modes is not None and not _function_modes() and getattr(_DEVICE_CONTEXT, "device_context", None) is None:
        return _CPU
    return torch.get_default_device()


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

    Random numbers: keys are :class:`TorchKey` values (64 bits). On CPU a draw is torch's own
    (mt19937) fill from a generator state derived from the whole 64-bit key -- its 624 words are
    the halves of ``fold_in(key, 2**63 + j).state``, j < 312 -- made in the target precision
    (float32 or float64; bfloat16 / float16 drawn in float32 and cast, uniforms kept below 1); row b of a ``sample_ids`` draw is the draw of ``fold_in(key, sample_ids[b])``.
    On CUDA (and other accelerators) a draw seeds torch's generator on that device (CUDA's is
    Philox and takes all 64 bits of the seed), so the same key gives different numbers on CPU and
    CUDA. Draws go to ``device`` (default: torch's default device); loops draw each step's noise on
    the device of the state.

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
        key = _check_key(key)
        if device.type == "cpu":
            return _cpu_draw(method, key, shape, dtype, sample_ids)
        if sample_ids is not None:
            return per_sample_rows(self, method, key, shape, dtype, sample_ids, device)
        gen = _generator(device)
        gen.manual_seed(key.state)  # resets the whole state: as good as a fresh generator
        return fill(shape, gen, dtype, device)

    def normal(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> torch.Tensor:
        return self._draw(
            "normal", lambda s, g, dt, dev: torch.randn(s, generator=g, dtype=dt, device=dev),
            key, shape, dtype, sample_ids, device,
        )

    def step_noise(self, key, shape, dtype=None, *, sample_ids=None, device=None) -> Any:
        """``i -> normal(fold_in(key, i), shape, dtype, sample_ids=, device=)``, checked once: the
        eager loop's per-step draw (a CPU draw without ``sample_ids`` skips the per-draw checks,
        about 25 us a step)."""
        def generic(i: int) -> torch.Tensor:
            return self.normal(self.fold_in(key, i), shape, dtype, sample_ids=sample_ids, device=device)

        first = generic(0)  # checks all
        if first.device.type != "cpu" or sample_ids is not None:
            return lambda i: first if i == 0 else generic(i)
        state, out_dtype = key.state, first.dtype
        fill_dtype = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
        fill_shape = tuple(first.shape)
        chunk = [(None, ())]  # (c, the state words of steps c * _STEPS_PER_BATCH, ...), replaced whole

        def draw(i: int) -> torch.Tensor:
            if i == 0:
                return first
            if not 0 < i < 2**63:  # a loop's steps are 0..n-1; any other integer as fold_in takes it
                return generic(i)
            c, words = chunk[0]  # read once: another thread may replace the chunk meanwhile
            if c != i // _STEPS_PER_BATCH:
                c = i // _STEPS_PER_BATCH
                words = _mt_words(mix64_array(np.uint64(state), np.arange(
                    c * _STEPS_PER_BATCH, (c + 1) * _STEPS_PER_BATCH, dtype=np.uint64)))
                chunk[0] = (c, words)
            out = torch.empty(fill_shape, dtype=fill_dtype, device=_CPU)
            out.normal_(generator=_keyed_mt(words[i - c * _STEPS_PER_BATCH]))  # this thread's generator
            return out if fill_dtype == out_dtype else out.to(out_dtype)

        return draw

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

    # training -------------------------------------------------------------------------------
    def trainer(self, network: Any, optimizer: Any, *, ema: bool = True, world: Any = None) -> Any:
        """A :class:`diffcore_torch.training.TorchTrainer` (the :class:`diffcore.training.Trainer`
        protocol) for a diffcore torch network and an :class:`diffcore.training.OptimizerConfig`;
        with a ``world`` of several ranks (:meth:`world`) its gradients are reduced by DDP."""
        from .training import TorchTrainer

        return TorchTrainer(self, network, optimizer, ema=ema, world=world)

    def world(self, device: Any = None, *, timeout_s: float | None = None) -> Any:
        """This process's :class:`diffcore.distributed.World`: torch.distributed's default group under
        torchrun (gloo on CPU, NCCL on CUDA; :func:`diffcore_torch.distributed.init_world`), else
        ``diffcore.distributed.LOCAL``."""
        from .distributed import DEFAULT_TIMEOUT_S, init_world

        return init_world(device, timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)

    def network(self, config: Any, *, seed: int = 0, weights: Any = None, device: Any = None) -> Any:
        """The diffcore torch network for a ``UNetConfig`` / ``MLPConfig``: initialised by torch's
        default initialisers from ``seed`` (the global generator is left as it was), or loaded with
        NumPy ``weights`` in the network's layout; on ``device``."""
        from diffcore.networks import UNetConfig

        from .networks import MLP, UNet2D, load_numpy_weights

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(check_seed(seed))
            net = (UNet2D if isinstance(config, UNetConfig) else MLP)(config)
        if weights is not None:
            load_numpy_weights(net, weights)
        return net.to(self.device(device)) if device is not None else net

    def inference(self) -> Any:
        """A context for evaluating a network without recording gradients (``torch.no_grad``)."""
        return torch.no_grad()

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
            return _default_device()
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
