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
    "OPTIMIZERS",
    "PRECISIONS",
    "OptimizerConfig",
    "Batch",
    "LossOut",
    "StepOut",
    "Trainer",
    "step_key",
]

#: fold_in data of the training stream (kept apart from sampling's keys of the same seed).
TRAIN_STREAM = 0x7472_6169  # "trai"
#: fold_in data of the per-purpose streams under a step's key.
NOISE, TIME, DROPOUT, EXTRA = 0, 1, 2, 3

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
        """One optimisation step over ``batches`` (the micro-batches of one global batch).

        The gradient is that of ``sum_b loss_b / global_batch`` over all micro-batches; clipped to
        ``clip_norm`` by its global norm (``g * min(1, clip_norm / (norm + 1e-6))``); then AdamW at
        learning rate ``lr``; then, with ``ema_decay``, ``ema <- decay * ema + (1 - decay) * params``.
        If the loss or the gradient norm is not finite, nothing is changed and ``applied`` is False.
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
