"""Small synthetic inputs for the loss chapters and tests: label maps, logits, features, images.

Nothing here is trained. Each function is deterministic given ``seed`` and returns CPU tensors;
move them with ``.to(device)``. The maps are smooth blobs, so similarity and KL maps have visible
structure, unlike white noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def smooth_noise(
    channels: int, height: int, width: int, *, cells: int = 4, seed: int = 0
) -> torch.Tensor:
    """Smooth random fields ``(channels, height, width)``: noise on a coarse grid, upsampled
    bilinearly.

    ``cells`` is the number of grid cells along the shorter side (fewer cells, larger blobs).
    """
    if channels < 1 or height < 1 or width < 1 or cells < 1:
        raise ValueError(
            f"smooth_noise needs positive sizes, got channels={channels}, height={height}, "
            f"width={width}, cells={cells}"
        )
    scale = min(height, width) / cells
    coarse_h, coarse_w = max(2, round(height / scale)), max(2, round(width / scale))
    coarse = torch.randn(1, channels, coarse_h, coarse_w, generator=_generator(seed))
    # (1, C, h, w) -> (1, C, H, W)
    fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    return fine[0]


def toy_label_map(
    height: int, width: int, *, num_classes: int, cells: int = 4, seed: int = 0
) -> torch.Tensor:
    """A label map ``(H, W)`` int64 of smooth class regions: the argmax of ``num_classes`` smooth
    fields."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    fields = smooth_noise(num_classes, height, width, cells=cells, seed=seed)  # (K, H, W)
    return fields.argmax(dim=0)


def toy_logits(
    labels: torch.Tensor,
    num_classes: int,
    *,
    confidence: float = 4.0,
    blur: int = 1,
    noise: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """Logits ``(1, K, H, W)`` of a network that predicts ``labels`` ``(H, W)``.

    ``confidence`` scales the one-hot map, ``blur`` (odd kernel size) softens boundaries as a
    network's logits are soft near edges, ``noise`` adds smooth perturbations (a weaker network).
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be (H, W), got shape {tuple(labels.shape)}")
    if blur < 1 or blur % 2 == 0:
        raise ValueError(f"blur must be a positive odd kernel size, got {blur}")
    height, width = labels.shape
    one_hot = F.one_hot(labels.clamp(0, num_classes - 1), num_classes)  # (H, W, K)
    logits = confidence * one_hot.permute(2, 0, 1).unsqueeze(0).float()  # (1, K, H, W)
    if blur > 1:
        # (1, K, H, W) -> (1, K, H, W): mean over a blur x blur window
        logits = F.avg_pool2d(logits, blur, stride=1, padding=blur // 2, count_include_pad=False)
    if noise > 0:
        logits = logits + noise * smooth_noise(
            num_classes, height, width, cells=6, seed=seed
        ).unsqueeze(0)
    return logits


def toy_features(
    labels: torch.Tensor,
    channels: int,
    *,
    num_classes: int,
    noise: float = 0.1,
    seed: int = 0,
) -> torch.Tensor:
    """Features ``(1, C, H, W)``: one random embedding per class, plus smooth noise.

    Pixels of one class have similar features, so a pixel's affinity map lights up its own region.
    Different ``seed`` or ``channels`` give a different embedding of the same structure (a student
    whose features live in another space but carry the same pair-wise similarities).
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be (H, W), got shape {tuple(labels.shape)}")
    height, width = labels.shape
    gen = _generator(seed)
    embedding = torch.randn(num_classes, channels, generator=gen)  # (K, C)
    feats = embedding[labels.clamp(0, num_classes - 1)]  # (H, W, C)
    feats = feats.permute(2, 0, 1).unsqueeze(0)  # (1, C, H, W)
    if noise > 0:
        feats = feats + noise * smooth_noise(
            channels, height, width, cells=8, seed=seed + 1
        ).unsqueeze(0)
    return feats


def toy_image(
    labels: torch.Tensor, *, num_classes: int, noise: float = 0.05, seed: int = 0
) -> torch.Tensor:
    """An RGB image ``(1, 3, H, W)`` in [0, 1]: one colour per class, plus pixel noise."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be (H, W), got shape {tuple(labels.shape)}")
    gen = _generator(seed)
    colours = torch.rand(num_classes, 3, generator=gen)  # (K, 3)
    image = colours[labels.clamp(0, num_classes - 1)].permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
    image = image + noise * torch.randn(image.shape, generator=gen)
    return image.clamp(0.0, 1.0)


class ConstantCritic(torch.nn.Module):
    """A critic whose score ignores the map: ``D(Q | I) = b`` for every image.

    Its gradient with respect to the map is exactly 0, the case where a square root without an
    epsilon in the gradient penalty gives NaN. Called as ``critic(seg_map, image)`` -> ``(N,)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, seg_map: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        return self.bias.expand(seg_map.shape[0])  # () -> (N,)
