"""Distributed data parallel helpers (``torchrun``): process group, rank info, gradient averaging.

Conventions of the library:

* ``data.batch_size`` is **per process**; the global batch is ``batch_size * world_size``. The
  sample order is global (see :func:`skdlib.train.loop.batch_indices`): process ``r`` takes the
  ``r``-th slice of each global batch, so a 2-process run with batch 2 sees exactly the images of
  a 1-process run with batch 4.
* The student is wrapped in ``DistributedDataParallel`` after ``SyncBatchNorm`` conversion, so
  batch statistics are those of the global batch.
* The critic (holistic term) is not wrapped: its step takes a double-backward gradient penalty,
  which DDP's hooks do not support. Its gradients are averaged across processes by
  :class:`AllReduceOptimizer` right before each optimiser step (same result as DDP for plain
  parameters; a BatchNorm on the critic's input keeps per-process statistics).
* Only rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["AllReduceOptimizer", "DistInfo", "cleanup", "dist_info", "init_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ValueError(f"environment variable {name} must be an int, got {raw!r}") from error


def dist_info() -> DistInfo:
    """Rank, world size and local rank from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(info: DistInfo, device: torch.device) -> bool:
    """Initialise the default process group when ``info.world_size > 1`` (nccl on CUDA, gloo otherwise).

    Returns ``True`` when this call created the group (the caller then destroys it with :func:`cleanup`).
    """
    if not info.enabled or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return True


def cleanup(created: bool) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if created and dist.is_initialized():
        dist.destroy_process_group()


class AllReduceOptimizer:
    """Wraps an optimiser: before ``step`` the gradients of ``params`` are averaged across processes.

    Everything else (``zero_grad``, ``param_groups``, ``state_dict``, ...) is the wrapped optimiser's.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter]) -> None:
        self.optimizer = optimizer
        self.params = list(params)

    def step(self, closure: Any = None) -> Any:
        if dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad.div_(world)
        return self.optimizer.step(closure)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)
