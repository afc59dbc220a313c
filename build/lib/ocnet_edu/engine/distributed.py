"""One process or many: the only module that knows ranks.

Launch with ``torchrun --nproc_per_node=K -m ocnet_edu train ...``; torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables, and :func:`setup` reads them. The
backend is NCCL when CUDA is available and gloo on the CPU (which is how the tests run two
processes on a machine without GPUs). Without those variables everything runs in one process.

Every other module asks here: :func:`rank`, :func:`world_size`, :func:`is_main` and
:func:`shard` (this process's share of a dataset), and sums, averages or gathers across
processes with :func:`all_reduce_sum`, :func:`all_reduce_mean` and :func:`all_gather_object`,
all of which are no-ops in a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistributedContext",
    "all_gather_object",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "is_main",
    "rank",
    "setup",
    "shard",
    "world_size",
]


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


def setup(device: str = "auto") -> DistributedContext:
    """Initialise the process group if launched by torchrun, and pick this process's device.

    Args:
        device: ``"auto"`` (CUDA if present, else CPU), ``"cpu"`` or ``"cuda"``.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but CUDA is not available")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world_size() > 1 and not _initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistributedContext(rank(), world_size(), local_rank, torch_device)


def cleanup() -> None:
    """Tear the process group down (a no-op in a single process)."""
    if _initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if _initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, group: object | None = None) -> None:
    """Replace ``tensor`` in place by its sum over the processes of ``group`` (default: all)."""
    if _initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all processes (a copy; the input is left alone)."""
    value = value.detach().clone()
    if _initialized():
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not _initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
