"""Plain re-derivations of the released networks' forward passes, for the parity tests.

Written from the architectures (the SKD authors' ``Res_pspnet``, CIRKD's PSPNet and DeepLabV3 on
their deep-stem ResNet101) as functional calls over a state dict *in the released naming*: no
skdlib module is used. The functions take the file's tensors as they are; the authors' batch norms
compute as InPlace-ABN does, scaling by ``|weight| + eps``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
State = dict[str, Tensor]

EPS = 1e-5
SLOPE = 0.01  # InPlace-ABN's leaky ReLU
BINS = (1, 2, 3, 6)
BLOCKS = {101: (3, 4, 23, 3), 18: (2, 2, 2, 2)}


def _bn(x: Tensor, s: State, name: str, *, inplace_abn: bool) -> Tensor:
    weight = s[f"{name}.weight"]
    scale = weight.abs() + EPS if inplace_abn else weight
    return F.batch_norm(
        x, s[f"{name}.running_mean"], s[f"{name}.running_var"], scale, s[f"{name}.bias"], eps=EPS
    )


def _conv(x: Tensor, s: State, name: str, *, stride: int = 1, dilation: int = 1) -> Tensor:
    weight = s[f"{name}.weight"]
    pad = dilation * (weight.shape[-1] // 2)
    return F.conv2d(x, weight, s.get(f"{name}.bias"), stride, pad, dilation)


def _stem(x: Tensor, s: State, p: str, *, inplace_abn: bool, ceil_mode: bool) -> Tensor:
    x = F.relu(_bn(_conv(x, s, f"{p}conv1", stride=2), s, f"{p}bn1", inplace_abn=inplace_abn))
    x = F.relu(_bn(_conv(x, s, f"{p}conv2"), s, f"{p}bn2", inplace_abn=inplace_abn))
    x = F.relu(_bn(_conv(x, s, f"{p}conv3"), s, f"{p}bn3", inplace_abn=inplace_abn))
    return F.max_pool2d(x, 3, 2, 1, ceil_mode=ceil_mode)


def _block(x: Tensor, s: State, q: str, stride: int, dils: tuple[int, int], abn: bool) -> Tensor:
    """A residual block: bottleneck when ``conv3`` exists, else basic; ``dils``: the dilations
    of its two 3x3 convolutions (a bottleneck has one: ``dils[0]``)."""
    if f"{q}.conv3.weight" in s:
        out = F.relu(_bn(_conv(x, s, f"{q}.conv1"), s, f"{q}.bn1", inplace_abn=abn))
        out = _conv(out, s, f"{q}.conv2", stride=stride, dilation=dils[0])
        out = F.relu(_bn(out, s, f"{q}.bn2", inplace_abn=abn))
        out = _bn(_conv(out, s, f"{q}.conv3"), s, f"{q}.bn3", inplace_abn=abn)
    else:
        out = _conv(x, s, f"{q}.conv1", stride=stride, dilation=dils[0])
        out = F.relu(_bn(out, s, f"{q}.bn1", inplace_abn=abn))
        out = _bn(_conv(out, s, f"{q}.conv2", dilation=dils[1]), s, f"{q}.bn2", inplace_abn=abn)
    residual = x
    if f"{q}.downsample.0.weight" in s:
        residual = _conv(x, s, f"{q}.downsample.0", stride=stride)
        residual = _bn(residual, s, f"{q}.downsample.1", inplace_abn=abn)
    return F.relu(out + residual)


def authors_backbone(x: Tensor, s: State, depth: int) -> tuple[Tensor, Tensor]:
    """``(layer3, layer4)`` of ``Res_pspnet``: every block of layer3 / layer4 dilated 2 / 4."""
    x = _stem(x, s, "", inplace_abn=True, ceil_mode=True)
    outputs = []
    for stage, (blocks, dilation) in enumerate(zip(BLOCKS[depth], (1, 1, 2, 4), strict=True), 1):
        for b in range(blocks):
            stride = 2 if stage == 2 and b == 0 else 1
            x = _block(x, s, f"layer{stage}.{b}", stride, (dilation, dilation), True)
        outputs.append(x)
    return outputs[2], outputs[3]


def _up(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear upsampling to ``like``'s size with ``align_corners=True`` (both codes)."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


def _abn_leaky(x: Tensor, s: State, name: str) -> Tensor:
    return F.leaky_relu(_bn(x, s, name, inplace_abn=True), SLOPE)


def authors_forward(image: Tensor, s: State, depth: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits, dsn logits, PSP-module output)`` of ``Res_pspnet`` in eval mode, for a state
    dict in the model's own naming (``pspmodule.*``, ``head.*``, ``dsn.*``)."""
    x3, x4 = authors_backbone(image, s, depth)
    dsn = _abn_leaky(_conv(x3, s, "dsn.0"), s, "dsn.1")
    dsn = _conv(dsn, s, "dsn.3")
    priors = []
    for index, size in enumerate(BINS):
        stage = f"pspmodule.stages.{index}"
        pooled = _conv(F.adaptive_avg_pool2d(x4, size), s, f"{stage}.1")
        priors.append(_up(_abn_leaky(pooled, s, f"{stage}.2"), x4))
    feature = _conv(torch.cat([*priors, x4], 1), s, "pspmodule.bottleneck.0")
    feature = _abn_leaky(feature, s, "pspmodule.bottleneck.1")
    return _conv(feature, s, "head"), dsn, feature


def _relu_bn(x: Tensor, s: State, name: str) -> Tensor:
    return F.relu(_bn(x, s, name, inplace_abn=False))


def cirkd_backbone(x: Tensor, s: State) -> tuple[Tensor, Tensor]:
    """``(c3, c4)`` of CIRKD's ``resnet101_v1s`` (dilated): the first block of layer3 / layer4
    dilated 1 / 2, the others 2 / 4; max-pool without ceil mode."""
    x = _stem(x, s, "pretrained.", inplace_abn=False, ceil_mode=False)
    outputs = []
    for stage, (blocks, dilation) in enumerate(zip(BLOCKS[101], (1, 1, 2, 4), strict=True), 1):
        for b in range(blocks):
            first = {1: 1, 2: 1, 4: 2}[dilation] if b == 0 else dilation
            stride = 2 if stage == 2 and b == 0 else 1
            x = _block(x, s, f"pretrained.layer{stage}.{b}", stride, (first, first), False)
        outputs.append(x)
    return outputs[2], outputs[3]


def cirkd_aux(c3: Tensor, s: State) -> Tensor:
    x = _relu_bn(_conv(c3, s, "auxlayer.block.0"), s, "auxlayer.block.1")
    return _conv(x, s, "auxlayer.block.4")


def cirkd_pspnet_forward(image: Tensor, s: State) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits, aux logits, head feature)`` of CIRKD's PSPNet-ResNet101 in eval mode."""
    c3, c4 = cirkd_backbone(image, s)
    feats = [c4]
    for index, size in enumerate(BINS, 1):
        pooled = _conv(F.adaptive_avg_pool2d(c4, size), s, f"head.psp.conv{index}.0")
        feats.append(_up(_relu_bn(pooled, s, f"head.psp.conv{index}.1"), c4))
    feature = _relu_bn(_conv(torch.cat(feats, 1), s, "head.block.0"), s, "head.block.1")
    return _conv(feature, s, "head.classifier"), cirkd_aux(c3, s), feature


def cirkd_deeplabv3_forward(image: Tensor, s: State) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits, aux logits, head feature)`` of CIRKD's DeepLabV3-ResNet101 in eval mode."""
    c3, c4 = cirkd_backbone(image, s)
    branches = [_relu_bn(_conv(c4, s, "head.aspp.b0.0"), s, "head.aspp.b0.1")]
    for b, rate in zip((1, 2, 3), (12, 24, 36), strict=True):
        conv = _conv(c4, s, f"head.aspp.b{b}.block.0", dilation=rate)
        branches.append(_relu_bn(conv, s, f"head.aspp.b{b}.block.1"))
    gap = _conv(F.adaptive_avg_pool2d(c4, 1), s, "head.aspp.b4.gap.1")
    branches.append(_up(_relu_bn(gap, s, "head.aspp.b4.gap.2"), c4))
    x = _relu_bn(_conv(torch.cat(branches, 1), s, "head.aspp.project.0"), s, "head.aspp.project.1")
    feature = _relu_bn(_conv(x, s, "head.block.0"), s, "head.block.1")
    return _conv(feature, s, "head.block.4"), cirkd_aux(c3, s), feature
