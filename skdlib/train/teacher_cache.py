"""The teacher's outputs kept per augmented image and reused when that image comes again.

The teacher is fixed and runs in eval mode, so its outputs for one augmented image never change.
With whole-image crops and no random scaling (``data.scale_range: [1, 1]``) an image has
finitely many augmented versions (flipped or not, and the crop offsets when the crop is smaller
than the image), and a run of many epochs meets each of them again and again: the cache runs the
teacher once per distinct (stream, data-set index, augmentation) and reads the kept outputs after.
It keeps what the terms read (the logits; the ``distill.pair_feature`` map when a term reads
features), on the device the teacher runs on.

Each missing image is computed alone (a batch of one), so its kept outputs are a function of the
image only: a run resumed from a checkpoint (its cache empty again) equals an uninterrupted one.
They equal the plain batched forward's up to floating-point rounding (a batch of one and a batch
of eight may take other summation orders).

With a ``store`` (the teacher-output store's reader, :mod:`skdlib.train.teacher_store`: the same
values computed the same way, once for every run), an image the store holds is read from it
each time it comes (nothing kept in memory), and only the others are computed and kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import nn

from skdlib.models.outputs import SegmentationOutput

__all__ = ["TeacherCache", "augmentation_key"]

logger = logging.getLogger(__name__)

#: What a store gives for one image: ``(logits (K, h, w), feature (C, h, w) or None)``.
Stored = tuple[torch.Tensor, torch.Tensor | None]


def augmentation_key(stream: str, index: int, params: dict[str, Any]) -> tuple[Hashable, ...]:
    """The identity of one augmented image: its stream, data-set index and augmentation."""
    return (
        stream,
        int(index),
        tuple(params["size"]),
        params["top"],
        params["left"],
        params["flip"],
    )


class TeacherCache:
    """The teacher's outputs per augmented image (a run's state: one cache per run).

    Args:
        teacher: the fixed teacher (eval mode).
        forward: ``forward(teacher, image)``: the step's teacher forward (no gradient, the step's
            autocast), returning a ``SegmentationOutput``.
        feature: the feature map to keep (``distill.pair_feature``), or ``None`` for logits only.
        store: ``store(key)``: the stored ``(logits (K, h, w), feature (C, h, w) or None)`` of
            an image, or ``None`` when it holds none (then it is computed).

    Counters: ``misses`` (computed), ``reads`` (read from the store), ``hits`` (kept ones
    reused).
    """

    def __init__(
        self,
        teacher: nn.Module,
        forward: Any,
        *,
        feature: str | None,
        store: Callable[[Hashable], Stored | None] | None = None,
    ) -> None:
        self.teacher, self.forward, self.feature = teacher, forward, feature
        self.store = store
        self._logits: dict[Hashable, torch.Tensor] = {}
        self._features: dict[Hashable, torch.Tensor] = {}
        self.hits = self.misses = self.reads = 0

    def __len__(self) -> int:
        return len(self._logits)

    def __call__(self, image: torch.Tensor, keys: Sequence[Hashable]) -> SegmentationOutput:
        """The teacher's outputs for ``image`` ``(N, 3, H, W)``, one key per image."""
        if len(keys) != image.shape[0]:
            raise ValueError(f"keys: {len(keys)} for a batch of {image.shape[0]} images")
        first: dict[Hashable, int] = {}
        stored: dict[Hashable, Stored] = {}
        for i, key in enumerate(keys):
            if key in self._logits or key in first or key in stored:
                continue
            found = self.store(key) if self.store is not None else None
            if found is not None:
                stored[key] = found
            else:
                first[key] = i
        for key, row in first.items():
            out = self.forward(self.teacher, image[row : row + 1])  # (1, 3, H, W): one image alone
            self._logits[key] = out.logits[0].detach()  # (1, K, h, w) -> (K, h, w)
            if self.feature is not None:
                self._features[key] = out.features[self.feature][0].detach()  # (C, h, w)
        self.misses += len(first)
        self.reads += sum(1 for k in keys if k in stored)
        self.hits += sum(1 for k in keys if k not in stored) - len(first)
        logits = torch.stack(
            [stored[k][0] if k in stored else self._logits[k] for k in keys]
        )  # N x (K, h, w) -> (N, K, h, w)
        features = {}
        if self.feature is not None:
            features[self.feature] = torch.stack(
                [stored[k][1] if k in stored else self._features[k] for k in keys]
            )  # N x (C, h, w) -> (N, C, h, w)
        return SegmentationOutput(logits=logits, aux_logits=None, features=features)
