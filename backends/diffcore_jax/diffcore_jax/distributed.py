"""Several JAX processes: :class:`JaxWorld`, the ``diffcore.distributed.World`` over ``jax.distributed``.

``init_world()`` starts ``jax.distributed`` (when asked, or when the launcher's environment says
this is a multi-process job: ``JAX_COORDINATOR_ADDRESS`` (read by JAX) with ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID`` (read here: JAX reads only the address), or SLURM's ``SLURM_NTASKS > 1`` /
Open MPI's ``OMPI_COMM_WORLD_SIZE > 1``, which JAX reads itself) and returns a :class:`JaxWorld`; a single process gets
``diffcore.distributed.LOCAL``. The gradient all-reduce is not here: the trainer's jitted step runs
on a mesh over every process's devices and XLA's SPMD partitioner inserts it. This module only
carries the host-side collectives of the loop (gathering per-example losses, agreeing on stop,
waiting for rank 0's checkpoint), all through ``jax.experimental.multihost_utils``.

A dead process: the coordination service declares it dead after ``heartbeat_timeout_seconds``
(JAX's default is 100 s; here 10 s) and every other process then fails (a collective in flight
raises at once when the peer's connection closes; the service terminates the rest when it polls
the error), so a job with a killed rank fails within about 10-20 s instead of hanging.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from diffcore.distributed import LOCAL, env_int

__all__ = ["JaxWorld", "init_world", "ProcessFailure", "is_runtime_failure", "HEARTBEAT_TIMEOUT", "SHUTDOWN_TIMEOUT", "INITIALIZATION_TIMEOUT"]

#: seconds without heartbeats after which jax.distributed declares a process dead (JAX: 100)
HEARTBEAT_TIMEOUT = 10
#: seconds a finishing process waits for the others at shutdown (JAX: 300)
SHUTDOWN_TIMEOUT = 20
#: seconds the processes have to find the coordinator at start (JAX: 300)
INITIALIZATION_TIMEOUT = 120


#: XLA status codes that start the message of a failed execution (a collective whose peer died)
_STATUS = ("UNKNOWN:", "UNAVAILABLE:", "INTERNAL:", "ABORTED:", "DEADLINE_EXCEEDED:", "CANCELLED:",
           "FAILED_PRECONDITION:", "DATA_LOSS:")


class ProcessFailure(RuntimeError):
    """A collective of a ``jax.distributed`` job failed: another process died or is unreachable."""


def is_runtime_failure(err: BaseException) -> bool:
    """Whether ``err`` is a failed execution (XLA status error), not a mistake found while tracing."""
    import jax

    return isinstance(err, jax.errors.JaxRuntimeError) or (
        isinstance(err, ValueError) and str(err).lstrip().startswith(_STATUS)
    )


def failure(rank: int, size: int, what: str, err: BaseException) -> ProcessFailure:
    """The error a process raises when ``what`` failed in a job of ``size`` processes."""
    return ProcessFailure(
        f"jax.distributed job: {what} failed on process {rank} of {size}; another process has probably died "
        f"or become unreachable (the job cannot continue; resume from the last checkpoint). Cause: "
        f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    )


class JaxWorld:
    """This process in a ``jax.distributed`` job: rank ``jax.process_index()`` of
    ``jax.process_count()``; host collectives through ``jax.experimental.multihost_utils``."""

    def __init__(self) -> None:
        import jax

        self.rank = int(jax.process_index())
        self.size = int(jax.process_count())
        self._barriers = 0

    def all_gather(self, x: np.ndarray) -> np.ndarray:
        """Every rank's ``x`` (equal shapes) concatenated along axis 0 in rank order, on every rank."""
        from jax.experimental import multihost_utils

        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("all_gather needs an array with a leading axis to concatenate; got a scalar")
        try:
            out = multihost_utils.process_allgather(x, tiled=False)  # (size,) + x.shape, rank order
        except Exception as err:
            if is_runtime_failure(err):
                raise failure(self.rank, self.size, "all_gather", err) from err
            raise
        return np.asarray(out).reshape((self.size * x.shape[0],) + x.shape[1:])

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank passed True."""
        return bool(self.all_gather(np.array([bool(flag)], dtype=np.int32)).any())

    def barrier(self) -> None:
        """Wait for every rank (``multihost_utils.sync_global_devices``)."""
        from jax.experimental import multihost_utils

        self._barriers += 1
        try:
            multihost_utils.sync_global_devices(f"diffcore-barrier-{self._barriers}")
        except Exception as err:
            if is_runtime_failure(err):
                raise failure(self.rank, self.size, "barrier", err) from err
            raise

    def __repr__(self) -> str:
        return f"JaxWorld(rank={self.rank}, size={self.size})"


def _launcher_env() -> bool:
    """Whether the environment describes a multi-process job JAX can join by itself."""
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        try:
            if int(env.get(name, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


def init_world(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Any = None,
    heartbeat_timeout: int = HEARTBEAT_TIMEOUT,
    shutdown_timeout: int = SHUTDOWN_TIMEOUT,
    initialization_timeout: int = INITIALIZATION_TIMEOUT,
) -> Any:
    """Join (or start) the ``jax.distributed`` job and return its :class:`JaxWorld`; ``LOCAL``
    for one process.

    ``jax.distributed.initialize`` is called when ``coordinator`` ("host:port" of process 0) is
    given or the environment names a job (``JAX_COORDINATOR_ADDRESS``, SLURM with several tasks,
    Open MPI); other arguments left None are found by JAX from that environment. Already
    initialised: the running job's world. ``heartbeat_timeout`` (s): a process silent that long
    is dead and the job fails; ``shutdown_timeout`` (s): how long a finishing process waits for
    the others; ``initialization_timeout`` (s): how long to wait for every process to connect.
    Call it before anything else touches JAX's devices.
    """
    import jax

    # JAX reads the coordinator's address from JAX_COORDINATOR_ADDRESS but not the process count or
    # this process's id: a launcher that sets all three (docs/distributed_jax.md) is read here
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        num_processes = env_int("JAX_NUM_PROCESSES") if num_processes is None else num_processes
        process_id = env_int("JAX_PROCESS_ID") if process_id is None else process_id
    for name, value in (("heartbeat_timeout", heartbeat_timeout), ("shutdown_timeout", shutdown_timeout),
                        ("initialization_timeout", initialization_timeout)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive whole number of seconds; got {value!r}")
    if num_processes is not None and (isinstance(num_processes, bool) or not isinstance(num_processes, int)
                                      or num_processes < 1):
        raise ValueError(f"num_processes must be a positive integer or None; got {num_processes!r}")
    if process_id is not None:
        if isinstance(process_id, bool) or not isinstance(process_id, int) or process_id < 0:
            raise ValueError(f"process_id must be a non-negative integer or None; got {process_id!r}")
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(f"process_id = {process_id} must be < num_processes = {num_processes}")
    if jax.distributed.is_initialized():
        return JaxWorld() if jax.process_count() > 1 else LOCAL
    if coordinator is None and not _launcher_env():
        if num_processes not in (None, 1):
            raise ValueError(
                f"num_processes = {num_processes} needs coordinator='host:port' (process 0's address) or a "
                "launcher's environment (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI)"
            )
        return LOCAL
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
        local_device_ids=local_device_ids, initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout, shutdown_timeout_seconds=shutdown_timeout,
    )
    return JaxWorld() if jax.process_count() > 1 else LOCAL
