"""Training: the one loop, its keys, and what a backend supplies (its trainer).

The loop (:func:`train`) is written once here. Everything random in a step is keyed, never drawn
from a framework's global generator:

- data order: a permutation from (seed, epoch) (:func:`diffcore.data.batch_indices`), so a run
  resumed at any example position reads the examples the unstopped run would have read;
- the step's key: ``fold_in(fold_in(key(seed), TRAIN_STREAM), step)``; from it, per example b of the
  step's global batch (``sample_ids = b``): the noise (``fold_in(key, NOISE)``), the time draw
  (``fold_in(key, TIME)``), dropout masks (``fold_in(key, DROPOUT)``, then the dropout layer's index)
  and any extra projections an objective needs (``fold_in(key, EXTRA)``).

A resumed run therefore needs no generator state: the seed, the step and the data position are
the random state. Results do not depend on how a global batch is split into micro-batches
(accumulation) or across devices: example b's draws depend on (seed, step, b) only.

A backend supplies a :class:`Trainer` (``backend.trainer(network, optimizer)``): the parameter and
optimizer state, one optimisation step (forward, backward over the micro-batches, clipping by the
global norm, the framework's AdamW, the EMA), and the state as NumPy arrays in the portable layout
(weights in the network's layout, :func:`diffcore.networks.layout`).

Several processes (torchrun / DDP, ``jax.distributed``): a trainer with a ``world``
(:class:`diffcore.distributed.World`) of ``size`` ranks gets, on each rank, the rank's block of the
global batch (examples ``rank * B / size`` onwards, their ids still global), reduces the gradient
over ranks in its framework's engine, and reports its own examples' losses; the loop gathers them
(the importance sampler's history is the same on every rank), agrees on stopping, and lets rank 0
alone write checkpoints and metrics. Since every draw is keyed by the global example, a run on
any number of ranks computes the same step, and resumes on another number of ranks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from .checks import check_choice, check_positive, check_real

__all__ = [
    "TRAIN_STREAM",
    "NOISE",
    "TIME",
    "DROPOUT",
    "EXTRA",
    "COND",
    "OPTIMIZERS",
    "PRECISIONS",
    "OptimizerConfig",
    "Batch",
    "LossOut",
    "StepOut",
    "Trainer",
    "step_key",
    "TrainConfig",
    "TrainResult",
    "NonFiniteError",
    "train",
]

#: fold_in data of the training stream (kept apart from sampling's keys of the same seed).
TRAIN_STREAM = 0x7472_6169  # "trai"
#: fold_in data of the per-purpose streams under a step's key.
NOISE, TIME, DROPOUT, EXTRA, COND = 0, 1, 2, 3, 4

OPTIMIZERS = ("adamw", "adam")
PRECISIONS = ("float32", "bf16")


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW (Loshchilov & Hutter 2019) as torch.optim.AdamW and optax.adamw both define it.

    ``p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)``; "adam" is AdamW with
    weight_decay 0 (decoupled decay of 0 is plain Adam). ``lr`` is the peak learning rate; the loop
    passes each step's rate (warmup) to :meth:`Trainer.step`. ``precision`` "bf16" runs the forward
    in bfloat16 (torch autocast; a bfloat16 compute dtype on JAX) with float32 weights and optimizer.
    """

    name: str = "adamw"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    precision: str = "float32"

    def __post_init__(self) -> None:
        check_choice(self.name, OPTIMIZERS, "optimizer")
        check_positive(self.lr, "lr")
        if not (isinstance(self.betas, (tuple, list)) and len(self.betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2) in [0, 1); got {self.betas!r}")
        b1, b2 = (check_real(b, "betas") for b in self.betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be a pair (beta1, beta2) in [0, 1); got {self.betas!r}")
        object.__setattr__(self, "betas", (float(b1), float(b2)))
        check_positive(self.eps, "eps")
        wd = check_real(self.weight_decay, "weight_decay")
        if not wd >= 0.0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}")
        if self.name == "adam" and wd != 0.0:
            raise ValueError(f"optimizer 'adam' has no weight decay; got weight_decay={wd} (use 'adamw')")
        check_choice(self.precision, PRECISIONS, "precision")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OptimizerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown optimizer key(s) {unknown}; allowed: {sorted(known)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


class Batch(NamedTuple):
    """One micro-batch as an objective sees it (backend arrays).

    ``ids`` are the examples' indices in the step's global batch (0..B-1): the ``sample_ids`` of
    every keyed draw. ``key`` is the step's key (:func:`step_key`). ``t_probs`` is the timestep
    sampler's distribution p_t over the T steps (float, shape (T,)) for discrete objectives, None
    otherwise: it is an argument (it changes as the importance sampler's history fills), never a
    constant of a compiled step.
    """

    x0: Any
    ids: Any
    key: Any
    cond: Any = None
    t_probs: Any = None


class LossOut(NamedTuple):
    """What an objective returns for a micro-batch, each of shape (B_micro,).

    ``loss`` is what is minimised (importance weights applied); ``raw`` the unweighted per-example
    loss the importance sampler's history records; ``t`` the discrete steps drawn (None for
    continuous-time objectives).
    """

    loss: Any
    raw: Any
    t: Any = None


class StepOut(NamedTuple):
    """What :meth:`Trainer.step` reports, as host values, examples in global-batch order."""

    loss: np.ndarray
    raw: np.ndarray
    t: np.ndarray | None
    grad_norm: float
    applied: bool


#: ``objective(backend, net, batch) -> LossOut``, pure array-API code; ``net(x, t_in, cond=None)``
#: is the network with the step's weights and dropout keys bound by the trainer.
Objective = Callable[[Any, Callable[..., Any], Batch], LossOut]


class Trainer(Protocol):
    """What a backend supplies for training (``backend.trainer(network, optimizer)``).

    ``network`` is the backend's module (``diffcore_torch.networks.UNet2D`` / ``MLP``, or the nnx
    ones) with a ``config``; its forward takes ``dropout_key=`` and ``sample_ids=`` (keyed dropout:
    layer i's mask for example b from ``fold_in(fold_in(dropout_key, i), sample_ids[b])``; no
    dropout without a key).
    """

    backend: Any
    network: Any
    optimizer: OptimizerConfig
    #: optional: the processes of a distributed run (:class:`diffcore.distributed.World`); absent or
    #: None for one process
    world: Any

    def step(
        self,
        objective: Objective,
        batches: Sequence[Batch],
        *,
        global_batch: int,
        lr: float,
        clip_norm: float | None,
        ema_decay: float | None,
    ) -> StepOut:
        """One optimisation step over ``batches`` (the micro-batches of this rank's part of one
        global batch of ``global_batch`` examples; all of it with one process).

        The gradient is that of ``sum_b loss_b / global_batch`` over the whole global batch (with
        several ranks: each rank's part reduced over ranks by the framework's engine, e.g. DDP); clipped to
        ``clip_norm`` by its global norm (``g * min(1, clip_norm / (norm + 1e-6))``); then AdamW at
        learning rate ``lr``; then, with ``ema_decay``, ``ema <- decay * ema + (1 - decay) * params``.
        If the loss or the gradient norm is not finite, nothing is changed and ``applied`` is False.
        ``StepOut``'s per-example values are this rank's examples; ``grad_norm`` and ``applied`` are
        the global step's (the same on every rank).
        """
        ...

    def state_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """{"params": ..., "ema": ..., "optimizer": ...}: NumPy arrays in the portable layout.

        params / ema: the network's layout names and torch shapes (``to_numpy_weights``).
        optimizer: ``"step"`` (shape (), int64: steps taken) and, per layout name n,
        ``"exp_avg/" + n`` and ``"exp_avg_sq/" + n`` in the same layout: the same on both backends,
        so a run may move between frameworks with its optimizer state.
        """
        ...

    def load_state_arrays(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Load what :meth:`state_arrays` returned (any backend's); checked before anything is assigned."""
        ...

    def ema_network(self) -> Any:
        """A network of the same class holding the EMA weights (for sampling); a copy."""
        ...


def step_key(backend: Any, seed: int, step: int) -> Any:
    """The key of training step ``step``: ``fold_in(fold_in(key(seed), TRAIN_STREAM), step)``."""
    return backend.fold_in(backend.fold_in(backend.key(seed), TRAIN_STREAM), step)


# ----------------------------------------------------------------------------------- the loop
TIMESTEP_SAMPLERS = ("uniform", "loss-second-moment")
#: TrainConfig keys that do not change the math of a step: a run may resume with other values.
_SCHEDULING_KEYS = ("steps", "checkpoint_every", "keep", "log_every")


@dataclass(frozen=True)
class TrainConfig:
    """How the loop runs: batch, accumulation, seed, warmup, clipping, EMA, timestep sampler, cadence.

    ``micro_batch_size`` splits each global batch of ``batch_size`` examples into micro-batches
    whose gradients are accumulated (None: one micro-batch). ``warmup``: the learning rate rises
    linearly over the first ``warmup`` steps, lr_s = lr min(1, (s + 1) / warmup) (DDPM used 5000).
    ``clip_norm``: the gradient's global norm is clipped to it (None: no clipping; DDPM used 1).
    ``ema_decay``: EMA of the weights (None: none); ``ema_warmup``: decay_s = min(decay,
    (1 + s) / (10 + s)), the usual warm-up that keeps early EMA weights from remembering the
    initialisation. ``cond_dropout``: for a class-conditional network, each example's label is
    replaced by the null class with this probability (keyed by (seed, step, example), stream
    ``COND``), which trains the unconditional model classifier-free guidance needs (Ho & Salimans
    2021 used 0.1-0.2). ``timestep_sampler``: p_t for discrete objectives, "uniform" or
    "loss-second-moment" (Improved DDPM's importance sampling for L_vlb).
    ``checkpoint_every`` steps (None: at the end only), the last ``keep`` kept; metrics every
    ``log_every`` steps.
    """

    steps: int = 1000
    batch_size: int = 64
    micro_batch_size: int | None = None
    seed: int = 0
    warmup: int = 0
    clip_norm: float | None = 1.0
    ema_decay: float | None = 0.9999
    ema_warmup: bool = False
    cond_dropout: float = 0.0
    timestep_sampler: str = "uniform"
    checkpoint_every: int | None = None
    keep: int = 3
    log_every: int = 10

    def __post_init__(self) -> None:
        from .checks import check_bool, check_int

        check_int(self.steps, "steps", 0)
        check_int(self.batch_size, "batch_size", 1)
        if self.micro_batch_size is not None:
            check_int(self.micro_batch_size, "micro_batch_size", 1)
            if self.batch_size % self.micro_batch_size:
                raise ValueError(
                    f"micro_batch_size must divide batch_size ({self.batch_size}); got {self.micro_batch_size}"
                )
        check_int(self.seed, "seed", 0)
        check_int(self.warmup, "warmup", 0)
        if self.clip_norm is not None:
            check_positive(self.clip_norm, "clip_norm")
        if self.ema_decay is not None:
            d = check_real(self.ema_decay, "ema_decay")
            if not 0.0 <= d < 1.0:
                raise ValueError(f"ema_decay must lie in [0, 1) (or be None: no EMA); got {self.ema_decay!r}")
        check_bool(self.ema_warmup, "ema_warmup")
        p = check_real(self.cond_dropout, "cond_dropout")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"cond_dropout must lie in [0, 1); got {self.cond_dropout!r}")
        check_choice(self.timestep_sampler, TIMESTEP_SAMPLERS, "timestep_sampler")
        if self.checkpoint_every is not None:
            check_int(self.checkpoint_every, "checkpoint_every", 1)
        check_int(self.keep, "keep", 1)
        check_int(self.log_every, "log_every", 1)

    @property
    def micro_batches(self) -> int:
        return 1 if self.micro_batch_size is None else self.batch_size // self.micro_batch_size

    def lr_at(self, step: int, peak: float) -> float:
        """The learning rate of step ``step`` (0-based): linear warmup to ``peak``, then constant."""
        return peak if self.warmup == 0 else peak * min(1.0, (step + 1) / self.warmup)

    def ema_decay_at(self, step: int) -> float | None:
        if self.ema_decay is None:
            return None
        return min(self.ema_decay, (1 + step) / (10 + step)) if self.ema_warmup else self.ema_decay

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**d)


class NonFiniteError(FloatingPointError):
    """Training met a non-finite loss or gradient; the step was not applied."""


class TrainResult(NamedTuple):
    """What :func:`train` did: the steps done, whether Ctrl-C stopped it, the last checkpoint, and
    the mean loss of each step it ran (this call's steps, for comparisons)."""

    step: int
    interrupted: bool
    checkpoint: Any
    losses: list


def _sampler_for(objective: Any, config: TrainConfig) -> Any:
    if not getattr(objective, "discrete", False):
        return None
    from .timestep_sampler import create_named_schedule_sampler

    return create_named_schedule_sampler(config.timestep_sampler, objective.num_timesteps)


def describe_process(process: Any) -> str:
    """The process as a checkpoint records it: its class and a digest of alpha(t), sigma(t) and the
    network's time input on a grid of its time range (float64), so any change of schedule shows."""
    import hashlib

    from .process import is_discrete, time_range

    lo, hi = (float(v) for v in time_range(process))
    t = np.arange(int(lo), int(hi) + 1) if is_discrete(process) else np.linspace(lo, hi, 65)
    h = hashlib.sha256()
    for f in (process.alpha, process.sigma, process.model_time):
        h.update(np.ascontiguousarray(np.asarray(f(t), dtype=np.float64)).tobytes())
    return f"{type(process).__name__}:{h.hexdigest()[:16]}"


def _describe_objective(objective: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"objective": type(objective).__name__}
    for f in dataclasses.fields(objective):
        v = getattr(objective, f.name)
        if f.name == "process":
            d[f.name] = describe_process(v)
        else:
            d[f.name] = v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
    return d


def _math_keys(train: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train.items() if k not in _SCHEDULING_KEYS}


class _Interrupt:
    """SIGINT sets a flag the loop reads after each step (the second Ctrl-C interrupts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_Interrupt":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _rewrite_metrics(path: Any, upto_step: int) -> None:
    """Keep the metric lines of steps <= ``upto_step`` (a resumed run logs what the unstopped one did)."""
    import json
    import os

    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= upto_step]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def train(
    trainer: Trainer,
    objective: Objective,
    dataset: Any,
    config: TrainConfig,
    run_dir: Any = None,
    *,
    run_config: Mapping[str, Any] | None = None,
    progress: Callable[[int, int, Mapping[str, Any]], None] | None = None,
    stop_after: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``trainer``'s network on ``dataset`` with ``objective`` for ``config.steps`` steps.

    With a ``run_dir``: resumes from its latest checkpoint when there is one (checking that it was
    written by the same configuration: the objective, the optimizer, the training keys other than
    the step count and cadence, and ``run_config``), appends metrics to ``run_dir/metrics.jsonl``,
    and checkpoints every ``config.checkpoint_every`` steps, at the end, and on Ctrl-C (then it
    returns with ``interrupted=True``). A non-finite loss or gradient raises
    :class:`NonFiniteError` naming the step, with the last checkpoint untouched.
    ``progress(step_done, total, info)`` is called after each step; ``stop_after`` ends this
    call after that many steps (the run stays resumable), as an interruption would; so does
    ``stop()`` returning True after a step (e.g. a time budget).
    """
    import json
    import math
    import os
    import time
    from pathlib import Path

    from .data import batch_indices

    from .distributed import world_of

    bk = trainer.backend
    xp = bk.xp
    world = world_of(trainer)
    N = len(dataset)
    B = config.batch_size
    if B > N:
        raise ValueError(f"batch_size = {B} is larger than the data ({N} examples in {dataset.name!r}); it must be in 1..{N}")
    if B % world.size:
        raise ValueError(f"batch_size = {B} must be a multiple of the number of processes ({world.size})")
    B_rank = B // world.size  # this rank's examples: global positions first .. first + B_rank - 1
    first = world.rank * B_rank
    if B_rank % config.micro_batches:
        raise ValueError(
            f"micro_batch_size = {config.micro_batch_size} must be a multiple of the number of processes ({world.size}): "
            f"each process splits its {B_rank} examples into the run's {config.micro_batches} micro-batches"
        )
    network_config = trainer.network.config
    cond_data = dataset.labels if getattr(network_config, "num_class_embeds", None) is not None else None
    if getattr(network_config, "num_class_embeds", None) is not None and cond_data is None:
        raise ValueError(f"the network is class-conditional (num_class_embeds set) but {dataset.name!r} has no labels")
    sampler = _sampler_for(objective, config)
    stored = {
        "train": config.to_dict(),
        "optimizer": trainer.optimizer.to_dict(),
        "objective": _describe_objective(objective),
        "run": dict(run_config or {}),
        "data": {"name": dataset.name, "examples": N, "shape": list(dataset.shape), "levels": dataset.levels},
    }
    start = 0
    run_path = None if run_dir is None else Path(run_dir)
    writer = world.rank == 0  # rank 0 alone writes checkpoints and metrics
    last_ckpt = None
    if run_path is not None:
        from . import checkpoints

        if writer:
            run_path.mkdir(parents=True, exist_ok=True)
        world.barrier()  # the run directory exists before any rank reads it (a shared file system)
        last_ckpt = checkpoints.latest_checkpoint(run_path)
        if last_ckpt is not None:
            ckpt = checkpoints.load_checkpoint(last_ckpt, expect_network=network_config)
            _check_same_run(ckpt.config, stored, last_ckpt)
            trainer.load_state_arrays({"params": ckpt.params, "ema": ckpt.ema, "optimizer": ckpt.optimizer})
            start = int(ckpt.state["step"])
            if sampler is not None and ckpt.history is not None and hasattr(sampler, "load_state_dict"):
                sampler.load_state_dict(dict(ckpt.history))
        if writer:
            _rewrite_metrics(run_path / "metrics.jsonl", start)
    if world.size > 1:  # a rank that cannot see the run directory would silently start afresh
        starts = world.all_gather(np.asarray([start], dtype=np.int64)).tolist()
        if len(set(starts)) > 1:
            raise RuntimeError(
                f"the processes resume from different steps {starts} (rank order): every rank must see the same "
                f"run directory {run_path} (a shared file system)"
            )

    device = getattr(trainer, "device", None)
    micro = config.micro_batches
    mb = B_rank // micro
    ids = [xp.asarray(np.arange(first + i * mb, first + (i + 1) * mb, dtype=np.int64), device=device) for i in range(micro)]
    rank_ids = xp.asarray(np.arange(first, first + B_rank, dtype=np.int64), device=device)
    null_class = getattr(network_config, "null_class", None)
    if config.cond_dropout > 0 and (cond_data is None or null_class is None):
        raise ValueError("cond_dropout needs a class-conditional network (num_class_embeds set) and labelled data")
    dtype = xp.float32
    stream_key = bk.fold_in(bk.key(config.seed), TRAIN_STREAM)  # step_key's first two folds, once

    def save(step: int) -> Any:
        if run_path is None:
            return None
        arrays = trainer.state_arrays()  # on every rank: a framework may gather state collectively
        path = None
        if writer:
            history = sampler.state_dict() if sampler is not None and hasattr(sampler, "state_dict") else None
            path = checkpoints.save_checkpoint(
                run_path, step, config=stored, network_config=network_config, params=arrays["params"],
                ema=arrays["ema"], optimizer=arrays["optimizer"], optimizer_meta={"backend": bk.name},
                state={"step": step, "examples": step * B, "processes": world.size}, history=history,
                keep=config.keep,
            )
        world.barrier()  # nobody goes on (or ends) before the checkpoint is complete
        return path if writer else checkpoints.step_dir(run_path, step)

    losses: list[float] = []
    window: list[tuple[float, float]] = []
    end = config.steps if stop_after is None else min(config.steps, start + int(stop_after))
    interrupted = False
    metrics_file = None if run_path is None or not writer else open(run_path / "metrics.jsonl", "a")
    t_window = time.perf_counter()
    try:
        with _Interrupt() as interrupt:
            for step in range(start, end):
                idx = batch_indices(N, B, config.seed, step * B)[first : first + B_rank]
                x0 = xp.asarray(dataset.data[idx], dtype=dtype, device=device)
                cond = None if cond_data is None else xp.asarray(cond_data[idx], device=device)
                key = bk.fold_in(stream_key, step)  # = step_key(bk, config.seed, step)
                if config.cond_dropout > 0:  # the null class for a keyed fraction of the examples
                    u = bk.uniform(bk.fold_in(key, COND), (B_rank, 1), dtype, sample_ids=rank_ids, device=device)[:, 0]
                    cond = xp.where(u < config.cond_dropout, xp.asarray(null_class, dtype=cond.dtype, device=device), cond)
                t_probs = None
                if sampler is not None:
                    w = np.asarray(sampler.weights(), dtype=np.float64)
                    t_probs = xp.asarray(w / w.sum(), dtype=dtype, device=device)
                batches = [
                    Batch(x0[i * mb : (i + 1) * mb], ids[i], key, None if cond is None else cond[i * mb : (i + 1) * mb], t_probs)
                    for i in range(micro)
                ]
                lr = config.lr_at(step, trainer.optimizer.lr)
                where = f"; the last checkpoint ({last_ckpt}) is intact" if last_ckpt is not None else ""
                try:
                    out = trainer.step(
                        objective, batches, global_batch=B, lr=lr, clip_norm=config.clip_norm,
                        ema_decay=config.ema_decay_at(step),
                    )
                except NonFiniteError:
                    raise
                except FloatingPointError as err:
                    # an eager backend's finiteness probe (e.g. on the model output) fired inside the
                    # step, before anything was applied: the same fault as a non-finite loss
                    raise NonFiniteError(
                        f"training stopped at step {step}: {err}; the step was not applied{where}"
                    ) from err
                if world.size > 1:  # every rank's examples, in global-batch order: one gather
                    cols = [np.asarray(c) for c in (out.loss, out.raw, out.t) if c is not None]
                    both = world.all_gather(np.stack([c.astype(np.float64) for c in cols], axis=1))  # exact
                    loss_, raw_, *t_ = (both[:, j].astype(c.dtype) for j, c in enumerate(cols))
                    out = out._replace(loss=loss_, raw=raw_, t=t_[0] if t_ else None)
                loss = float(np.mean(out.loss))
                if not out.applied:
                    raise NonFiniteError(
                        f"training stopped at step {step}: the loss or its gradient is not finite (mean loss {loss}, "
                        f"gradient norm {out.grad_norm}); the step was not applied{where}"
                    )
                if sampler is not None and hasattr(sampler, "update_with_losses"):
                    sampler.update_with_losses(out.t, out.raw)
                losses.append(loss)
                window.append((loss, out.grad_norm))
                done = step + 1
                info = {"step": done, "loss": loss, "grad_norm": out.grad_norm, "lr": lr}
                if done % config.log_every == 0 or done == end:
                    now = time.perf_counter()
                    record = {
                        "step": done,
                        "loss": float(np.mean([w[0] for w in window])),
                        "grad_norm": float(np.mean([w[1] for w in window])),
                        "lr": lr,
                        "ema_decay": config.ema_decay_at(step),
                        "examples_per_s": len(window) * B / max(now - t_window, 1e-9),
                        "time": time.time(),
                    }
                    window, t_window = [], now
                    if metrics_file is not None:
                        metrics_file.write(json.dumps(record) + "\n")
                        metrics_file.flush()
                if progress is not None:
                    progress(done, config.steps, info)
                if config.checkpoint_every is not None and done % config.checkpoint_every == 0 and done < end:
                    last_ckpt = save(done)
                asked, timed_out = interrupt.requested, stop is not None and stop()
                if world.size > 1:  # all ranks stop after the same step: one agreement for both
                    flags = world.all_gather(np.asarray([[asked, timed_out]], dtype=np.int64))
                    asked, timed_out = bool(flags[:, 0].any()), bool(flags[:, 1].any())
                if asked:
                    interrupted = True
                    end = done
                    break
                if timed_out:
                    end = done
                    break
            if end > start or last_ckpt is None:
                last_ckpt = save(end) if run_path is not None else None
    finally:
        if metrics_file is not None:
            metrics_file.close()
    return TrainResult(step=end, interrupted=interrupted, checkpoint=last_ckpt, losses=losses)


def _check_same_run(found: Mapping[str, Any], expected: Mapping[str, Any], where: Any) -> None:
    """A checkpoint of another configuration is an error listing every differing key."""
    diffs = []
    for section in ("objective", "optimizer", "run", "data", "train"):
        a, b = dict(found.get(section, {})), dict(expected.get(section, {}))
        if section == "train":
            a, b = _math_keys(a), _math_keys(b)
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                diffs.append(f"{section}.{k}: checkpoint has {a.get(k)!r}, this run has {b.get(k)!r}")
    if diffs:
        raise ValueError(
            f"the checkpoint {where} was written by another configuration; differences:\n  " + "\n  ".join(diffs)
            + "\n(start a new run directory, or resume with the checkpoint's settings)"
        )
