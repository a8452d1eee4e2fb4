"""Pyramid pooling head, auxiliary head and the PSPNet segmentation network (Zhao et al., 2017).

Head layout (per backbone output with ``C`` channels):

* pyramid pooling, bins 1, 2, 3, 6: adaptive average pooling to ``b x b``, 1x1 conv to
  ``reduction`` (``C/4`` by default), BN, ReLU, bilinear upsampling back to the map's size;
  the input map and the four branches are concatenated (``C + 4 * reduction`` channels);
* 3x3 bottleneck conv to ``bottleneck`` channels, BN, ReLU: this is the map the paper's pair-wise
  term uses (``features["head"]``);
* dropout 0.1 and a 1x1 classifier.

Auxiliary head (deep supervision, on ``layer3``): 3x3 conv to ``aux_channels``, BN, ReLU,
dropout 0.1, 1x1 classifier. It runs in training mode only.

A :class:`HeadStyle` changes what released networks do differently, with the same modules and
parameter shapes: the authors' (:data:`AUTHORS_STYLE`: leaky ReLU of slope 0.01 after every batch
norm of the heads, as their InPlace-ABN; upsampling with ``align_corners=True``; the pooled bins
concatenated before the input map; a bias on the auxiliary head's 3x3 convolution) and CIRKD's
(:data:`CIRKD_STYLE`: ``align_corners=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from skdlib.models.outputs import SegmentationOutput

__all__ = [
    "AUTHORS_STYLE",
    "CIRKD_STYLE",
    "SKDLIB_STYLE",
    "AuxHead",
    "HeadStyle",
    "PSPHead",
    "PSPNet",
    "PyramidPooling",
    "check_image",
    "conv_bn_act",
    "init_head_weights",
]

PSP_BINS: tuple[int, ...] = (1, 2, 3, 6)
HEAD_DROPOUT = 0.1
#: Negative slope of the leaky ReLU in the authors' heads (InPlace-ABN's default activation).
LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class HeadStyle:
    """How a head computes, at equal modules and parameter shapes.

    Attributes:
        activation: after each batch norm of the heads: ``"relu"`` or ``"leaky_relu"``
            (slope :data:`LEAKY_SLOPE`).
        align_corners: of every bilinear upsampling in the network (and of the logits to the
            label's size in :mod:`skdlib.evaluate`).
        pooled_first: concatenate the pyramid's pooled bins before the input map (``[bins, x]``)
            instead of after it (``[x, bins]``).
        aux_conv_bias: the auxiliary head's 3x3 convolution has a bias.
    """

    activation: Literal["relu", "leaky_relu"] = "relu"
    align_corners: bool = False
    pooled_first: bool = False
    aux_conv_bias: bool = False


#: The library's own heads (the default).
SKDLIB_STYLE = HeadStyle()
#: The authors' heads (``networks/pspnet_combine.py``: InPlace-ABN with leaky ReLU 0.01).
AUTHORS_STYLE = HeadStyle(
    activation="leaky_relu", align_corners=True, pooled_first=True, aux_conv_bias=True
)
#: CIRKD's heads (``models/pspnet.py``, ``models/deeplabv3.py``).
CIRKD_STYLE = HeadStyle(align_corners=True)


def check_image(
    image: torch.Tensor,
    *,
    in_channels: int = 3,
    min_size: int = 8,
    training: bool = False,
    needs_batch_stats: bool = False,
) -> None:
    """Raise a ``ValueError`` naming the shape when ``image`` cannot go through a network.

    Args:
        image: the network input, expected ``(N, in_channels, H, W)``, floating point.
        in_channels: expected channel count.
        min_size: smallest allowed ``H`` and ``W`` (one output cell at output stride 8).
        training: whether the network is in training mode.
        needs_batch_stats: the network has a BatchNorm after a global (1x1) pooling, which needs
            more than one image per batch in training mode.
    """
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 4:
        raise ValueError(
            f"image must have shape (N, {in_channels}, H, W) (rank 4), got shape "
            f"{tuple(image.shape)}"
        )
    if image.shape[1] != in_channels:
        raise ValueError(
            f"image must have {in_channels} channels (N, {in_channels}, H, W), "
            f"got shape {tuple(image.shape)}"
        )
    if not image.is_floating_point():
        raise ValueError(f"image must be floating point, got dtype {image.dtype}")
    if image.shape[2] < min_size or image.shape[3] < min_size:
        raise ValueError(
            f"image of shape {tuple(image.shape)} is too small: H and W must be at least {min_size}"
        )
    if training and needs_batch_stats and image.shape[0] < 2:
        raise ValueError(
            f"image of shape {tuple(image.shape)}: training mode needs at least 2 images per batch "
            "(BatchNorm after the 1x1 pyramid bin has one value per channel); use eval() or a "
            "larger batch"
        )


def conv_bn_act(
    in_ch: int,
    out_ch: int,
    kernel_size: int,
    *,
    activation: str = "relu",
    bias: bool = False,
    dilation: int = 1,
) -> nn.Sequential:
    """Convolution (padding keeps the size), batch norm, activation: modules ``0``, ``1``, ``2``."""
    act: nn.Module = (
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        if activation == "leaky_relu"
        else nn.ReLU(inplace=True)
    )
    return nn.Sequential(
        nn.Conv2d(
            in_ch,
            out_ch,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            bias=bias,
        ),
        nn.BatchNorm2d(out_ch),
        act,
    )


class PyramidPooling(nn.Module):
    """Pool at several bin counts, reduce with 1x1 conv + BN + ReLU, upsample, concatenate.

    Output channels: ``in_channels + len(bins) * reduction``.
    """

    def __init__(
        self,
        in_channels: int,
        reduction: int,
        *,
        bins: Sequence[int] = PSP_BINS,
        style: HeadStyle = SKDLIB_STYLE,
    ) -> None:
        super().__init__()
        if in_channels < 1 or reduction < 1 or not bins or any(b < 1 for b in bins):
            raise ValueError(
                f"invalid pyramid: in_channels={in_channels}, reduction={reduction}, bins={bins!r}"
            )
        self.bins = tuple(bins)
        self.style = style
        self.stages = nn.ModuleList(
            conv_bn_act(in_channels, reduction, 1, activation=style.activation) for _ in self.bins
        )
        self.out_channels = in_channels + len(self.bins) * reduction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        branches = []
        for bin_count, stage in zip(self.bins, self.stages, strict=True):
            pooled = F.adaptive_avg_pool2d(x, bin_count)  # (N, C, b, b)
            reduced = stage(pooled)  # (N, reduction, b, b)
            branches.append(  # (N, reduction, h, w)
                F.interpolate(
                    reduced, size=size, mode="bilinear", align_corners=self.style.align_corners
                )
            )
        ordered = [*branches, x] if self.style.pooled_first else [x, *branches]
        return torch.cat(ordered, dim=1)  # (N, C + len(bins) * reduction, h, w)


class PSPHead(nn.Module):
    """Pyramid pooling, 3x3 bottleneck (the ``"head"`` feature), dropout, 1x1 classifier."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        reduction: int,
        bottleneck: int,
        dropout: float = HEAD_DROPOUT,
        style: HeadStyle = SKDLIB_STYLE,
    ) -> None:
        super().__init__()
        self.pyramid = PyramidPooling(in_channels, reduction, style=style)
        self.bottleneck = conv_bn_act(
            self.pyramid.out_channels, bottleneck, 3, activation=style.activation
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(bottleneck, num_classes, kernel_size=1)
        self.out_channels = bottleneck

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits, head_feature)``."""
        feature = self.bottleneck(self.pyramid(x))  # (N, bottleneck, h, w)
        return self.classifier(self.dropout(feature)), feature


class AuxHead(nn.Module):
    """3x3 conv, BN, ReLU, dropout 0.1, 1x1 classifier (deep supervision on ``layer3``)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int,
        dropout: float = HEAD_DROPOUT,
        style: HeadStyle = SKDLIB_STYLE,
    ) -> None:
        super().__init__()
        self.block = conv_bn_act(
            in_channels, channels, 3, activation=style.activation, bias=style.aux_conv_bias
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.block(x)))


class PSPNet(nn.Module):
    """A dilated backbone (output stride 8) + :class:`PSPHead` + optional :class:`AuxHead`.

    The backbone must return a dict of named stages and expose ``channels`` (name -> channels);
    ``head_input`` names the stage the PSP head reads, ``aux_input`` the one the auxiliary head
    reads (``None``: no auxiliary head); ``style`` how the heads compute (:class:`HeadStyle`),
    its ``align_corners`` exposed as the network's attribute of that name.

    ``forward(image)`` returns :class:`SegmentationOutput` with ``logits`` ``(N, K, ceil(H/8),
    ceil(W/8))``, ``aux_logits`` (training mode only, else ``None``) and ``features``: every
    backbone stage by name, ``"backbone"`` (the ``head_input`` stage) and ``"head"`` (the PSP
    module output after its 3x3 bottleneck).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        head_input: str,
        reduction: int,
        bottleneck: int,
        aux_input: str | None = None,
        aux_channels: int = 256,
        style: HeadStyle = SKDLIB_STYLE,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        channels: dict[str, int] = dict(backbone.channels)
        if head_input not in channels or (aux_input is not None and aux_input not in channels):
            raise ValueError(
                f"head_input={head_input!r} / aux_input={aux_input!r} must be among "
                f"{sorted(channels)}"
            )
        self.backbone = backbone
        self.head_input = head_input
        self.aux_input = aux_input
        self.head = PSPHead(
            channels[head_input],
            num_classes,
            reduction=reduction,
            bottleneck=bottleneck,
            style=style,
        )
        self.aux_head = (
            AuxHead(channels[aux_input], num_classes, channels=aux_channels, style=style)
            if aux_input is not None
            else None
        )
        self.align_corners: bool = style.align_corners
        self.num_classes = num_classes
        self.output_stride: int = 8
        self.min_input_size: int = 8
        self.feature_channels: dict[str, int] = {
            **channels,
            "backbone": channels[head_input],
            "head": bottleneck,
        }
        for module in (self.head, self.aux_head):
            if module is not None:
                init_head_weights(module)

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        check_image(
            image, min_size=self.min_input_size, training=self.training, needs_batch_stats=True
        )
        stages: dict[str, torch.Tensor] = self.backbone(image)
        logits, head = self.head(stages[self.head_input])  # (N, K, h, w), (N, bottleneck, h, w)
        aux_logits = None
        if self.training and self.aux_head is not None and self.aux_input is not None:
            aux_logits = self.aux_head(stages[self.aux_input])  # (N, K, h, w)
        features = {**stages, "backbone": stages[self.head_input], "head": head}
        return SegmentationOutput(logits=logits, aux_logits=aux_logits, features=features)


def init_head_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions (zero bias), unit BN scale and zero BN shift."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
