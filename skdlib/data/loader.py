"""DataLoader settings that work on a 2-core laptop and on a many-core GPU machine."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

logger = logging.getLogger(__name__)


def default_num_workers() -> int:
    """``min(4, cpu count - 1)`` worker processes, or 0 (load in the main process) on 1-2 cores."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(4, cpus - 1)


def collate_items(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into ``{"image": (N, 3, H, W), "label": (N, H, W), "name": [str]}``.

    Extra keys are kept as lists. Items of different sizes raise ``ValueError`` (augment them per
    item with :class:`skdlib.data.transforms.ItemAugment`, or use ``batch_size=1``).
    """
    if not items:
        raise ValueError("cannot collate an empty list of items")
    sizes = {tuple(item["image"].shape) for item in items}
    if len(sizes) > 1:
        names = [item.get("name") for item in items]
        raise ValueError(
            f"items of one batch must share one image size, got {sorted(sizes)} for {names}; crop "
            "them per item (skdlib.data.transforms.ItemAugment as the data set's transform) or use "
            "batch_size=1"
        )
    batch: dict[str, Any] = {
        "image": torch.stack([item["image"] for item in items]),  # N x (3, H, W) -> (N, 3, H, W)
        "label": torch.stack([item["label"] for item in items]),  # N x (H, W) -> (N, H, W)
        "name": [item["name"] for item in items],
    }
    for key in items[0]:
        if key not in batch:
            batch[key] = [item[key] for item in items]
    return batch


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from the seed torch gave it (itself derived from the
    loader's)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int | None = None,
    drop_last: bool = False,
    device: str | torch.device | None = None,
) -> DataLoader:
    """A DataLoader with deterministic shuffling from ``seed`` and seeded workers.

    Args:
        dataset: any map-style data set of item dicts.
        batch_size: items per batch.
        shuffle: reshuffle every epoch (the order is fixed by ``seed``).
        seed: seeds the shuffling and the workers.
        num_workers: worker processes; ``None`` -> :func:`default_num_workers`.
        drop_last: drop the last incomplete batch.
        device: where batches go; memory is pinned only when CUDA is available and the device is
            CUDA (or unspecified).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("dataset is empty")
    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    target = torch.device(device) if device is not None else None
    pin = torch.cuda.is_available() and (target is None or target.type == "cuda")
    generator = torch.Generator().manual_seed(seed)
    logger.debug("loader: batch %d, workers %d, pin_memory %s", batch_size, workers, pin)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_items,
        pin_memory=pin,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=generator,
    )
