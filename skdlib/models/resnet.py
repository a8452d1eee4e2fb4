"""Dilated ResNet backbones (output stride 8) with torchvision's parameter names.

The stem (``conv1`` 7x7 stride 2, ``bn1``, ``relu``, ``maxpool``) and the stages ``layer1`` ..
``layer4`` carry the same parameter names and shapes as torchvision's ResNet (v1.5: the stride of
a Bottleneck sits on its 3x3 convolution), so an ImageNet checkpoint of torchvision loads
unchanged into :class:`ResNetBackbone` (its ``fc.*`` entries are reported as unexpected and
skipped, see :func:`skdlib.models.pretrained.load_pretrained`).

Dilation: ``layer3`` and ``layer4`` run at stride 1 with dilation 2 and 4, so the last stage has
output stride 8. As in torchvision's ``replace_stride_with_dilation``, the first block of a
dilated stage uses the previous stage's dilation on its 3x3 convolution and the following blocks
the new one; the parameter shapes are those of the undilated network.

The authors' code builds its ResNet18 student with a deep stem (three 3x3 convolutions), so
torchvision's ImageNet weights do not load into it; this backbone keeps the standard stem.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["RESNET_DEPTHS", "BasicBlock", "Bottleneck", "ResNetBackbone", "resnet_backbone"]

#: blocks per stage and block type for each depth (He et al., 2016).
RESNET_DEPTHS: dict[int, tuple[Literal["basic", "bottleneck"], tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}

_STAGE_PLANES = (64, 128, 256, 512)  # planes of layer1..layer4 at width 1.0
_STEM_CHANNELS = 64  # conv1 output channels at width 1.0
_DILATED_STAGES = {3: 2, 4: 4}  # stage index -> dilation (output stride 8)


def _conv3x3(in_ch: int, out_ch: int, *, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution, no bias, padding = dilation (keeps the size at stride 1)."""
    return nn.Conv2d(
        in_ch, out_ch, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; expansion 1."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride=stride, dilation=first_dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride: v1.5), 1x1 expand by 4, with a shortcut.

    The 3x3 convolution is the only spatial one: it uses ``first_dilation`` (the stage builder
    passes the stage's dilation there for every block but a dilated stage's first);
    ``dilation`` is accepted for a signature shared with :class:`BasicBlock`.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride=stride, dilation=first_dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBackbone(nn.Module):
    """A dilated ResNet without its classifier: stem + ``layer1`` .. ``layer4``, output stride 8.

    ``forward`` returns the four stage outputs by name (``"layer1"`` .. ``"layer4"``); spatial
    sizes are ``ceil(H/4)`` for ``layer1`` and ``ceil(H/8)`` for ``layer2`` .. ``layer4``.

    Args:
        block: ``"basic"`` (ResNet18/34) or ``"bottleneck"`` (ResNet50/101).
        layers: blocks per stage.
        width: channel multiplier applied to the stem and every stage (0.5 halves every count:
            the paper's ResNet18(0.5)); torchvision's weights only fit ``width=1.0``.
    """

    def __init__(
        self,
        block: Literal["basic", "bottleneck"],
        layers: tuple[int, int, int, int],
        *,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        if len(layers) != len(_STAGE_PLANES) or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {layers!r}")
        if not width > 0:
            raise ValueError(f"width must be positive, got {width!r}")
        block_cls: type[BasicBlock] | type[Bottleneck] = (
            BasicBlock if block == "basic" else Bottleneck
        )
        stem = max(1, round(_STEM_CHANNELS * width))
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        in_ch = stem
        dilation = 1
        channels: dict[str, int] = {}
        for index, (base_planes, blocks) in enumerate(
            zip(_STAGE_PLANES, layers, strict=True), start=1
        ):
            planes = max(1, round(base_planes * width))
            stride = 1 if index == 1 else 2
            previous_dilation = dilation
            if index in _DILATED_STAGES:
                dilation = _DILATED_STAGES[index]
                stride = 1
            stage, in_ch = self._make_stage(
                block_cls,
                in_ch,
                planes,
                blocks,
                stride=stride,
                dilation=dilation,
                first_dilation=previous_dilation,
            )
            self.add_module(f"layer{index}", stage)
            channels[f"layer{index}"] = in_ch
        self.channels: dict[str, int] = channels
        self.out_channels: int = in_ch
        self.output_stride: int = 8
        self._init_weights()

    @staticmethod
    def _make_stage(
        block_cls: type[BasicBlock] | type[Bottleneck],
        in_ch: int,
        planes: int,
        blocks: int,
        *,
        stride: int,
        dilation: int,
        first_dilation: int,
    ) -> tuple[nn.Sequential, int]:
        out_ch = planes * block_cls.expansion
        downsample = None
        if stride != 1 or in_ch != out_ch:
            downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        modules = [
            block_cls(
                in_ch,
                planes,
                stride=stride,
                dilation=dilation,
                first_dilation=first_dilation,
                downsample=downsample,
            )
        ]
        modules += [
            block_cls(out_ch, planes, dilation=dilation, first_dilation=dilation)
            for _ in range(blocks - 1)
        ]
        return nn.Sequential(*modules), out_ch

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, stem, ceil(H/4), ceil(W/4))
        stages: dict[str, torch.Tensor] = {}
        for name in self.channels:
            x = getattr(self, name)(x)
            stages[name] = x
        return stages


def resnet_backbone(depth: int, *, width: float = 1.0) -> ResNetBackbone:
    """The dilated ResNet of the given depth (18, 34, 50 or 101)."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
    block, layers = RESNET_DEPTHS[depth]
    return ResNetBackbone(block, layers, width=width)
