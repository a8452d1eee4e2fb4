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

The authors' code (and CIRKD's, and the MIT CSAIL ImageNet files both start from) builds its
ResNets with a *deep stem*: three 3x3 convolutions 3 -> 64 -> 64 -> 128 (``conv1``/``bn1``,
``conv2``/``bn2``, ``conv3``/``bn3``), so ``layer1`` takes 128 channels and torchvision's ImageNet
weights do not load into it. ``deep_stem=True`` builds that stem (the default keeps torchvision's);
``ceil_mode=True`` rounds the max-pool's output up (the authors': 65x65 logits for a 513x513 or a
512x512 input); ``first_block_dilated=True`` gives the first block of ``layer3`` / ``layer4`` the
stage's own dilation 2 / 4 on every 3x3 convolution (the authors' layout; torchvision's is 1 / 2 on
the first block's first spatial convolution). The released variants of
:func:`skdlib.models.build_model` use these options.
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
_DEEP_STEM_CHANNELS = (64, 64, 128)  # conv1, conv2, conv3 of the deep stem at width 1.0
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
    sizes are ``ceil(H/4)`` for ``layer1`` and ``ceil(H/8)`` for ``layer2`` .. ``layer4`` (with
    ``ceil_mode`` the max-pool rounds up: ``H = 256`` gives 65 and 33, ``H = 512`` 129 and 65).

    Args:
        block: ``"basic"`` (ResNet18/34) or ``"bottleneck"`` (ResNet50/101).
        layers: blocks per stage.
        width: channel multiplier applied to the stem and every stage (0.5 halves every count:
            the paper's ResNet18(0.5)); torchvision's weights only fit ``width=1.0``.
        deep_stem: three 3x3 convolutions (64, 64, 128 channels at width 1.0) instead of one
            7x7 (the authors', CIRKD's and the MIT CSAIL ImageNet files' layout).
        ceil_mode: round the max-pool's output size up (the authors' code).
        first_block_dilated: the first block of a dilated stage uses the stage's dilation on
            every 3x3 convolution (the authors' code) instead of the previous stage's on the first.
    """

    def __init__(
        self,
        block: Literal["basic", "bottleneck"],
        layers: tuple[int, int, int, int],
        *,
        width: float = 1.0,
        deep_stem: bool = False,
        ceil_mode: bool = False,
        first_block_dilated: bool = False,
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
        self.deep_stem = deep_stem
        stem = self._make_stem(width) if deep_stem else self._make_plain_stem(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=ceil_mode)

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
                first_dilation=dilation if first_block_dilated else previous_dilation,
            )
            self.add_module(f"layer{index}", stage)
            channels[f"layer{index}"] = in_ch
        self.channels: dict[str, int] = channels
        self.out_channels: int = in_ch
        self.output_stride: int = 8
        self._init_weights()

    def _make_plain_stem(self, width: float) -> int:
        """torchvision's stem: one 7x7 stride-2 convolution; returns its output channels."""
        stem = max(1, round(_STEM_CHANNELS * width))
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        return stem

    def _make_stem(self, width: float) -> int:
        """The deep stem: 3x3 convolutions ``conv1`` (stride 2), ``conv2``, ``conv3``, each with its
        batch norm; returns the last one's output channels."""
        in_ch = 3
        for index, base in enumerate(_DEEP_STEM_CHANNELS, start=1):
            out_ch = max(1, round(base * width))
            self.add_module(f"conv{index}", _conv3x3(in_ch, out_ch, stride=2 if index == 1 else 1))
            self.add_module(f"bn{index}", nn.BatchNorm2d(out_ch))
            in_ch = out_ch
        return in_ch

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
        x = self.relu(self.bn1(self.conv1(x)))  # (N, c1, ceil(H/2), ceil(W/2))
        if self.deep_stem:
            x = self.relu(self.bn2(self.conv2(x)))  # (N, c2, ceil(H/2), ceil(W/2))
            x = self.relu(self.bn3(self.conv3(x)))  # (N, c3, ceil(H/2), ceil(W/2))
        x = self.maxpool(x)  # (N, stem, ~H/4, ~W/4): floor or ceil rounding (ceil_mode)
        stages: dict[str, torch.Tensor] = {}
        for name in self.channels:
            x = getattr(self, name)(x)
            stages[name] = x
        return stages


def resnet_backbone(
    depth: int,
    *,
    width: float = 1.0,
    deep_stem: bool = False,
    ceil_mode: bool = False,
    first_block_dilated: bool = False,
) -> ResNetBackbone:
    """The dilated ResNet of the given depth (18, 34, 50 or 101); the keyword options as in
    :class:`ResNetBackbone`."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
    block, layers = RESNET_DEPTHS[depth]
    return ResNetBackbone(
        block,
        layers,
        width=width,
        deep_stem=deep_stem,
        ceil_mode=ceil_mode,
        first_block_dilated=first_block_dilated,
    )
