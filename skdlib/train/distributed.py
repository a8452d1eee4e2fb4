"""Distributed data parallel helpers (``torchrun``): process group, rank info, gradient averaging.

Conventions of the library:

* ``data.batch_size`` is **per process**; the global batch is ``batch_size * world_size``. The
  sample order is global (see :func:`skdlib.train.sampling.batch_indices`): process ``r`` takes the
  ``r``-th slice of each global batch, so a 2-process run with batch 2 sees exactly the images of
  a 1-process run with batch 4.
* The student is wrapped in ``DistributedDataParallel`` after synchronised-BatchNorm conversion,
  so batch statistics are those of the global batch: ``nn.SyncBatchNorm`` on CUDA, and on CPU
  (where ``nn.SyncBatchNorm`` refuses to run) :class:`CpuSyncBatchNorm`, which sums the
  per-channel moments with the differentiable ``torch.distributed.nn.functional.all_reduce``.
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
from torch import nn

__all__ = [
    "AllReduceOptimizer",
    "CpuSyncBatchNorm",
    "DistInfo",
    "cleanup",
    "convert_sync_batchnorm",
    "dist_info",
    "init_distributed",
]


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
    """Rank, world size and local rank from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(info: DistInfo, device: torch.device) -> bool:
    """Initialise the default process group when ``info.world_size > 1`` (nccl on CUDA, gloo
    otherwise).

    Returns ``True`` when this call created the group (the caller then destroys it with
    :func:`cleanup`).
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
    """Wraps an optimiser: before ``step`` the gradients of ``params`` are averaged across
    processes.

    Everything else (``zero_grad``, ``param_groups``, ``state_dict``, ...) is the wrapped
    optimiser's.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter]
    ) -> None:
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


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch across all processes (CPU/gloo).

    Forward in training mode with a process group of more than one process: per-channel sums of
    ``x`` (with the local pixel count), then of the centred squares, are summed across processes
    with the differentiable all-reduce, so the gradient also flows through the other processes'
    share of the statistics (as ``nn.SyncBatchNorm`` does). Otherwise it is a plain ``BatchNorm2d``.
    Running statistics use the unbiased variance of the global batch, as ``BatchNorm2d`` does.
    """

    #: Process group of the statistics; :func:`convert_sync_batchnorm` gives every layer one group
    #: of its own, apart from the one DDP averages gradients in (sharing it mixed up the order of
    #: the gloo collectives from the second iteration on).
    process_group: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        if x.ndim != 4:
            raise ValueError(f"CpuSyncBatchNorm expects (N, C, H, W), got shape {tuple(x.shape)}")
        channels = x.shape[1]
        group = self.process_group or dist.group.WORLD
        # Two passes (mean, then centred squares): E[x^2] - E[x]^2 loses the variance of nearly
        # constant channels (e.g. the 1x1 pyramid bin) to float32 cancellation.
        first = torch.cat(
            [
                x.sum(dim=(0, 2, 3)),  # (N, C, H, W) -> (C,)
                x.new_tensor([x.numel() / channels]),  # (1,) pixels per channel here
            ]
        )  # (C + 1,)
        first = all_reduce(first, group=group)  # (C + 1,) summed over processes, differentiable
        count = first[-1]
        mean = first[:channels] / count  # (C,)
        centred = x - mean.view(1, -1, 1, 1)  # (C,) -> (1, C, 1, 1)
        square_sum = all_reduce(
            (centred * centred).sum(dim=(0, 2, 3)), group=group
        )  # (N, C, H, W) -> (C,)
        var = square_sum / count  # (C,) biased
        if (
            self.track_running_stats
            and self.running_mean is not None
            and self.running_var is not None
        ):
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (count / (count - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                self.running_var.mul_(1 - factor).add_(factor * unbiased.detach())
        scale = torch.rsqrt(var + self.eps)  # (C,)
        y = centred * scale.view(1, -1, 1, 1)  # (C,) -> (1, C, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(
                1, -1, 1, 1
            )  # (C,) -> (1, C, 1, 1)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Synchronised BatchNorm for a DDP student: ``nn.SyncBatchNorm`` on CUDA,
    :class:`CpuSyncBatchNorm` otherwise."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    group = (
        dist.new_group(backend="gloo") if dist.is_available() and dist.is_initialized() else None
    )
    return _to_cpu_sync(module, group)


def _to_cpu_sync(module: nn.Module, group: Any) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        sync = CpuSyncBatchNorm(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        # The same Parameter and buffer objects: an optimiser built before the conversion keeps
        # working.
        if module.affine:
            sync.weight, sync.bias = module.weight, module.bias
        sync.running_mean, sync.running_var = module.running_mean, module.running_var
        sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        sync.process_group = group
        return sync
    for name, child in module.named_children():
        setattr(module, name, _to_cpu_sync(child, group))
    return module
