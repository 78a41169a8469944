"""What every sampler shares: the sampler record, plans, model calls, the non-finite flag.

A sampler is a short pure step function ``step(state, plan_i, noise_i) -> state`` over a plan
computed before the loop (docs/conventions.md). The plan is a NamedTuple of float64 / int64 NumPy
columns on the host; :func:`plan_to` converts it once to the working namespace, dtype and device,
and the backend's driver hands the step a plain tuple of the i-th entries (rebuild the NamedTuple
with ``Plan(*plan_i)``). ``noise_i`` has shape (B, draws, *sample_shape[1:]) -- batch first, so that
per-sample seeds apply -- and a sampler that needs k standard-normal draws per step declares
``noise_draws = k`` and reads draw j as ``noise_i[:, j, ...]``.

Every plan has the columns ``index`` (the step number, for error messages), ``alpha_next`` and
``sigma_next`` (the noise level the state's ``x`` is at after the step): inpainting projects the
known part onto that level after every step, for every sampler.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
from array_api_compat import is_torch_array

from .._array import array_device, array_namespace, as_xp, asarray_on, default_dtype, is_traced
from ..checks import check_choice, check_int, check_positive, check_prediction
from ..parametrization import to_eps, to_score, to_x0

__all__ = [
    "Sampler",
    "ModelArgs",
    "SampleState",
    "Kept",
    "init_state",
    "final_x",
    "plan_to",
    "call_model",
    "flag_nonfinite",
    "NonfiniteProbes",
    "nonfinite_probes",
    "Denoised",
    "denoise",
    "check_steps",
    "check_choice",
    "check_positive",
]


class ModelArgs(NamedTuple):
    """What a step receives besides the state, plan row and noise: the model's weights (a pytree,
    or None for a model whose state the backend cannot see) and its condition (or None). Both are
    arguments of the loop, never constants captured by the step."""

    weights: Any
    cond: Any = None


class Sampler(NamedTuple):
    """A sampler ready to run: ``state = init(x_T)``, then ``step`` over ``plan``, then ``result(state)``.

    ``step(state, plan_i, noise_i, args)`` with ``args`` a :class:`ModelArgs`; ``model`` is the
    pure function the steps call (:class:`diffcore.models.ModelFn`): a sampler built once runs
    again with any weights of a model of the same structure (``Sampler.sample``); ``prior`` draws
    x_T from standard normal noise (the process's ``prior_sample``).

    ``times`` are the process times of the steps (for error messages); ``nfe`` is the number of
    model evaluations of the whole run (``None`` when the state counts them: ``state.nfe``);
    ``drive(step, state, plan, *, backend, key, noise_shape, sample_ids, progress, args)`` replaces the
    backend's ``loop`` for samplers that need another driver (adaptive solvers use the bounded
    while-loop; EDM's last row needs one model call instead of two).
    """

    name: str
    plan: Any
    init: Callable[[Any], Any]
    step: Callable[[Any, tuple, Any], Any]
    result: Callable[[Any], Any]
    noise_draws: int
    nfe: int | None
    times: np.ndarray
    drive: Callable[..., Any] | None = None
    model: Any = None
    prior: Callable[[Any], Any] | None = None

    def sample(self, model: Any, shape: tuple, **options: Any) -> Any:
        """Run this sampler with ``model``'s current weights (see :func:`diffcore.sample` for the
        options: backend, seed, dtype, device, sample_ids, x_T, mask, known, cond, progress)."""
        from . import run

        return run(self, model, shape, **options)


class SampleState(NamedTuple):
    """The state of a sampler that carries only x and the non-finite flag."""

    x: Any
    bad_step: Any


class Kept(NamedTuple):
    """A sampler's loop state with the states it keeps (``diffcore.sample(..., keep=...)``):
    ``xs`` (K, *shape) holds x after the kept numbers of steps, written as the loop passes them."""

    state: Any
    xs: Any


def init_state(x_T: Any) -> SampleState:
    return SampleState(x_T, initial_flag(x_T))


def final_x(state: Any) -> Any:
    return state.x


def plan_to(plan: Any, xp: Any, dtype: Any, device: Any) -> tuple:
    """The plan's columns in ``xp`` on ``device``: floating ones in ``dtype`` (network time inputs,
    fields named ``t_in*``, in at least float32), integer ones in the namespace's indexing dtype.
    Done once, before the loop."""
    # network time inputs keep at least float32: bf16 cannot hold 999 (it rounds to 1000)
    time_dtype = dtype if dtype in (xp.float32, xp.float64) else xp.float32
    names = getattr(type(plan), "_fields", ())
    groups: dict[str, list[int]] = {"index": [], "time": [], "value": []}
    columns = [np.asarray(c) for c in plan]
    for k, column in enumerate(columns):
        if column.dtype.kind in "iu":
            groups["index"].append(k)
        else:
            groups["time" if k < len(names) and names[k].startswith("t_in") else "value"].append(k)
    targets = {"index": default_dtype(xp, "indexing"), "time": time_dtype, "value": dtype}
    out: list[Any] = [None] * len(columns)
    for group, ks in groups.items():
        if not ks:
            continue
        # one host-to-device conversion per dtype (a plan has up to ~40 columns; each conversion
        # costs a dispatch), then rows of the stacked array
        host = np.stack([columns[k] if group == "index" else columns[k].astype(np.float64) for k in ks])
        stacked = as_xp(host, xp, targets[group], device)
        # one unstack, not one indexing per column (JAX: 0.2 ms against 0.2 ms a column)
        rows = xp.unstack(stacked, axis=0) if hasattr(xp, "unstack") else [stacked[j, ...] for j in range(len(ks))]
        for k, row in zip(ks, rows):
            out[k] = row
    return tuple(out)


def call_model(model: Callable[..., Any], args: ModelArgs, x: Any, t_in: Any, learned_variance: bool = False) -> Any:
    """model(weights, x, t_in broadcast to one entry per example[, cond]), its shape checked.

    The output must have x's shape (2 C channels on axis 1 with ``learned_variance``): a (B, 1),
    (1, D) or scalar output would otherwise broadcast silently into the samples. The check reads
    shapes only, so it costs nothing inside a compiled loop.
    """
    if is_torch_array(t_in):  # a view, without array_api_compat's dispatch (per step on eager torch)
        t_vec = t_in.expand(x.shape[0])
    else:
        t_vec = array_namespace(x).broadcast_to(t_in, (x.shape[0],))
    out = model(args.weights, x, t_vec, args.cond)
    check_output_shape(out, x, learned_variance)
    return out


def check_output_shape(out: Any, x: Any, learned_variance: bool = False) -> None:
    """The model output has x's shape (2 C channels with ``learned_variance``) and framework."""
    if type(out).__module__.split(".", 1)[0] != type(x).__module__.split(".", 1)[0] and not isinstance(out, type(x)):
        raise TypeError(
            f"the model returned a {type(out).__module__.split('.', 1)[0]} {type(out).__name__} for x of type "
            f"{type(x).__module__.split('.', 1)[0]} {type(x).__name__}: it must return an array of x's framework"
        )
    shape = getattr(out, "shape", None)
    expected = tuple(x.shape)
    if learned_variance and len(expected) >= 2:
        expected = (expected[0], 2 * expected[1]) + expected[2:]
    if shape is None or tuple(shape) != expected:
        got = "an output without a shape" if shape is None else f"shape {tuple(shape)}"
        raise ValueError(
            f"the model returned {got} for x of shape {tuple(x.shape)}; it must return shape {expected}"
            + (" (2 C channels: the mean and the variance outputs)" if learned_variance else " (x's shape)")
        )


def flag_nonfinite(bad_step: Any, value: Any, index: Any) -> Any:
    """``bad_step`` (-1 while all is well) set to ``index`` at the first non-finite ``value``.

    Samplers flag the new state: a non-finite model output reaches it, and so does a finite output
    made non-finite by a conversion (a division by alpha, exp of a log-variance).

    Carried through the loop and raised after it: no host sync per step.

    The test is exact, in both directions. On torch, whose isfinite is four elementwise kernels
    (``x == x``, ``abs``, ``!= inf``, ``*``) and their temporaries, it is one sum instead
    (docs/performance.md): ``value - value`` is exactly 0 where ``value`` is finite and NaN where
    it is inf or NaN, so its sum is exactly 0 for a finite ``value`` -- it cannot overflow, unlike
    a sum of ``value`` itself, which is inf for finite float32 entries near 3.4e38 / size -- and
    NaN otherwise; ``s != s`` is the NaN test. That branch calls tensor methods: array_api_compat's
    wrappers of sum and where cost more than the kernels on a state of this size. Elsewhere
    (NumPy, array_api_strict, XLA) ``all(isfinite(value))`` is already one cheap pass.

    Inside :func:`nonfinite_probes` (the one-call API's eager torch runs) the state is probed by
    ``torch.aminmax`` instead, one read of the state without a temporary (about 7 us on a
    (16, 3, 32, 32) float32 state against 12 for the sum of ``value - value``): min and max are
    NaN if any entry is NaN, and one of them is infinite if an entry is, so the test stays exact
    and a finite state can never overflow it. The pair is kept with its ``index`` and the first
    bad index is found after the loop (:meth:`NonfiniteProbes.first_bad`); ``bad_step`` is then
    returned unchanged. Under torch.compile, torch.func transforms or autograd the flag is carried
    as above.
    """
    if is_torch_array(value):
        probes = _PROBES.get()
        if probes is not None and not value.requires_grad and value.numel() and not is_traced(value):
            probes.add(index, value.aminmax())
            return bad_step
        s = (value - value).sum()
        if index.dtype != bad_step.dtype:
            index = index.to(bad_step.dtype)
        return index.where((s != s) & (bad_step < 0), bad_step)
    xp = array_namespace(value)
    bad = xp.logical_not(xp.all(xp.isfinite(value)))
    return xp.where(xp.logical_and(bad_step < 0, bad), xp.astype(index, bad_step.dtype), bad_step)


class NonfiniteProbes:
    """The per-step non-finite probes of one eager torch run: pairs (index, (min, max) of the
    state)), both finite exactly when the whole state is, kept as device values (no host sync per
    step).

    Every ``CHUNK`` probes are folded into one 0-d tensor, the chunk's first bad index (or the
    largest integer), so memory stays bounded on long runs; :meth:`first_bad` reads the result
    once, after the loop.
    """

    CHUNK = 1024
    __slots__ = ("pending", "firsts")

    def __init__(self) -> None:
        self.pending: list[tuple[Any, Any]] = []
        self.firsts: list[Any] = []

    def add(self, index: Any, extremes: Any) -> None:
        pending = self.pending
        pending.append((index, extremes))
        if len(pending) >= self.CHUNK:
            self._fold()

    def _fold(self) -> None:
        if not self.pending:
            return
        indices, extremes = zip(*self.pending)
        self.pending = []
        xp = array_namespace(extremes[0][0])
        idx = xp.astype(xp.stack(list(indices)), xp.int64)  # one plan's indices: one dtype
        lo_hi = xp.stack([xp.stack(list(pair)) for pair in extremes])  # (n, 2)
        bad = xp.logical_not(xp.all(xp.isfinite(lo_hi), axis=1))
        never = xp.full((), _NEVER, dtype=xp.int64, device=array_device(idx))
        self.firsts.append(xp.min(xp.where(bad, idx, never)))

    def first_bad(self, bad_step: Any = None) -> int:
        """The first index whose probe was NaN, also counting ``bad_step`` (the state's own flag,
        for steps flagged outside the probes); -1 if none. One host read."""
        self._fold()
        found = []
        if self.firsts:
            xp = array_namespace(self.firsts[0])
            found.append(int(xp.min(xp.stack(self.firsts))))
        if bad_step is not None:
            found.append(int(bad_step))
        found = [f for f in found if 0 <= f < _NEVER]
        return min(found) if found else -1


_NEVER = 2**62
_PROBES: "contextvars.ContextVar[NonfiniteProbes | None]" = contextvars.ContextVar("diffcore_nonfinite_probes", default=None)


@contextlib.contextmanager
def nonfinite_probes() -> Iterator[NonfiniteProbes]:
    """Collect :func:`flag_nonfinite`'s torch probes for the run inside (per thread and context)."""
    probes = NonfiniteProbes()
    token = _PROBES.set(probes)
    try:
        yield probes
    finally:
        _PROBES.reset(token)


def initial_flag(x: Any) -> Any:
    xp = array_namespace(x)
    return asarray_on(xp, np.asarray(-1, dtype=_numpy_index_dtype(xp)), array_device(x))


def _numpy_index_dtype(xp: Any) -> Any:
    """NumPy's dtype of the namespace's indexing dtype (int64, or int32 on JAX without x64)."""
    return np.dtype(str(default_dtype(xp, "indexing")).rsplit(".", 1)[-1])


class Denoised(NamedTuple):
    x0: Any
    eps: Any
    output: Any


def denoise(model, args: ModelArgs, x, t_in, alpha, sigma, prediction: str, clip: bool = False) -> Denoised:
    """The model's x_0 and eps at x = alpha x_0 + sigma eps (eps recomputed from the clipped x_0)."""
    output = call_model(model, args, x, t_in)
    x0 = to_x0(output, prediction, x, alpha, sigma)
    if clip:
        x0 = array_namespace(x).clip(x0, min=-1.0, max=1.0)
        eps = (x - alpha * x0) / sigma
    else:
        eps = to_eps(output, prediction, x, alpha, sigma)
    return Denoised(x0, eps, output)


def model_score(model, args: ModelArgs, x, t_in, alpha, sigma, prediction: str) -> tuple[Any, Any]:
    """(score, raw output) of the model at x."""
    output = call_model(model, args, x, t_in)
    return to_score(output, prediction, x, alpha, sigma), output


def check_steps(steps: Any, name: str = "steps") -> int:
    """A number of steps: an integer >= 1 (:func:`diffcore.checks.check_int`)."""
    return check_int(steps, name, 1)


def resolve_prediction(model: Any, process: Any, prediction: str | None, fallback: str) -> str:
    """What the model outputs: ``prediction`` if given, else what the model declares
    (``model.prediction``, e.g. analytic models), else the process's ``model_mean_type``, else
    ``fallback``. A given value that contradicts the model's declaration is refused."""
    declared = getattr(model, "prediction", None)
    if prediction is not None and declared is not None and prediction != declared:
        raise ValueError(f"prediction={prediction!r} but the model declares that it predicts {declared!r}")
    return check_prediction(prediction or declared or getattr(process, "model_mean_type", None) or fallback)
