"""Distributed data parallel helpers: the process group from torchrun's environment, and collectives.

``torchrun --nproc_per_node=N -m hhcl train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them. Every helper is a no-op
(returns its input) in a single process, so the trainer calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hhcl.errors import HHCLError


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group described by torchrun's environment (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not dist.is_available():
        raise HHCLError("WORLD_SIZE > 1 but this torch build has no torch.distributed: run a single process")
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0, in rank order, the tensors of every rank.

    The number of rows may differ between ranks (a batch that lost a broken image); the other
    dimensions must agree.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    world_size = dist.get_world_size()
    count = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    counts = [torch.empty_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)], dim=0)


def all_gather_sharded_rows(shard: torch.Tensor, total: int) -> torch.Tensor:
    """Reassemble rows that were split round-robin (rank r holds rows r, r+W, r+2W, ...).

    Args:
        shard: ``(ceil((total - rank) / W), ...)`` the rows of this rank.
        total: the number of rows of the whole tensor.

    Returns:
        ``(total, ...)`` on every rank.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return shard
    world_size = dist.get_world_size()
    longest = -(-total // world_size)
    padded = torch.zeros((longest, *shard.shape[1:]), dtype=shard.dtype, device=shard.device)
    padded[: len(shard)] = shard
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return interleave_shards(parts, total)


def interleave_shards(parts: list[torch.Tensor], total: int) -> torch.Tensor:
    """Undo a round-robin split: ``parts[r]`` holds rows r, r+W, ... (padded to one length).

    ``W`` tensors ``(L, ...)`` -> ``(total, ...)``, row ``i`` taken from ``parts[i % W][i // W]``.
    """
    longest = parts[0].shape[0]
    interleaved = torch.stack(parts, dim=1).reshape(longest * len(parts), *parts[0].shape[1:])
    return interleaved[:total]


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Copy ``tensor`` from rank ``src`` to every rank (in place, shape and dtype must agree)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(tensor, src=src)
    return tensor


def broadcast_object(value: Any, src: int = 0) -> Any:
    """A picklable Python value from rank ``src`` to every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's value, in rank order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def mean_over_ranks(value: float, device: torch.device | str = "cpu") -> float:
    """The mean of a number over every rank (the number itself in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item()) / dist.get_world_size()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every buffer (BatchNorm running statistics) of ``module`` from rank ``src``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
