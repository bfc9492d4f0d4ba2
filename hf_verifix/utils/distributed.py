"""Running the same code in one process or many: exact data shards, and one collective per pass.

Every pass over data (selection scoring, statistics, evaluation) visits only this process's exact shard of the
samples (``indices[rank::world_size]``, no padding or duplicates), accumulates locally with no collective inside the
loop, and combines once at the end. In a single process every function here is a no-op, so the code path is the same.

Under ``accelerate launch`` or ``torchrun`` the process group is created on first use (through
``accelerate.PartialState``) when the launcher's ``WORLD_SIZE`` says there are several processes.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "broadcast_from_main",
    "is_main_process",
    "max_across_processes",
    "process_rank_and_count",
    "shard",
    "sum_across_processes",
]


def _launched_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def process_rank_and_count() -> tuple[int, int]:
    """Return ``(rank, world_size)``: ``(0, 1)`` in a plain single process.

    Under a launcher that started several processes, the process group is initialised on first call (with
    ``accelerate.PartialState``, on CPU when no GPU is present), so ranks never each believe they are alone.

    Example:
        >>> process_rank_and_count()
        (0, 1)
    """
    if dist.is_available() and not dist.is_initialized() and _launched_world_size() > 1:
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Return True on rank 0 (and in a single process): the one that writes files and shows progress bars.

    Example:
        >>> is_main_process()
        True
    """
    return process_rank_and_count()[0] == 0


def shard(indices: torch.Tensor) -> torch.Tensor:
    """Return this process's exact share of ``indices``: every ``world_size``-th one from its rank.

    Example:
        >>> shard(torch.arange(5)).tolist()  # a single process keeps everything
        [0, 1, 2, 3, 4]
    """
    rank, world = process_rank_and_count()
    return indices[rank::world] if world > 1 else indices


def _collective_device(tensor: torch.Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def sum_across_processes(tensor: torch.Tensor) -> torch.Tensor:
    """Return the element-wise sum of ``tensor`` over all processes (``tensor`` itself in a single process).

    Per-sample results are gathered this way: each process fills its own samples' entries of a zero tensor.

    Example:
        >>> sum_across_processes(torch.tensor([1.0, 2.0])).tolist()
        [1.0, 2.0]
    """
    if process_rank_and_count()[1] == 1:
        return tensor
    device = _collective_device(tensor)
    buffer = tensor.to(device).contiguous()
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(tensor.device)


def max_across_processes(value: int) -> int:
    """Return the largest of ``value`` over all processes.

    Example:
        >>> max_across_processes(3)
        3
    """
    if process_rank_and_count()[1] == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.long)
    device = _collective_device(tensor)
    buffer = tensor.to(device)
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX)
    return int(buffer.item())


def broadcast_from_main(tensor: torch.Tensor) -> torch.Tensor:
    """Return rank 0's ``tensor`` on every process (so work done once on the main process is shared exactly).

    Example:
        >>> broadcast_from_main(torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    if process_rank_and_count()[1] == 1:
        return tensor
    device = _collective_device(tensor)
    buffer = tensor.to(device).contiguous()
    dist.broadcast(buffer, src=0)
    return buffer.to(tensor.device)
