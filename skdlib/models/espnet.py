"""ESPNet-C and ESPNet (Mehta et al., ECCV 2018), default configuration ``p = 2``, ``q = 8``.

Building blocks, following the ESPNet paper:

* ESP module: a 1x1 convolution reduces the input to ``d = M / K`` channels (``K = 5``), ``K``
  parallel 3x3 convolutions with dilation rates 1, 2, 4, 8, 16 transform it (the rate-1 branch
  takes the remainder so the widths add up to ``M``), hierarchical feature fusion (HFF) adds the
  dilated outputs in order (``r2``, ``r2 + r4``, ``r2 + r4 + r8``, ...) before the
  concatenation, a residual connection is added when input and output shapes agree, then BN and
  PReLU. The strided variant (down-sampling) uses a 3x3 stride-2 convolution as its reduction.
* input image reinforcement: the image average-pooled to 1/2 and 1/4 is concatenated to the
  feature maps of those levels.
* every activation is a PReLU; BN uses ``eps = 1e-3``.

ESPNet-C is the encoder + a 1x1 classifier on the 1/8 map (``logits`` at output stride 8).
ESPNet adds the light decoder (1x1 projection of the 1/4 level, transposed convolutions, an ESP
module to merge, a 3x3 CBR with the 1/2 level): ``logits`` at full resolution (output stride 1).

``p`` and ``q`` count the ESP modules at 1/4 and at 1/8. Published size: the ESPNet paper's
abstract and introduction state that ESPNet is 180 times smaller than PSPNet, whose size it gives
as 65.7M parameters: 65.7M / 180 = 0.365M (20-class Cityscapes set-up).
This implementation has 0.3651M (ESPNet) and 0.3494M (ESPNet-C, no decoder) at 20
classes with ``p = 2, q = 8``, the configuration the ESPNet code ships for Cityscapes; with
``p = 2, q = 3`` it would have 0.203M and 0.188M (44% below the published size), so
``q = 8`` is the default here.

Differences from the reference design, all neutral for sizes and class counts it supports:

* ``H`` and ``W`` need not be multiples of 8: every up-sampled decoder map is cropped to the size
  of the map it joins (a no-op when the sizes divide by 8).
* With fewer than ``K = 5`` classes the decoder's ESP module cannot split ``num_classes``
  channels into five branches; it then runs at width 5 and the following transposed convolution
  maps 5 channels back to ``num_classes`` (identical to the reference for 5 classes or more).
* ``features["head"]`` is the encoder's 1/8 map (256 channels) for both networks: it is the map
  before the classifier of ESPNet-C, and for ESPNet the last map at the teacher's output stride
  (the pair-wise term compares node graphs of equal size). ESPNet's map before its final
  transposed convolution is ``features["decoder"]`` (``num_classes`` channels at 1/2).
"""

from __future__ import annotations

import torch
from torch import nn

from skdlib.models.outputs import SegmentationOutput
from skdlib.models.psp import check_image

__all__ = ["ESP_BRANCHES", "ESP_DILATIONS", "ESPModule", "ESPNet", "ESPNetC", "ESPNetEncoder"]

ESP_BRANCHES = 5  # K
ESP_DILATIONS: tuple[int, ...] = (1, 2, 4, 8, 16)
_BN_EPS = 1e-3
_LEVEL1_CHANNELS = 16
_LEVEL2_CHANNELS = 64
_LEVEL3_CHANNELS = 128
_IMAGE_CHANNELS = 3


def _bn_prelu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels, eps=_BN_EPS), nn.PReLU(channels))


def _conv_bn_prelu(
    in_ch: int, out_ch: int, *, kernel_size: int = 3, stride: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_ch, eps=_BN_EPS),
        nn.PReLU(out_ch),
    )


class ESPModule(nn.Module):
    """Reduce, split into ``K = 5`` dilated 3x3 branches, HFF, concatenate, (residual), BN, PReLU.

    Args:
        in_channels: ``N_in``.
        out_channels: ``M`` (at least ``K``); branch width ``d = M // K``, the rate-1 branch
            gets ``M - (K - 1) d``.
        stride: 2 for the down-sampling variant (3x3 stride-2 reduction, no residual).
        residual: add the input when the shapes agree (``stride == 1`` and ``N_in == M``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 1, residual: bool = True
    ) -> None:
        super().__init__()
        if out_channels < ESP_BRANCHES:
            raise ValueError(
                f"out_channels must be at least {ESP_BRANCHES} (one per branch), got {out_channels}"
            )
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        width = out_channels // ESP_BRANCHES
        first = out_channels - (ESP_BRANCHES - 1) * width
        kernel = 3 if stride == 2 else 1
        self.reduce = nn.Conv2d(
            in_channels, width, kernel, stride=stride, padding=kernel // 2, bias=False
        )
        self.branches = nn.ModuleList(
            nn.Conv2d(
                width, first if rate == 1 else width, 3, padding=rate, dilation=rate, bias=False
            )
            for rate in ESP_DILATIONS
        )
        self.residual = residual and stride == 1 and in_channels == out_channels
        self.post = _bn_prelu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)  # (N, d, h, w)
        outputs = [self.branches[0](reduced)]  # rate 1: (N, M - 4d, h, w)
        fused = None
        for branch in self.branches[1:]:
            out = branch(reduced)  # (N, d, h, w)
            fused = out if fused is None else fused + out  # hierarchical feature fusion
            outputs.append(fused)
        combined = torch.cat(outputs, dim=1)  # (N, M, h, w)
        if self.residual:
            combined = combined + x
        return self.post(combined)


class _ImagePyramid(nn.Module):
    """The image average-pooled by 3x3 stride-2 windows, ``times`` times (input reinforcement)."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.pools = nn.ModuleList(nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        for pool in self.pools:
            image = pool(image)  # (N, 3, ceil(h/2), ceil(w/2))
        return image


class ESPNetEncoder(nn.Module):
    """ESPNet-C's encoder: returns the 1/2, 1/4 and 1/8 maps (with image reinforcement).

    ``forward`` returns ``{"level1": (N, 19, H/2, W/2), "level2": (N, 131, H/4, W/4),
    "level3": (N, 256, H/8, W/8)}`` (sizes rounded up).
    """

    def __init__(self, *, p: int = 2, q: int = 8) -> None:
        super().__init__()
        if p < 1 or q < 1:
            raise ValueError(f"p and q must be positive, got p={p}, q={q}")
        l1 = _LEVEL1_CHANNELS + _IMAGE_CHANNELS
        l2 = 2 * _LEVEL2_CHANNELS + _IMAGE_CHANNELS
        l3 = 2 * _LEVEL3_CHANNELS
        self.level1 = _conv_bn_prelu(_IMAGE_CHANNELS, _LEVEL1_CHANNELS, stride=2)
        self.image_half = _ImagePyramid(1)
        self.image_quarter = _ImagePyramid(2)
        self.level1_post = _bn_prelu(l1)
        self.level2_down = ESPModule(l1, _LEVEL2_CHANNELS, stride=2)
        self.level2 = nn.Sequential(
            *(ESPModule(_LEVEL2_CHANNELS, _LEVEL2_CHANNELS) for _ in range(p))
        )
        self.level2_post = _bn_prelu(l2)
        self.level3_down = ESPModule(l2, _LEVEL3_CHANNELS, stride=2)
        self.level3 = nn.Sequential(
            *(ESPModule(_LEVEL3_CHANNELS, _LEVEL3_CHANNELS) for _ in range(q))
        )
        self.level3_post = _bn_prelu(l3)
        self.channels: dict[str, int] = {"level1": l1, "level2": l2, "level3": l3}

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        level1 = self.level1_post(  # (N, 19, h/2, w/2)
            torch.cat([self.level1(image), self.image_half(image)], dim=1)
        )
        down2 = self.level2_down(level1)  # (N, 64, h/4, w/4)
        level2 = self.level2_post(  # (N, 131, h/4, w/4)
            torch.cat([self.level2(down2), down2, self.image_quarter(image)], dim=1)
        )
        down3 = self.level3_down(level2)  # (N, 128, h/8, w/8)
        level3 = self.level3_post(
            torch.cat([down3, self.level3(down3)], dim=1)
        )  # (N, 256, h/8, w/8)
        return {"level1": level1, "level2": level2, "level3": level3}


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ESPNetC(nn.Module):
    """ESPNet-C: encoder + 1x1 classifier; ``logits`` ``(N, K, ceil(H/8), ceil(W/8))``."""

    def __init__(self, num_classes: int, *, p: int = 2, q: int = 8) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.encoder = ESPNetEncoder(p=p, q=q)
        self.classifier = nn.Conv2d(self.encoder.channels["level3"], num_classes, 1, bias=False)
        self.num_classes = num_classes
        self.output_stride: int = 8
        self.min_input_size: int = 8
        self.feature_channels: dict[str, int] = {
            **self.encoder.channels,
            "backbone": self.encoder.channels["level3"],
            "head": self.encoder.channels["level3"],
        }
        _init_weights(self)

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        check_image(image, min_size=self.min_input_size)
        levels = self.encoder(image)
        logits = self.classifier(levels["level3"])  # (N, K, h/8, w/8)
        features = {**levels, "backbone": levels["level3"], "head": levels["level3"]}
        return SegmentationOutput(logits=logits, aux_logits=None, features=features)


def _crop_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Crop ``x`` (N, C, h', w') to ``reference``'s spatial size (h <= h', w <= w')."""
    return x[..., : reference.shape[-2], : reference.shape[-1]]  # (N, C, h, w)


class ESPNet(nn.Module):
    """ESPNet: ESPNet-C's encoder + the light decoder; ``logits`` ``(N, K, H, W)``."""

    def __init__(self, num_classes: int, *, p: int = 2, q: int = 8) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.encoder = ESPNetEncoder(p=p, q=q)
        channels = self.encoder.channels
        merge_width = max(num_classes, ESP_BRANCHES)
        self.level3_classifier = nn.Conv2d(channels["level3"], num_classes, 1, bias=False)
        self.level3_bn = nn.BatchNorm2d(num_classes, eps=_BN_EPS)
        self.up_level3 = nn.ConvTranspose2d(num_classes, num_classes, 2, stride=2, bias=False)
        self.level2_project = nn.Conv2d(channels["level2"], num_classes, 1, bias=False)
        self.merge_level2 = nn.Sequential(
            _bn_prelu(2 * num_classes),
            ESPModule(2 * num_classes, merge_width, residual=False),
        )
        self.up_level2 = nn.Sequential(
            nn.ConvTranspose2d(merge_width, num_classes, 2, stride=2, bias=False),
            _bn_prelu(num_classes),
        )
        self.merge_level1 = _conv_bn_prelu(channels["level1"] + num_classes, num_classes)
        self.classifier = nn.ConvTranspose2d(num_classes, num_classes, 2, stride=2, bias=False)
        self.num_classes = num_classes
        self.output_stride: int = 1
        self.min_input_size: int = 8
        self.feature_channels: dict[str, int] = {
            **channels,
            "backbone": channels["level3"],
            "head": channels["level3"],
            "decoder": num_classes,
        }
        _init_weights(self)

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        check_image(image, min_size=self.min_input_size)
        levels = self.encoder(image)
        level3 = self.level3_bn(self.level3_classifier(levels["level3"]))  # (N, K, h/8, w/8)
        level2 = self.level2_project(levels["level2"])  # (N, K, h/4, w/4)
        up3 = _crop_to(self.up_level3(level3), level2)  # (N, K, h/4, w/4)
        merged2 = self.merge_level2(torch.cat([level2, up3], dim=1))  # (N, max(K, 5), h/4, w/4)
        up2 = _crop_to(self.up_level2(merged2), levels["level1"])  # (N, K, h/2, w/2)
        decoder = self.merge_level1(torch.cat([up2, levels["level1"]], dim=1))  # (N, K, h/2, w/2)
        logits = _crop_to(self.classifier(decoder), image)  # (N, K, H, W)
        features = {
            **levels,
            "backbone": levels["level3"],
            "head": levels["level3"],
            "decoder": decoder,
        }
        return SegmentationOutput(logits=logits, aux_logits=None, features=features)
