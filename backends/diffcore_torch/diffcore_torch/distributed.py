"""torch.distributed as a :class:`diffcore.distributed.World`: torchrun launches, DDP reduces.

``init_world()`` in a process started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)
joins the default process group -- gloo on CPU, NCCL on CUDA -- and returns a :class:`TorchWorld`;
without torchrun it returns :data:`diffcore.distributed.LOCAL`. The training gradients are reduced
by ``torch.nn.parallel.DistributedDataParallel`` inside :class:`diffcore_torch.training.TorchTrainer`;
this world only moves the loop's host values (per-example losses, a stop flag) and waits for rank 0's
checkpoints (docs/distributed.md).
"""

from __future__ import annotations

import atexit
import datetime
import math
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from diffcore.distributed import LOCAL, World, env_int

__all__ = ["TorchWorld", "init_world", "DEFAULT_TIMEOUT_S"]

#: Collective timeout (s): how long a rank waits in a collective for a peer that is alive but does
#: not arrive. A peer that *dies* is found much sooner: its sockets close (gloo raises at once) and
#: torchrun's agent, which polls its workers every 0.1 s, stops the others and exits non-zero
#: (tests/test_torch_distributed.py: about 1-3 s). The timeout only ends a hang -- a rank stuck
#: in a deadlock or on a vanished host -- so it must exceed the longest legitimate wait: the other
#: ranks idle at a barrier while rank 0 writes a checkpoint or draws pictures, or while one rank
#: compiles. 300 s covers those on large models and still ends a hang 6x sooner than torch's
#: default (30 min for gloo).
DEFAULT_TIMEOUT_S = 300.0

# dtypes that cross the wire as themselves (NCCL has no bool: flags travel as uint8)
_WIRE = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.bool_): torch.uint8,
}
_DTYPE_CODES = {dt: i for i, dt in enumerate(_WIRE)}
_MAX_NDIM = 6


class TorchWorld:
    """The default torch.distributed process group as a :class:`diffcore.distributed.World`.

    ``rank`` / ``size`` are the group's; ``device`` is where this rank computes and where the
    collectives' tensors live (CPU for gloo, ``cuda:LOCAL_RANK`` for NCCL); ``local_rank`` is the
    rank on this host. ``all_gather`` checks first that every rank passed the same shape and dtype
    (a mismatch is an error naming the ranks' shapes, not a hang or garbage).
    """

    def __init__(self, device: torch.device, timeout_s: float) -> None:
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed's default process group is not initialised: use init_world()")
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        local_rank = env_int("LOCAL_RANK")
        self.local_rank = self.rank if local_rank is None else local_rank
        self.device = device
        self.timeout_s = timeout_s
        self.backend = dist.get_backend()

    def _wire(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x).astype(np.uint8 if x.dtype == np.bool_ else x.dtype, copy=False)).to(self.device)

    def all_gather(self, x: np.ndarray) -> np.ndarray:
        """Every rank's ``x`` (equal shapes and dtypes), concatenated along axis 0 in rank order."""
        x = np.asarray(x)
        if x.dtype not in _WIRE:
            raise TypeError(f"all_gather: dtype {x.dtype} cannot be sent; allowed: {[str(d) for d in _WIRE]}")
        if x.ndim == 0 or x.ndim > _MAX_NDIM:
            raise ValueError(f"all_gather: x must have 1..{_MAX_NDIM} dimensions (rows first); got shape {x.shape}")
        meta = np.full(2 + _MAX_NDIM, -1, dtype=np.int64)
        meta[0], meta[1], meta[2 : 2 + x.ndim] = _DTYPE_CODES[x.dtype], x.ndim, x.shape
        metas = self._gather(self._wire(meta)).reshape(self.size, -1)
        if not (metas == meta).all():
            codes = list(_WIRE)
            seen = [f"rank {r}: {codes[int(m[0])]} {tuple(int(s) for s in m[2 : 2 + int(m[1])])}" for r, m in enumerate(metas)]
            raise ValueError(f"all_gather: the ranks passed different shapes or dtypes ({'; '.join(seen)}); they must agree")
        out = self._gather(self._wire(x)).reshape((self.size * x.shape[0],) + x.shape[1:])
        return out.astype(np.bool_) if x.dtype == np.bool_ else out

    def _gather(self, t: torch.Tensor) -> np.ndarray:
        parts = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(parts, t)
        return torch.cat(parts).cpu().numpy()

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank passed True (all_reduce MAX of one byte)."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        dist.barrier()

    def __repr__(self) -> str:
        return f"TorchWorld(rank={self.rank}, size={self.size}, backend={self.backend!r}, device={str(self.device)!r})"


def init_world(device: Any = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """This process's world: a :class:`TorchWorld` under torchrun (``WORLD_SIZE`` > 1), else ``LOCAL``.

    Joins torch.distributed's default group when it is not joined yet (``init_process_group``
    from torchrun's ``env://`` variables): gloo when ``device`` is CPU, NCCL when it is CUDA
    (then this rank uses ``cuda:LOCAL_RANK``, or the index given). ``device`` None: CUDA when
    torch sees one, else CPU. ``timeout_s``: the collectives' timeout (:data:`DEFAULT_TIMEOUT_S`).
    A group already initialised by the caller is used as it is.
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds; got {timeout_s!r}")
    if not dist.is_available():
        raise RuntimeError(f"torch {torch.__version__} was built without torch.distributed: it cannot run several processes")
    initialised = dist.is_initialized()
    size = dist.get_world_size() if initialised else (env_int("WORLD_SIZE") or 1)
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1; got {size}")
    if size == 1 and not initialised:
        return LOCAL
    local_rank = env_int("LOCAL_RANK") or 0
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device ({exc}); use 'cpu' or 'cuda'") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r}: torch.distributed runs on 'cpu' (gloo) or 'cuda' (NCCL)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: torch sees no CUDA device here; use device='cpu' (gloo)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r}: this host has {torch.cuda.device_count()} CUDA device(s); run torchrun with "
                f"--nproc_per_node at most that many"
            )
        torch.cuda.set_device(device)
    if not initialised:
        if device.type == "cuda" and not dist.is_nccl_available():
            raise RuntimeError(f"torch {torch.__version__} has no NCCL: it cannot run several CUDA processes")
        if device.type == "cpu" and not dist.is_gloo_available():
            raise RuntimeError(f"torch {torch.__version__} has no gloo: it cannot run several CPU processes")
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={size} but {missing} not set: launch with torchrun (python -m torch.distributed.run)"
            )
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=float(timeout_s)),
            device_id=device if device.type == "cuda" else None,
        )
        # The group this function joined is left at exit while Python is still whole: a gloo group
        # torn down only by the interpreter's finalisation can abort the process ("terminate called
        # without an active exception", SIGABRT) after a run that succeeded. A group the caller
        # initialised is the caller's to destroy.
        atexit.register(_leave_group)
    return TorchWorld(device, float(timeout_s))


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
