"""What each iteration sees: sample order, batches and augmentation, as functions of the seed.

Every random number of the data path is a function of ``(seed, iteration)``, so a resumed run
needs only the iteration number:

* sample order: epoch ``e``'s permutation comes from a generator seeded with ``(seed, e)``; the
  global batch of iteration ``i`` takes positions ``[i * G, (i + 1) * G)`` of the concatenated
  epochs (``G = batch_size * world_size``; process ``r`` takes its ``r``-th slice);
* augmentation: each image's parameters come from a generator seeded with
  ``(seed, stream, position)``, so they do not depend on the batch split across processes.

The unlabeled stream uses the same machinery with seeds of its own (see
:mod:`skdlib.train.loop`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from skdlib.data.transforms import TrainAugment

__all__ = [
    "BatchSampler",
    "Indexed",
    "batch_indices",
    "batch_params",
    "batch_positions",
    "collate",
    "derive_seed",
]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python
    versions)."""
    text = "/".join(str(part) for part in parts)
    digest = hashlib.sha256(text.encode("utf-8")).digest()[:8]
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class _EpochOrder:
    """Permutations of ``range(n)`` per epoch, seeded by ``(seed, epoch)``; the latest is cached."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    def __call__(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        return self._perm

    def indices(self, positions: Sequence[int]) -> list[int]:
        """Data-set indices at global sample ``positions`` of the concatenated epochs."""
        return [int(self(p // self.n)[p % self.n]) for p in positions]


def batch_positions(iteration: int, batch_size: int, world_size: int, rank: int) -> list[int]:
    """Global sample positions process ``rank`` takes at ``iteration``."""
    start = (iteration * world_size + rank) * batch_size
    return list(range(start, start + batch_size))


def batch_indices(
    iteration: int,
    *,
    num_items: int,
    batch_size: int,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
) -> list[int]:
    """Data-set indices of process ``rank``'s batch at ``iteration`` (see the module docstring)."""
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    order = _EpochOrder(num_items, seed)
    return order.indices(batch_positions(iteration, batch_size, world_size, rank))


class BatchSampler:
    """Yields the index lists of iterations ``start .. stop - 1`` for one process (a DataLoader
    ``batch_sampler``)."""

    def __init__(
        self,
        num_items: int,
        *,
        start: int,
        stop: int,
        batch_size: int,
        seed: int,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.world_size, self.rank = world_size, rank
        self.order = _EpochOrder(num_items, seed)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for iteration in range(self.start, self.stop):
            positions = batch_positions(iteration, self.batch_size, self.world_size, self.rank)
            yield self.order.indices(positions)


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack data-set items of one size into a batch ``{"image", "label", "name"}``."""
    sizes = {tuple(item["image"].shape) for item in items}
    if len(sizes) != 1:
        raise ValueError(
            f"images of one batch differ in size {sorted(sizes)}; use a data set with one image "
            "size or data.batch_size=1"
        )
    return {
        "image": torch.stack([item["image"] for item in items]),  # B x (3, H, W) -> (B, 3, H, W)
        "label": torch.stack([item["label"] for item in items]),  # B x (H, W) -> (B, H, W)
        "name": [item.get("name", "") for item in items],
        "index": [item.get("index") for item in items],
    }


def batch_params(
    augment: TrainAugment,
    height: int,
    width: int,
    *,
    positions: Sequence[int],
    seed: int,
    stream: str,
) -> list[dict[str, Any]]:
    """The augmentation parameters of a batch of ``height x width`` images, one image per global
    sample position, each drawn from a generator seeded by ``(seed, stream, position)``; apply
    them with ``augment.apply``."""
    params = []
    for position in positions:
        generator = torch.Generator().manual_seed(derive_seed(seed, stream, position))
        params.extend(augment.sample_params(1, height, width, generator))
    return params


class Indexed(torch.utils.data.Dataset):
    """A data set whose items also carry their index (``"index"``), for the teacher cache."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], "index": index}
