"""DeepLabV3 (Chen et al., 2017): atrous spatial pyramid pooling on a dilated ResNet.

Head layout (per backbone output with ``C`` channels, ``channels`` = 512 at width 1.0):

* ASPP, five branches on the same map, each ending in BN and ReLU: a 1x1 convolution, three
  3x3 convolutions dilated by ``rates`` (12, 24, 36: DeepLabV3's 6, 12, 18 at output stride 16,
  doubled at output stride 8), and image pooling (global average, 1x1 convolution, upsampled back);
  concatenated (``5 * channels``), projected by a 1x1 convolution with BN and ReLU, dropout 0.5;
* a 3x3 convolution with BN and ReLU: the map the pair-wise term reads (``features["head"]``);
* dropout 0.1 and a 1x1 classifier.

This is CIRKD's DeepLabV3 (``models/deeplabv3.py``), the teacher of their released
``deeplabv3_resnet101_citys_best_model.pth``; its auxiliary head is
:class:`skdlib.models.psp.AuxHead` on ``layer3`` (CIRKD's ``_FCNHead``: a 3x3 convolution to a
quarter of the channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from skdlib.models.outputs import SegmentationOutput
from skdlib.models.psp import (
    HEAD_DROPOUT,
    SKDLIB_STYLE,
    AuxHead,
    HeadStyle,
    check_image,
    conv_bn_act,
    init_head_weights,
)

__all__ = ["ASPP", "ASPP_RATES", "DeepLabHead", "DeepLabV3"]

#: Dilation rates of the three 3x3 ASPP branches at output stride 8.
ASPP_RATES: tuple[int, int, int] = (12, 24, 36)
#: Dropout after the ASPP projection (DeepLabV3, CIRKD).
ASPP_DROPOUT = 0.5


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: ``branches`` (1x1 and the dilated 3x3 convolutions),
    ``pooling`` (image pooling) and ``project``. Output ``(N, channels, h, w)``."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        rates: Sequence[int] = ASPP_RATES,
        style: HeadStyle = SKDLIB_STYLE,
    ) -> None:
        super().__init__()
        if in_channels < 1 or channels < 1 or any(r < 1 for r in rates):
            raise ValueError(
                f"invalid ASPP: in_channels={in_channels}, channels={channels}, rates={rates!r}"
            )
        act = style.activation
        self.style = style
        self.branches = nn.ModuleList(
            [conv_bn_act(in_channels, channels, 1, activation=act)]
            + [conv_bn_act(in_channels, channels, 3, activation=act, dilation=r) for r in rates]
        )
        self.pooling = conv_bn_act(in_channels, channels, 1, activation=act)
        self.project = nn.Sequential(
            *conv_bn_act(channels * (len(rates) + 2), channels, 1, activation=act),
            nn.Dropout(ASPP_DROPOUT),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooling(F.adaptive_avg_pool2d(x, 1))  # (N, C, h, w) -> (N, channels, 1, 1)
        image = F.interpolate(  # (N, channels, h, w)
            pooled, size=x.shape[-2:], mode="bilinear", align_corners=self.style.align_corners
        )
        maps = [branch(x) for branch in self.branches] + [image]  # each (N, channels, h, w)
        return self.project(torch.cat(maps, dim=1))  # (N, 5 * channels, h, w) -> (N, channels, ..)


class DeepLabHead(nn.Module):
    """ASPP, a 3x3 convolution (the ``"head"`` feature), dropout, 1x1 classifier."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int,
        rates: Sequence[int] = ASPP_RATES,
        dropout: float = HEAD_DROPOUT,
        style: HeadStyle = SKDLIB_STYLE,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, channels, rates=rates, style=style)
        self.bottleneck = conv_bn_act(channels, channels, 3, activation=style.activation)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits, head_feature)``."""
        feature = self.bottleneck(self.aspp(x))  # (N, channels, h, w)
        return self.classifier(self.dropout(feature)), feature


class DeepLabV3(nn.Module):
    """A dilated backbone (output stride 8) + :class:`DeepLabHead` + optional auxiliary head.

    The backbone contract and the outputs are those of :class:`skdlib.models.psp.PSPNet`:
    ``logits`` ``(N, K, h, w)``, ``aux_logits`` in training mode, ``features`` with every backbone
    stage, ``"backbone"`` and ``"head"`` (the 3x3 convolution after ASPP).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        head_input: str,
        channels: int,
        rates: Sequence[int] = ASPP_RATES,
        aux_input: str | None = None,
        aux_channels: int = 256,
        style: HeadStyle = SKDLIB_STYLE,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        stage_channels: dict[str, int] = dict(backbone.channels)
        if head_input not in stage_channels or (
            aux_input is not None and aux_input not in stage_channels
        ):
            raise ValueError(
                f"head_input={head_input!r} / aux_input={aux_input!r} must be among "
                f"{sorted(stage_channels)}"
            )
        self.backbone = backbone
        self.head_input = head_input
        self.aux_input = aux_input
        self.head = DeepLabHead(
            stage_channels[head_input], num_classes, channels=channels, rates=rates, style=style
        )
        self.aux_head = (
            AuxHead(stage_channels[aux_input], num_classes, channels=aux_channels, style=style)
            if aux_input is not None
            else None
        )
        self.align_corners: bool = style.align_corners
        self.num_classes = num_classes
        self.output_stride: int = 8
        self.min_input_size: int = 8
        self.feature_channels: dict[str, int] = {
            **stage_channels,
            "backbone": stage_channels[head_input],
            "head": channels,
        }
        for module in (self.head, self.aux_head):
            if module is not None:
                init_head_weights(module)

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        check_image(
            image, min_size=self.min_input_size, training=self.training, needs_batch_stats=True
        )
        stages: dict[str, torch.Tensor] = self.backbone(image)
        logits, head = self.head(stages[self.head_input])  # (N, K, h, w), (N, channels, h, w)
        aux_logits = None
        if self.training and self.aux_head is not None and self.aux_input is not None:
            aux_logits = self.aux_head(stages[self.aux_input])  # (N, K, h, w)
        features = {**stages, "backbone": stages[self.head_input], "head": head}
        return SegmentationOutput(logits=logits, aux_logits=aux_logits, features=features)
