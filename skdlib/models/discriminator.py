"""The paper's embedding network: a fully convolutional critic scoring segmentation maps."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["Discriminator", "SelfAttention", "min_map_size"]

_INPUTS = ("softmax", "logits")
_NUM_DOWN = 4  # strided-or-not convolutions before the last one (the paper's and authors' four)
_DOWN_KERNEL = 4  # kernel of a stride-2 convolution (authors' code)
_KEEP_KERNEL = 3  # kernel of a size-keeping (stride-1, padding-1) convolution
MIN_SIZE = 2**_NUM_DOWN  # smallest map side the default critic (four stride-2 convolutions) accepts


def min_map_size(downsample: int = _NUM_DOWN) -> int:
    """Smallest map side that a critic with ``downsample`` stride-2 convolutions accepts.

    It is ``2**downsample``: one position is left after the downsampling.

    Raises:
        ValueError: ``downsample`` is not an int in ``[1, 4]``.
    """
    if (
        isinstance(downsample, bool)
        or not isinstance(downsample, int)
        or not 1 <= downsample <= _NUM_DOWN
    ):
        raise ValueError(f"downsample must be an int in [1, {_NUM_DOWN}], got {downsample!r}")
    return 2**downsample


class SelfAttention(nn.Module):
    """SAGAN-style self-attention over spatial positions.

    ``y = gamma * (V softmax(Q^T K)^T) + x`` with 1x1 query/key convolutions to
    ``max(1, C // 8)`` channels, a 1x1 value convolution to ``C`` channels and a learnable scalar
    ``gamma`` initialised to 0 (the block starts as the identity). Memory is ``O((h w)^2)`` on the
    already 8x-downsampled map.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(1, channels // 8)
        self.query = nn.Conv2d(channels, inner, kernel_size=1)
        self.key = nn.Conv2d(channels, inner, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query(x).flatten(2)  # (N, C', h, w) -> (N, C', n)
        k = self.key(x).flatten(2)  # (N, C', h, w) -> (N, C', n)
        v = self.value(x).flatten(2)  # (N, C, h, w) -> (N, C, n)
        attn = torch.softmax(torch.einsum("bci,bcj->bij", q, k), dim=-1)  # (N, n, n), rows sum to 1
        out = torch.einsum("bcj,bij->bci", v, attn)  # (N, C, n) x (N, n, n) -> (N, C, n)
        return x + self.gamma * out.view_as(x)  # (N, C, n) -> (N, C, h, w)


class Discriminator(nn.Module):
    """Embedding network ``D(Q | I)``: one score per image, higher = more teacher-like.

    Five spectral-normalised convolutions: four 4x4 stride-2 convolutions (``widths``, default
    64-128-256-512, each followed by LeakyReLU(0.1)), self-attention after the 3rd and the 4th,
    and a final 3x3 convolution (padding 1) to one channel. The spatial score map is averaged
    into one score per image. The authors' code ends with an unpadded 4x4 convolution, which
    needs maps of at least 64 x 64; the padded 3x3 one keeps the minimum at 16 x 16 (the 1/8
    logits of a 128 x 128 crop) and, once averaged, plays the same role.

    Input contract: the module does not transform the map. ``input="softmax"`` declares that
    callers pass class probabilities, ``input="logits"`` raw logits (the authors' ``master``
    code); :meth:`prepare_input` turns a network's logits into what this critic expects, and the
    same tensors go to ``gradient_penalty`` (which interpolates exactly the maps the critic
    sees). With ``use_image`` the RGB image is resized (bilinear, ``align_corners=False``) to the
    map's size and concatenated after the map (the ``cvpr_19`` branch); without it, an image
    passed to :meth:`forward` is ignored, so every critic is called as ``critic(seg_map, image)``.
    ``input_batchnorm`` applies a BatchNorm2d to the map's channels (not the image), as the
    authors' ``master`` code does. Attention 1x1 convolutions are not spectral-normalised.

    ``downsample`` (default 4) is how many of the four convolutions have stride 2; the others
    (the last ones) are 3x3 stride-1 convolutions that keep the size, so a critic with
    ``downsample=n`` accepts maps of ``2**n`` a side (:func:`min_map_size`): 3 takes the 8 x 8
    logits of 64 x 64 crops. Five convolutions and the two attention blocks remain.

    The authors' ``master`` variant: ``Discriminator(K, use_image=False, input="logits",
    input_batchnorm=True)``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        image_channels: int = 3,
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        use_image: bool = True,
        input: str = "softmax",
        input_batchnorm: bool = False,
        negative_slope: float = 0.1,
        downsample: int = _NUM_DOWN,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if input not in _INPUTS:
            raise ValueError(f"input must be one of {_INPUTS}, got {input!r}")
        widths = tuple(widths)
        if len(widths) != _NUM_DOWN or any(int(c) < 1 for c in widths):
            raise ValueError(f"widths must be {_NUM_DOWN} positive ints, got {widths!r}")
        if use_image and image_channels < 1:
            raise ValueError(f"image_channels must be >= 1, got {image_channels}")
        self.min_size = min_map_size(downsample)
        self.downsample = downsample
        self.num_classes = num_classes
        self.image_channels = image_channels if use_image else 0
        self.use_image = use_image
        self.input = input
        self.input_bn = nn.BatchNorm2d(num_classes) if input_batchnorm else None

        in_ch = num_classes + self.image_channels
        chans = (in_ch, *widths)
        self.conv1, self.conv2, self.conv3, self.conv4 = (
            spectral_norm(
                nn.Conv2d(chans[i], chans[i + 1], kernel_size=_DOWN_KERNEL, stride=2, padding=1)
                if i < downsample
                else nn.Conv2d(
                    chans[i], chans[i + 1], kernel_size=_KEEP_KERNEL, stride=1, padding=1
                )
            )
            for i in range(_NUM_DOWN)
        )
        self.attn1 = SelfAttention(widths[2])
        self.attn2 = SelfAttention(widths[3])
        self.conv5 = spectral_norm(nn.Conv2d(widths[3], 1, kernel_size=3, padding=1))
        self.act = nn.LeakyReLU(negative_slope)

    def prepare_input(self, logits: torch.Tensor) -> torch.Tensor:
        """A network's logits ``(N, K, H, W)`` -> the map this critic expects.

        Softmax over classes for ``input="softmax"``, the logits unchanged for ``"logits"``.
        """
        if self.input == "softmax":
            return torch.softmax(logits, dim=1)  # (N, K, H, W), sums to 1 over K
        return logits

    def forward(self, seg_map: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Score maps: ``seg_map`` ``(N, K, H, W)``, ``image`` ``(N, 3, H_i, W_i)`` -> ``(N,)``.

        Raises:
            ValueError: wrong rank or class count, a map smaller than ``2**downsample`` a side
                (16 x 16 by default), a missing image with ``use_image``, or an image of the
                wrong batch size / channel count.
        """
        if seg_map.dim() != 4 or seg_map.shape[1] != self.num_classes:
            raise ValueError(
                f"seg_map must be (N, {self.num_classes}, H, W), got shape {tuple(seg_map.shape)}"
            )
        h, w = seg_map.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise ValueError(
                f"seg_map is {h} x {w}; the {self.downsample} stride-2 convolutions need at least "
                f"{self.min_size} x {self.min_size}"
            )
        x = seg_map if self.input_bn is None else self.input_bn(seg_map)
        if self.use_image:
            if image is None:
                raise ValueError("image is required when use_image=True")
            if (
                image.dim() != 4
                or image.shape[0] != seg_map.shape[0]
                or (image.shape[1] != self.image_channels)
            ):
                raise ValueError(
                    f"image must be (N={seg_map.shape[0]}, {self.image_channels}, H, W), "
                    f"got shape {tuple(image.shape)}"
                )
            # (N, 3, H_i, W_i) -> (N, 3, H, W)
            img = F.interpolate(
                image.to(x.dtype), size=(h, w), mode="bilinear", align_corners=False
            )
            x = torch.cat([x, img], dim=1)  # (N, K + 3, H, W)
        # s_i = 2**min(i, downsample): the first `downsample` convolutions halve the size.
        x = self.act(self.conv1(x))  # (N, w0, H/s_1, W/s_1)
        x = self.act(self.conv2(x))  # (N, w1, H/s_2, W/s_2)
        x = self.attn1(self.act(self.conv3(x)))  # (N, w2, H/s_3, W/s_3)
        x = self.attn2(self.act(self.conv4(x)))  # (N, w3, H/s_4, W/s_4)
        score_map = self.conv5(x)  # (N, 1, H/s_4, W/s_4)
        return score_map.mean(dim=(1, 2, 3))  # (N, 1, h, w) -> (N,)
