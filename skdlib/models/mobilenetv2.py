"""MobileNetV2 (Sandler et al., 2018) dilated to output stride 8, and MobileNetV2Plus.

:class:`MobileNetV2Backbone` keeps torchvision's parameter layout (``features.0`` ..
``features.18``: ``features.N.conv.M...`` inside the inverted residual blocks), so torchvision's
ImageNet checkpoint loads unchanged (its ``classifier.*`` entries are reported as unexpected).

Dilation: the two stages that would bring the stride from 8 to 16 and from 16 to 32 (the 64- and
160-channel stages) run at stride 1; every depth-wise 3x3 convolution from the 64-channel stage on
uses dilation 2, and from the 160-channel stage on dilation 4.

:class:`MobileNetV2Plus` is this backbone with a PSP-style head. The name comes from the
student of the paper (an ImageNet-initialised MobileNetV2 with a light segmentation head, 8.3M
parameters); its exact head is not published with the paper, so this head is the project's
choice: the pyramid pooling of :mod:`skdlib.models.psp` on the 1280-channel last map
(reduction 320 = C/4) and a 3x3 bottleneck of ``MOBILENETV2PLUS_BOTTLENECK`` channels, chosen so
that the parameter count (8.28M at 19 classes) matches the paper's 8.3M. No auxiliary head.
"""

from __future__ import annotations

import torch
from torch import nn

from skdlib.models.outputs import SegmentationOutput
from skdlib.models.psp import PSPHead, check_image, init_head_weights

__all__ = [
    "MOBILENETV2PLUS_BOTTLENECK",
    "InvertedResidual",
    "MobileNetV2Backbone",
    "MobileNetV2Plus",
]

#: (expansion t, output channels c, repeats n, stride s) per stage, as in the MobileNetV2 paper.
_INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280
_TARGET_STRIDE = 8
#: 3x3 bottleneck width of the MobileNetV2Plus head (gives 8.28M parameters at 19 classes).
MOBILENETV2PLUS_BOTTLENECK = 192


def _conv_bn_relu6(
    in_ch: int,
    out_ch: int,
    *,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
) -> nn.Sequential:
    """Conv (no bias), BN, ReLU6: torchvision's ``Conv2dNormActivation`` layout (keys .0, .1)."""
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(
            in_ch,
            out_ch,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1), depth-wise 3x3, linear 1x1 projection, residual if shapes
    match."""

    def __init__(
        self, in_ch: int, out_ch: int, *, stride: int, expansion: int, dilation: int = 1
    ) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(in_ch, hidden, kernel_size=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, dilation=dilation, groups=hidden),
            nn.Conv2d(hidden, out_ch, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2Backbone(nn.Module):
    """MobileNetV2 ``features`` (1280 channels out), output stride 8; returns named stages.

    ``forward`` returns ``{"stride4": (N, 24, H/4, W/4), "stride8": (N, 32, H/8, W/8),
    "features": (N, 1280, H/8, W/8)}`` (sizes rounded up).
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(3, _STEM_CHANNELS, stride=2)]
        in_ch = _STEM_CHANNELS
        current_stride = 2
        dilation = 1
        taps: dict[int, str] = {}
        for expansion, out_ch, repeats, stride in _INVERTED_RESIDUAL_SETTING:
            if stride > 1 and current_stride >= _TARGET_STRIDE:
                dilation *= stride
                stride = 1
            current_stride *= stride
            for index in range(repeats):
                layers.append(
                    InvertedResidual(
                        in_ch,
                        out_ch,
                        stride=stride if index == 0 else 1,
                        expansion=expansion,
                        dilation=dilation,
                    )
                )
                in_ch = out_ch
            if out_ch == 24:
                taps[len(layers) - 1] = "stride4"
            elif out_ch == 32:
                taps[len(layers) - 1] = "stride8"
        layers.append(_conv_bn_relu6(in_ch, _LAST_CHANNELS, kernel_size=1))
        taps[len(layers) - 1] = "features"
        self.features = nn.Sequential(*layers)
        self._taps = taps
        self.channels: dict[str, int] = {"stride4": 24, "stride8": 32, "features": _LAST_CHANNELS}
        self.out_channels = _LAST_CHANNELS
        self.output_stride = _TARGET_STRIDE
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stages: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                stages[self._taps[index]] = x
        return stages


class MobileNetV2Plus(nn.Module):
    """Dilated MobileNetV2 + PSP-style head; ``logits`` at output stride 8, no auxiliary head.

    ``features``: ``"stride4"``, ``"stride8"``, ``"backbone"`` (the 1280-channel last map) and
    ``"head"`` (pyramid pooling + 3x3 bottleneck, ``bottleneck`` channels).
    """

    def __init__(self, num_classes: int, *, bottleneck: int = MOBILENETV2PLUS_BOTTLENECK) -> None:
        super().__init__()
        if num_classes < 1 or bottleneck < 1:
            raise ValueError(
                f"num_classes and bottleneck must be positive, got {num_classes}, {bottleneck}"
            )
        self.backbone = MobileNetV2Backbone()
        self.head = PSPHead(
            _LAST_CHANNELS, num_classes, reduction=_LAST_CHANNELS // 4, bottleneck=bottleneck
        )
        init_head_weights(self.head)
        self.num_classes = num_classes
        self.output_stride: int = _TARGET_STRIDE
        self.min_input_size: int = 8
        self.feature_channels: dict[str, int] = {
            **self.backbone.channels,
            "backbone": _LAST_CHANNELS,
            "head": bottleneck,
        }

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        check_image(
            image, min_size=self.min_input_size, training=self.training, needs_batch_stats=True
        )
        stages = self.backbone(image)
        logits, head = self.head(stages["features"])  # (N, K, h, w), (N, bottleneck, h, w)
        features = {
            "stride4": stages["stride4"],
            "stride8": stages["stride8"],
            "backbone": stages["features"],
            "head": head,
        }
        return SegmentationOutput(logits=logits, aux_logits=None, features=features)
