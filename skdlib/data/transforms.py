"""Augmentation and normalisation as tensor operations on batches (any device).

Training (as in the paper): random scale (default 0.5-2.1), normalisation (ImageNet mean/std, or
another convention of :data:`NORMALIZATIONS`),
padding to the crop size where the scaled image is smaller (image padded with 0 after
normalisation, i.e. with the mean colour; label padded with 255 = ignore), random crop, random
horizontal flip. The image is resized bilinearly and the label with ``nearest-exact`` (pixel
centres aligned with the bilinear resize), so image and label stay aligned.

Every random number comes from the ``torch.Generator`` passed in (a CPU generator; the numbers
are drawn on the CPU and the pixels move on the batch's device), so a seed fixes the result.
Parameters are drawn per image. Images of a batch must share one size before augmentation;
for variable-size data sets use :class:`ItemAugment`, the per-item path with the same maths.

Normalisation conventions (``data.normalize`` in a configuration, :func:`get_normalization`):

* ``"imagenet"`` (the default): RGB in [0, 1], minus the ImageNet mean, divided by its std;
* ``"caffe_bgr"``: the SKD authors' input: BGR pixels in 0-255 minus (104.01, 116.67, 122.68), no
  division (their released networks expect it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from skdlib.data.base import IGNORE_INDEX

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: The authors' mean: BGR order, pixels in 0-255 (Caffe's ImageNet mean, their ``IMG_MEAN``).
CAFFE_BGR_MEAN: tuple[float, float, float] = (104.00698793, 116.66876762, 122.67891434)


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair; ``ValueError`` naming ``name`` otherwise."""
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise ValueError(f"{name} must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def _check_batch(images: torch.Tensor, labels: torch.Tensor | None) -> None:
    """``ValueError`` unless images are ``(N, 3, H, W)`` floats and labels ``(N, H, W)`` on the same
    device."""
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float tensor (N, 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if labels is None:
        return
    if (
        labels.ndim != 3
        or labels.shape[0] != images.shape[0]
        or labels.shape[1:] != images.shape[2:]
    ):
        raise ValueError(
            "labels must be (N, H, W) matching images (N, 3, H, W); got labels "
            f"{tuple(labels.shape)} and images {tuple(images.shape)}"
        )
    if labels.device != images.device:
        raise ValueError(f"images are on {images.device} but labels on {labels.device}")


@dataclass(frozen=True)
class Normalization:
    """An input convention: ``((images * scale)[channels] - mean) / std`` per channel.

    Attributes:
        mean, std: per channel of the *output* order, in the output's pixel scale.
        scale: the ``[0, 1]`` pixels are multiplied by it first (255: 8-bit values).
        bgr: reverse the channels (RGB -> BGR) before subtracting the mean.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0
    bgr: bool = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise ``(N, 3, H, W)`` RGB images in [0, 1]; same shape out."""
        _check_batch(images, None)
        m, s = self._stats(images)
        x = images * self.scale if self.scale != 1.0 else images
        if self.bgr:
            x = x.flip(1)  # (N, 3, H, W): RGB -> BGR
        return (x - m) / s

    def invert(self, images: torch.Tensor) -> torch.Tensor:
        """Inverse of the call: RGB in [0, 1] again (for display)."""
        _check_batch(images, None)
        m, s = self._stats(images)
        x = images * s + m
        if self.bgr:
            x = x.flip(1)  # (N, 3, H, W): BGR -> RGB
        return x / self.scale if self.scale != 1.0 else x

    def _stats(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kw = {"dtype": images.dtype, "device": images.device}
        m = torch.as_tensor(self.mean, **kw).view(1, 3, 1, 1)  # (3,) -> (1, 3, 1, 1)
        s = torch.as_tensor(self.std, **kw).view(1, 3, 1, 1)  # (3,) -> (1, 3, 1, 1)
        return m, s


#: The named conventions ``data.normalize`` chooses from.
NORMALIZATIONS: dict[str, Normalization] = {
    "imagenet": Normalization(),
    "caffe_bgr": Normalization(CAFFE_BGR_MEAN, (1.0, 1.0, 1.0), scale=255.0, bgr=True),
}


def _triple(values: Sequence[float], name: str) -> tuple[float, float, float]:
    """Three per-channel values; ``ValueError`` naming ``name`` otherwise."""
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (one per channel), got {values!r}")
    return (float(values[0]), float(values[1]), float(values[2]))


def get_normalization(name: str) -> Normalization:
    """The convention ``name`` of :data:`NORMALIZATIONS`; ``ValueError`` listing them otherwise."""
    if name not in NORMALIZATIONS:
        raise ValueError(
            f"unknown normalisation {name!r}; valid names: {', '.join(NORMALIZATIONS)}"
        )
    return NORMALIZATIONS[name]


def normalize(
    images: torch.Tensor,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """``(images - mean) / std`` per channel; images ``(N, 3, H, W)`` in [0, 1], same shape out."""
    return Normalization(_triple(mean, "mean"), _triple(std, "std"))(images)


def denormalize(
    images: torch.Tensor,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Inverse of :func:`normalize` (for display)."""
    return Normalization(_triple(mean, "mean"), _triple(std, "std")).invert(images)


def _convention(
    mean: Sequence[float], std: Sequence[float], normalization: str | None
) -> Normalization:
    """A named convention, or the plain ``(x - mean) / std`` of RGB [0, 1] pixels."""
    if normalization is not None:
        return get_normalization(normalization)
    return Normalization(_triple(mean, "mean"), _triple(std, "std"))


class EvalTransform:
    """Normalisation only: ``(images, labels, generator=None) -> (normalised images, labels)``.

    ``normalization`` names a convention of :data:`NORMALIZATIONS` (then ``mean`` and ``std``
    are not used).
    """

    def __init__(
        self,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        normalization: str | None = None,
    ) -> None:
        self.normalization = _convention(mean, std, normalization)
        self.mean, self.std = self.normalization.mean, self.normalization.std

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(images, labels)
        return self.normalization(images), labels


class TrainAugment:
    """Random scale, pad, random crop, random flip and normalisation of a batch.

    Args:
        crop_size: output ``(H, W)`` (or one int for a square crop).
        scale_range: ``(low, high)``; each image is scaled by ``s ~ U(low, high)``.
        flip: flip each image horizontally with probability 1/2.
        mean, std: normalisation (default ImageNet).
        pad_value: image padding value *after* normalisation (0 = the mean colour).
        normalization: a convention of :data:`NORMALIZATIONS` by name (``"caffe_bgr"``: the
            authors' BGR 0-255 input), used instead of ``mean`` and ``std``.

    Call: ``(images (N, 3, H, W) float in [0, 1], labels (N, H, W) int64, generator)`` ->
    ``(images (N, 3, h, w) normalised, labels (N, h, w))`` with ``(h, w) = crop_size``, on the
    batch's device.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        *,
        scale_range: Sequence[float] = (0.5, 2.1),
        flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        pad_value: float = 0.0,
        normalization: str | None = None,
    ) -> None:
        self.crop_size = _pair(crop_size, "crop_size")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(
                f"scale_range must be (low, high) with 0 < low <= high, got {scale_range!r}"
            )
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.flip = flip
        self.normalization = _convention(mean, std, normalization)
        self.mean, self.std = self.normalization.mean, self.normalization.std
        self.pad_value = pad_value

    def sample_params(
        self, n: int, height: int, width: int, generator: torch.Generator
    ) -> list[dict[str, Any]]:
        """Per-image parameters: scaled size, crop offsets (in the padded scaled image), flip."""
        low, high = self.scale_range
        scales = low + (high - low) * torch.rand(n, generator=generator)  # (N,)
        flips = torch.rand(n, generator=generator) < 0.5  # (N,)
        offsets = torch.rand(n, 2, generator=generator)  # (N, 2): fractions of the free room
        ch, cw = self.crop_size
        params = []
        for i in range(n):
            sh, sw = (
                max(1, round(height * float(scales[i]))),
                max(1, round(width * float(scales[i]))),
            )
            ph, pw = max(sh, ch), max(sw, cw)
            top = int(float(offsets[i, 0]) * (ph - ch + 1))
            left = int(float(offsets[i, 1]) * (pw - cw + 1))
            params.append(
                {
                    "size": (sh, sw),
                    "top": min(top, ph - ch),
                    "left": min(left, pw - cw),
                    "flip": bool(flips[i]) and self.flip,
                }
            )
        return params

    def apply(
        self, images: torch.Tensor, labels: torch.Tensor, params: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply given per-image parameters (from :meth:`sample_params`)."""
        _check_batch(images, labels)
        if len(params) != images.shape[0]:
            raise ValueError(
                f"got {len(params)} parameter sets for a batch of {images.shape[0]} images"
            )
        ch, cw = self.crop_size
        images = self.normalization(images)
        out_images, out_labels = [], []
        for i, p in enumerate(params):
            sh, sw = p["size"]
            img = F.interpolate(
                images[i : i + 1], size=(sh, sw), mode="bilinear", align_corners=False
            )  # (1, 3, sh, sw)
            lab = F.interpolate(
                labels[i : i + 1, None].float(), size=(sh, sw), mode="nearest-exact"
            )  # (1, 1, sh, sw)
            lab = lab[:, 0].long()  # (1, 1, sh, sw) -> (1, sh, sw)
            pad_h, pad_w = max(ch - sh, 0), max(cw - sw, 0)
            if pad_h or pad_w:
                img = F.pad(img, (0, pad_w, 0, pad_h), value=self.pad_value)  # (1, 3, ph, pw)
                lab = F.pad(lab, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)  # (1, ph, pw)
            top, left = p["top"], p["left"]
            img = img[..., top : top + ch, left : left + cw]  # (1, 3, ch, cw)
            lab = lab[..., top : top + ch, left : left + cw]  # (1, ch, cw)
            if p["flip"]:
                img, lab = img.flip(-1), lab.flip(-1)
            out_images.append(img)
            out_labels.append(lab)
        return torch.cat(out_images), torch.cat(out_labels).to(labels.dtype)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(images, labels)
        params = self.sample_params(images.shape[0], images.shape[2], images.shape[3], generator)
        return self.apply(images, labels, params)


class ItemAugment:
    """The per-item CPU path: :class:`TrainAugment` (or :class:`EvalTransform`) on one item dict.

    Use it as a data set's ``transform`` for data sets whose images differ in size. Its generator
    is seeded from ``seed`` and the DataLoader worker id on first use, so a run is reproducible
    for a given seed and number of workers.
    """

    def __init__(self, augment: TrainAugment | EvalTransform, *, seed: int = 0) -> None:
        self.augment = augment
        self.seed = seed
        self._generator: torch.Generator | None = None

    def _gen(self) -> torch.Generator:
        if self._generator is None:
            info = torch.utils.data.get_worker_info()
            worker = 0 if info is None else info.id + 1
            self._generator = torch.Generator().manual_seed(self.seed * 1000003 + worker)
        return self._generator

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        images, labels = self.augment(
            item["image"][None], item["label"][None], self._gen()
        )  # add batch dim
        return {**item, "image": images[0], "label": labels[0]}
