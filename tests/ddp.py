"""Helpers of the multi-process (torch.distributed, gloo) tests: a worker's environment, a free
port, and networks without dropout so that one process and two can be compared weight for weight."""

from __future__ import annotations

import os
import socket
from typing import Any

import torch
from torch import nn

import skdlib.models

_real_build_model = skdlib.models.build_model


def build_without_dropout(*args: Any, **kwargs: Any) -> nn.Module:
    """``skdlib.models.build_model`` with every dropout probability set to 0."""
    model = _real_build_model(*args, **kwargs)
    for module in model.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout2d)):
            module.p = 0.0
    return model


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def become_worker(rank: int, world_size: int, port: int) -> None:
    """Inside a spawned process: the torchrun environment variables, one torch thread, no
    dropout."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    skdlib.models.build_model = build_without_dropout
