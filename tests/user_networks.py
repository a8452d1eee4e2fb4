"""Segmentation networks written the way users write them, for the tests of networks of one's own.

torchvision and timm have no CPU wheels here, so these are written in their shape, not taken from
them: :class:`TinyUNet` returns a tensor (a plain user network), :class:`FCNStyle` returns
torchvision's ``{"out": ..., "aux": ...}`` (logits upsampled to the input, an ``FCNHead``
``Sequential`` as classifier, a backbone of named stages), :class:`SegFormerStyle` returns a tuple
``(logits, fused decoder feature)`` from an encoder of ``stages`` (a ``ModuleList``, as timm
names them). The factories (``build_*``) are what an import path ``"user_networks:build_unet"``
names (the tests put this folder on ``PYTHONPATH``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from skdlib.models import tap


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """Encoder to 1/8, decoder back to 1/2 with skips; logits at 1/2; a deep-supervision head on
    the 1/8 map that runs in training mode only (and returns nothing: it is never read)."""

    def __init__(self, num_classes: int = 8, width: int = 8) -> None:
        super().__init__()
        w = width
        self.stem = conv_bn_relu(3, w, 2)  # 1/2
        self.down1 = conv_bn_relu(w, 2 * w, 2)  # 1/4
        self.down2 = conv_bn_relu(2 * w, 4 * w, 2)  # 1/8
        self.decoder = nn.ModuleDict(
            {"block1": conv_bn_relu(6 * w, 2 * w), "block2": conv_bn_relu(3 * w, w)}
        )
        self.classifier = nn.Conv2d(w, num_classes, 1)
        self.deep_supervision = nn.Conv2d(4 * w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.stem(x)
        s2 = self.down1(s1)
        s3 = self.down2(s2)
        if self.training:
            self.deep_supervision(s3)
        up = F.interpolate(s3, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        d1 = self.decoder["block1"](torch.cat([up, s2], dim=1))  # (N, 2w, H/4, W/4)
        up = F.interpolate(d1, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        d2 = self.decoder["block2"](torch.cat([up, s1], dim=1))  # (N, w, H/2, W/2)
        return self.classifier(d2)


class _Backbone(nn.Module):
    """Named stages to 1/8, returning torchvision's IntermediateLayerGetter dict."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer1 = conv_bn_relu(3, width, 2)
        self.layer2 = conv_bn_relu(width, 2 * width, 2)
        self.layer3 = conv_bn_relu(2 * width, 4 * width, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        l2 = self.layer2(self.layer1(x))
        return OrderedDict(aux=l2, out=self.layer3(l2))


def fcn_head(cin: int, num_classes: int) -> nn.Sequential:
    """torchvision's FCNHead layout: 3x3 conv, BN, ReLU, dropout, 1x1 classifier."""
    inter = cin // 4
    return nn.Sequential(
        nn.Conv2d(cin, inter, 3, padding=1, bias=False),
        nn.BatchNorm2d(inter),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Conv2d(inter, num_classes, 1),
    )


class FCNStyle(nn.Module):
    """torchvision's segmentation layout: ``{"out": logits, "aux": logits}``, both upsampled to
    the input (output stride 1); ``aux`` only with an auxiliary classifier."""

    def __init__(self, num_classes: int = 8, width: int = 16, aux: bool = True) -> None:
        super().__init__()
        self.backbone = _Backbone(width)
        self.classifier = fcn_head(4 * width, num_classes)
        self.aux_classifier = fcn_head(2 * width, num_classes) if aux else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        result = OrderedDict()
        out = self.classifier(features["out"])
        result["out"] = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["aux"])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


class SegFormerStyle(nn.Module):
    """Four encoder stages (``encoder.stages``, 1/4 to 1/32), an all-MLP-like decoder fusing them
    at 1/4; returns ``(logits, fused)`` at 1/4."""

    def __init__(self, num_classes: int = 8, widths: tuple[int, ...] = (8, 8, 16, 16)) -> None:
        super().__init__()
        self.encoder = nn.Module()
        stages, cin = [], 3
        for i, width in enumerate(widths):
            stages.append(conv_bn_relu(cin, width, 4 if i == 0 else 2))
            cin = width
        self.encoder.stages = nn.ModuleList(stages)
        self.linear = nn.ModuleList(nn.Conv2d(w, 16, 1) for w in widths)
        self.fuse = conv_bn_relu(16 * len(widths), 16)
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = []
        for stage in self.encoder.stages:
            x = stage(x)
            maps.append(x)
        size = maps[0].shape[-2:]
        projected = [
            F.interpolate(lin(m), size=size, mode="bilinear", align_corners=False)
            for lin, m in zip(self.linear, maps, strict=True)
        ]
        fused = self.fuse(torch.cat(projected, dim=1))  # (N, 16, H/4, W/4)
        return self.classifier(fused), fused


def build_unet(num_classes: int = 8, width: int = 8) -> TinyUNet:
    return TinyUNet(num_classes, width)


def build_fcn(num_classes: int = 8, width: int = 16, aux: bool = True) -> FCNStyle:
    return FCNStyle(num_classes, width, aux)


def build_segformer(num_classes: int = 8) -> SegFormerStyle:
    return SegFormerStyle(num_classes)


def build_tapped_unet(num_classes: int = 8, width: int = 8) -> nn.Module:
    """A factory that taps its network itself (no taps needed in the config)."""
    return tap(TinyUNet(num_classes, width), features={"head": "decoder.block2"})


def not_a_network(num_classes: int = 8) -> str:
    return "a string"
