"""One process or many: the only module that knows ranks.

Launch with ``torchrun --nproc_per_node=K -m ocnet_edu train ...``; torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables, and :func:`setup` reads them. The
backend is NCCL when CUDA is available and gloo on the CPU (which is how the tests run two
processes on a machine without GPUs). Without those variables everything runs in one process.

Every other module asks here: :func:`rank`, :func:`world_size`, :func:`is_main` and
:func:`shard` (this process's share of a dataset), and sums, averages or gathers across
processes with :func:`all_reduce_sum`, :func:`all_reduce_mean` and :func:`all_gather_object`,
all of which are no-ops in a single process.

No process waits forever for another: the process group is created with a timeout
(``runtime.dist_timeout``, minutes, :func:`setup`), which every collective and barrier obeys. A
process that freezes (``SIGSTOP``, a hung file system, a dead GPU) makes the others fail after
that time with a :class:`DistributedError` that says which process is reporting, the world size,
the operation and the config key; barriers on gloo use ``monitored_barrier``, which also names
the ranks that did not arrive.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_MINUTES",
    "DistributedContext",
    "DistributedError",
    "all_gather_object",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "explain_failures",
    "is_main",
    "rank",
    "setup",
    "shard",
    "world_size",
]


DEFAULT_TIMEOUT_MINUTES = 30.0
"""How long a process waits for the others unless ``runtime.dist_timeout`` says otherwise."""

_timeout_minutes = DEFAULT_TIMEOUT_MINUTES  # of the current process group (set by setup)

_COMMUNICATION_FAILURE = re.compile(
    r"timed? ?out|timeout|connection (closed|reset)|broken pipe|monitoredBarrier|nccl|gloo", re.IGNORECASE)


class DistributedError(RuntimeError):
    """Another process of the group stopped answering (frozen, killed, or far slower) within
    ``runtime.dist_timeout``; the message names this rank, the world size and the operation."""


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank: the process group's when one is up, else torchrun's ``RANK`` (0 alone)."""
    return dist.get_rank() if _initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """The number of processes: the process group's size, else torchrun's ``WORLD_SIZE`` (1 alone)."""
    return dist.get_world_size() if _initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this is rank 0, the process that writes files and prints."""
    return rank() == 0


def shard(length: int) -> range:
    """This process's share of ``range(length)``: every ``world_size``-th index from its rank."""
    return range(rank(), length, world_size())


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def parallel(self) -> bool:
        """Whether a process group runs (several processes, or one launched by torchrun): then
        training wraps the model in DistributedDataParallel (and SyncBatchNorm on GPUs)."""
        return self.distributed or _initialized()


def setup(device: str = "auto", timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> DistributedContext:
    """Initialise the process group if launched by torchrun, and pick this process's device.

    Args:
        device: ``"auto"`` (CUDA if present, else CPU), ``"cpu"`` or ``"cuda"``.
        timeout_minutes: how long set-up, collectives and barriers wait for the other processes
            (``runtime.dist_timeout``) before raising :class:`DistributedError`.
    """
    global _timeout_minutes
    if not timeout_minutes > 0:
        raise ValueError(f"runtime.dist_timeout must be > 0 minutes, got {timeout_minutes}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but CUDA is not available")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if (world_size() > 1 or _launched_by_torchrun()) and not _initialized():
        _timeout_minutes = float(timeout_minutes)
        with explain_failures("joining the process group"):
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
    torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistributedContext(rank(), world_size(), local_rank, torch_device)


def _launched_by_torchrun() -> bool:
    """Whether torchrun started this process (also with ``--nproc_per_node=1``, which then runs
    the NCCL/gloo, DDP and SyncBatchNorm code paths on one device)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "MASTER_ADDR" in os.environ


def cleanup() -> None:
    """Tear the process group down (a no-op in a single process)."""
    if _initialized():
        dist.destroy_process_group()


def _stopped_answering(operation: str, error: BaseException) -> DistributedError:
    """The :class:`DistributedError` of a failed ``operation``: who reports it, the world size,
    the ranks that did not answer when the backend says (gloo's monitored barrier), the timeout."""
    missing = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", str(error))
    others = [r for r in range(world_size()) if r != rank()]
    if missing:
        who = f"rank(s) {missing.group(1).strip()} stopped answering"
    elif len(others) == 1:
        who = f"rank {others[0]} stopped answering or exited"
    else:
        who = "another process stopped answering or exited"
    return DistributedError(
        f"rank {rank()} of {world_size()}: {operation} failed: {who} (frozen, killed, or slower than "
        f"runtime.dist_timeout = {_timeout_minutes:g} min; raise that key if a step legitimately takes "
        f"longer). {type(error).__name__}: {str(error).strip()[:500]}")


@contextmanager
def explain_failures(operation: str) -> Iterator[None]:
    """Turn a communication failure inside the block (a timeout, a closed connection: a
    ``RuntimeError`` that names one, or any ``torch.distributed`` backend error) into a
    :class:`DistributedError` naming this rank, the world size and ``operation``."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as error:
        backend_error = isinstance(error, getattr(dist, "DistBackendError", ()))
        if world_size() > 1 and (backend_error or _COMMUNICATION_FAILURE.search(str(error))):
            raise _stopped_answering(operation, error) from error
        raise


def barrier() -> None:
    """Wait until every process gets here (a no-op in a single process), at most
    ``runtime.dist_timeout``; on gloo a monitored barrier, whose error names the missing ranks."""
    if not _initialized():
        return
    with explain_failures("a barrier"):
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(minutes=_timeout_minutes), wait_all_ranks=True)
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, group: object | None = None) -> None:
    """Replace ``tensor`` in place by its sum over the processes of ``group`` (default: all)."""
    if _initialized():
        with explain_failures("all_reduce (sum)"):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all processes (a copy; the input is left alone)."""
    value = value.detach().clone()
    if _initialized():
        with explain_failures("all_reduce (mean)"):
            dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not _initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    with explain_failures("all_gather_object"):
        dist.all_gather_object(gathered, obj)
    return gathered
