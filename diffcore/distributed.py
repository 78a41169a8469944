"""Several processes: what the core needs from a distributed engine, and the sharding of examples.

diffcore runs on the engines users already have -- torch.distributed (launched by torchrun, DDP for
the gradients) and JAX (one process over several devices, or ``jax.distributed`` over hosts) -- and
adds none of its own. The core asks a backend for a :class:`World`: the process's rank, the number
of processes, a gather of host arrays in rank order, an agreement on a flag, and a barrier. The
backends build it from their engine (``diffcore_torch.distributed``, ``diffcore_jax.distributed``);
one process is :data:`LOCAL`.

Because every random draw is keyed by the *global* example index (training: the example's position
in the global batch; sampling and likelihood: ``sample_ids``), a result does not depend on how many
processes computed it: each rank computes its block of examples (:func:`shard`) with their global
ids, and :func:`gather_rows` puts the blocks back in order. No collective runs inside a sampler or
an ODE solve: ranks may take different numbers of adaptive steps; they meet after the loop.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .checks import check_int

__all__ = ["World", "LocalWorld", "LOCAL", "world_of", "shard", "gather_rows", "env_int"]


@runtime_checkable
class World(Protocol):
    """The processes of one job, as the training loop and the sharded evaluations use them.

    ``rank`` is this process's index in 0..size-1; rank 0 writes checkpoints, metrics and pictures.
    ``all_gather(x)``: the NumPy arrays of every rank (equal shapes), concatenated along axis 0 in
    rank order, on every rank. ``any(flag)``: True on every rank if any rank passed True (a stop
    request or a time budget reached on one rank stops all at the same step). ``barrier()``: wait
    for every rank (after rank 0 wrote a checkpoint). A failed or killed rank must make these raise
    within the engine's timeout, not hang.
    """

    rank: int
    size: int

    def all_gather(self, x: np.ndarray) -> np.ndarray: ...

    def any(self, flag: bool) -> bool: ...

    def barrier(self) -> None: ...


class LocalWorld:
    """One process: rank 0 of 1."""

    rank = 0
    size = 1

    def all_gather(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def barrier(self) -> None:
        return None

    def __repr__(self) -> str:
        return "LocalWorld()"


#: The world of a single process.
LOCAL = LocalWorld()


def world_of(obj: Any) -> World:
    """``obj.world`` (a trainer's, say) when it has one, else :data:`LOCAL`; checked."""
    world = getattr(obj, "world", None)
    if world is None:
        return LOCAL
    if not isinstance(world, World):
        raise TypeError(f"world must provide rank, size, all_gather, any and barrier; got {type(world).__name__}")
    if not (isinstance(world.size, int) and world.size >= 1 and isinstance(world.rank, int) and 0 <= world.rank < world.size):
        raise ValueError(f"world has rank {world.rank!r} of size {world.size!r}; need 0 <= rank < size, size >= 1")
    return world


def shard(n: int, world: World = LOCAL) -> range:
    """The global example ids this rank computes out of ``n``: a contiguous block, the first
    ``n % size`` ranks one longer (``np.array_split``'s rule)."""
    return _block(check_int(n, "n", 0), world.rank, world.size)


def _block(n: int, rank: int, size: int) -> range:
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def gather_rows(world: World, local: Any, n: int) -> np.ndarray:
    """Every rank's block of rows (its :func:`shard` of ``n``) gathered in global order, on every rank.

    Blocks may differ by one row; each is padded to the longest before the gather and the padding
    is dropped after it.
    """
    local = np.asarray(local)
    ids = shard(n, world)
    if local.shape[:1] != (len(ids),):
        raise ValueError(f"rank {world.rank} holds {local.shape[:1]} rows; its shard of {n} has {len(ids)}")
    if world.size == 1:
        return local
    longest = -(-n // world.size)
    padded = np.zeros((longest,) + local.shape[1:], dtype=local.dtype)
    padded[: len(ids)] = local
    blocks = world.all_gather(padded).reshape((world.size, longest) + local.shape[1:])
    return np.concatenate([blocks[r][: len(_block(n, r, world.size))] for r in range(world.size)], axis=0)


def env_int(name: str) -> int | None:
    """The whole number in the environment variable ``name`` (a launcher's WORLD_SIZE, LOCAL_RANK,
    JAX_NUM_PROCESSES ...), or None when it is unset or empty; anything else is an error naming it."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"the environment variable {name} must be a whole number; got {value!r}") from None
