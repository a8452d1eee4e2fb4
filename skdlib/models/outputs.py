"""The named output every segmentation network in skdlib returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SegmentationOutput:
    """What a segmentation network's ``forward`` returns.

    Attributes:
        logits: class scores ``(N, K, H/s, W/s)``, ``s`` the model's ``output_stride``.
        aux_logits: scores of the auxiliary (deep-supervision) head, same shape as ``logits``,
            or ``None`` for models without one (and in ``eval()`` mode where a model skips it).
        features: named feature maps ``(N, C, h, w)``. Every model provides at least
            ``"head"`` (the map right before the classifier; in the paper the pair-wise term runs
            on it) and ``"backbone"`` (the last backbone stage). Distillation terms pick maps by
            name, never by position.
    """

    logits: torch.Tensor
    aux_logits: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
