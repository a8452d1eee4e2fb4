"""Does a data set need context? A per-pixel classifier against a small network with context.

This is a measurement tool, not a student: it trains, on the train split of a data set,

(a) a per-pixel 1x1 classifier: logistic regression on the RGB of each pixel (and a tiny MLP on
    the same three numbers, the best any per-pixel colour rule can do in practice);
(b) :class:`ContextProbeNet`, a few dilated 3x3 convolutions (receptive field about 120 pixels),

and reports the val mIoU of each. If colour alone gave the labels, (a) would match (b); the
embedded data set is built so that it does not (see :mod:`skdlib.data.generate`).
The scores come from :func:`skdlib.metrics.confusion_matrix` and
:func:`skdlib.metrics.segmentation_scores`, as every score of the book.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from skdlib.data.base import IGNORE_INDEX
from skdlib.data.embedded import EmbeddedDataset
from skdlib.metrics import confusion_matrix, segmentation_scores
from skdlib.train.build import torch_threads

logger = logging.getLogger(__name__)


class ContextProbeNet(nn.Module):
    """A small fully convolutional network with context (measurement probe, not a student).

    Input ``(N, 3, H, W)`` standardised RGB; it works at ``1/downsample`` resolution (average
    pooling), applies 3x3 convolutions with dilations ``dilations`` (``width`` channels, batch
    norm, ReLU), a 1x1 classifier and bilinear upsampling back to ``(N, K, H, W)``. With the
    defaults its receptive field is about 125 input pixels.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        width: int = 32,
        dilations: tuple[int, ...] = (1, 2, 4, 8),
        downsample: int = 4,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for dilation in dilations:
            layers += [
                nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        h = F.avg_pool2d(x, self.downsample, ceil_mode=True)  # (N, 3, H, W) -> (N, 3, H/d, W/d)
        h = self.classifier(self.body(h))  # (N, K, H/d, W/d)
        return F.interpolate(h, size=size, mode="bilinear", align_corners=False)  # (N, K, H, W)


class _PerPixel(nn.Module):
    """Applies a model on RGB vectors ``(P, 3) -> (P, K)`` to every pixel of ``(N, 3, H, W)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x.permute(0, 2, 3, 1))  # (N, 3, H, W) -> (N, H, W, 3) -> (N, H, W, K)
        return out.permute(0, 3, 1, 2)  # (N, H, W, K) -> (N, K, H, W)


def _pixel_linear(num_classes: int) -> nn.Module:
    """Logistic regression on a pixel's RGB."""
    return nn.Linear(3, num_classes)


def _pixel_mlp(num_classes: int, hidden: int = 64) -> nn.Module:
    """A tiny MLP on a pixel's RGB."""
    return nn.Sequential(
        nn.Linear(3, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _load(dataset: EmbeddedDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All items stacked: images ``(N, 3, H, W)`` uint8 and labels ``(N, H, W)`` int64."""
    images, labels = [], []
    for index in range(len(dataset)):
        item = dataset[index]
        images.append((item["image"] * 255).round().to(torch.uint8))
        labels.append(item["label"])
    return torch.stack(images), torch.stack(labels)


def _evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    num_classes: int,
    device: torch.device,
    batch: int = 16,
) -> torch.Tensor:
    """Per-class val IoU ``(K,)`` float64 of ``model`` (NaN for a class absent from both the
    labels and the predictions)."""
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = (images[start : start + batch].to(device).float() / 255 - mean) / std
            pred = model(x).argmax(1).cpu()  # (B, H, W)
            conf += confusion_matrix(pred, labels[start : start + batch], num_classes)
    return torch.tensor(segmentation_scores(conf)["class_iou"], dtype=torch.float64)


def _fit(
    model: nn.Module, sample: Any, *, iters: int, lr: float, generator: torch.Generator
) -> None:
    """Adam with cosine learning-rate decay; ``sample(generator) -> (inputs, targets)`` draws a
    batch."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1))
    for _ in range(iters):
        x, y = sample(generator)
        loss = F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def _probe_models(k: int, *, seed: int, mlp: bool) -> dict[str, nn.Module]:
    """The probe's models, each seeded alone (the global RNG is left untouched)."""
    builders = {
        "pixel_linear": lambda: _PerPixel(_pixel_linear(k)),
        "pixel_mlp": lambda: _PerPixel(_pixel_mlp(k)),
        "context": lambda: ContextProbeNet(k),
    }
    models: dict[str, nn.Module] = {}
    for name, build in builders.items():
        if name == "pixel_mlp" and not mlp:
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            models[name] = build()
    return models


def pixel_vs_context_probe(
    root: str | os.PathLike[str],
    *,
    iters: int = 300,
    seed: int = 0,
    device: str | torch.device = "cpu",
    pixel_iters: int | None = None,
    batch_size: int = 8,
    pixel_batch_size: int = 4096,
    mlp: bool = True,
) -> dict[str, Any]:
    """Train the per-pixel classifiers and the context probe on ``root``'s train split; val mIoU of
    each.

    Args:
        root: an embedded data set (complete manifest; generated if missing, default options).
        iters: training iterations of the context network (batches of ``batch_size`` images).
        seed: seeds the weights and the batch order.
        device: where to train.
        pixel_iters: iterations of the per-pixel models (default ``iters``).
        batch_size: images per iteration of the context network.
        pixel_batch_size: random train pixels per iteration of the per-pixel models.
        mlp: also train the per-pixel MLP.

    Returns:
        ``{"pixel_linear_miou", "pixel_mlp_miou" (or None), "context_miou", "gap"}`` in percent
        (``gap`` = context minus the best per-pixel model), ``"class_names"``, ``"class_iou"``
        (per model, percent per class), ``"seconds"`` (training time per model), ``"iters"``,
        ``"num_train"``, ``"num_val"``.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    device = torch.device(device)
    train_set, val_set = EmbeddedDataset(root, "train"), EmbeddedDataset(root, "val")
    k = train_set.num_classes
    train_x, train_y = _load(train_set)
    val_x, val_y = _load(val_set)
    pixels = train_x.permute(1, 0, 2, 3).reshape(3, -1).float() / 255  # (N, 3, H, W) -> (3, N*H*W)
    mean = pixels.mean(1).view(1, 3, 1, 1).to(device)  # (3,) -> (1, 3, 1, 1)
    std = pixels.std(1).clamp(min=1e-3).view(1, 3, 1, 1).to(device)  # (3,) -> (1, 3, 1, 1)

    models = _probe_models(k, seed=seed, mlp=mlp)
    flat_x = train_x.permute(0, 2, 3, 1).reshape(-1, 3)  # (N, 3, H, W) -> (N*H*W, 3) uint8
    flat_y = train_y.reshape(-1)  # (N, H, W) -> (N*H*W,)

    def pixel_batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(len(flat_x), (pixel_batch_size,), generator=generator)
        x = (flat_x[pick].to(device).float() / 255 - mean.view(1, 3)) / std.view(1, 3)  # (P, 3)
        return x, flat_y[pick].to(device)  # (P, 3), (P,)

    def image_batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(len(train_x), (batch_size,), generator=generator)
        return (train_x[pick].to(device).float() / 255 - mean) / std, train_y[pick].to(device)

    settings = {
        "pixel_linear": (pixel_iters or iters, 0.05, pixel_batch),
        "pixel_mlp": (pixel_iters or iters, 0.01, pixel_batch),
        "context": (iters, 0.01, image_batch),
    }
    result: dict[str, Any] = {
        "class_names": train_set.class_names,
        "class_iou": {},
        "seconds": {},
        "iters": iters,
        "num_train": len(train_set),
        "num_val": len(val_set),
    }
    for name, model in models.items():
        model.to(device)
        generator = torch.Generator().manual_seed(seed)
        steps, lr, sample = settings[name]
        start = time.perf_counter()
        per_pixel = isinstance(model, _PerPixel)
        # one thread for the per-pixel models: their tiny matrix products only pay
        # synchronisation for more (ten times slower on a busy 2-core machine)
        with torch_threads(1 if per_pixel else None):
            _fit(
                model.net if per_pixel else model, sample, iters=steps, lr=lr, generator=generator
            )  # pixels: (P, 3)
        result["seconds"][name] = time.perf_counter() - start
        iou = _evaluate(model, val_x, val_y, mean, std, k, device)
        result["class_iou"][name] = [float(v) * 100 for v in iou]
        result[f"{name}_miou"] = float(torch.nanmean(iou)) * 100
        logger.info(
            "%s: val mIoU %.1f (%.1f s)", name, result[f"{name}_miou"], result["seconds"][name]
        )
    result.setdefault("pixel_mlp_miou", None)
    best_pixel = max(
        v for v in (result["pixel_linear_miou"], result["pixel_mlp_miou"]) if v is not None
    )
    result["gap"] = result["context_miou"] - best_pixel
    return result


#: A class IoU (percent) below which a model is said not to find the class at all.
NOT_FOUND_IOU = 5.0


def probe_reading(probe: dict[str, Any], *, not_found: float = NOT_FOUND_IOU) -> str:
    """:func:`pixel_vs_context_probe`'s result in words (Markdown): each model's val mIoU, the gap
    for context, the classes no per-pixel model finds (class IoU below ``not_found`` percent for
    every per-pixel model) and the context network's class IoUs, weakest first.

    Raises:
        KeyError: ``probe`` lacks a key :func:`pixel_vs_context_probe` returns.
    """
    names = probe["class_names"]
    pixel_keys = [k for k in ("pixel_linear", "pixel_mlp") if probe.get(f"{k}_miou") is not None]
    best_pixel = [max(probe["class_iou"][k][c] for k in pixel_keys) for c in range(len(names))]
    missed = [n for n, v in zip(names, best_pixel, strict=True) if not v >= not_found]
    context = sorted(zip(names, probe["class_iou"]["context"], strict=True), key=lambda nv: nv[1])
    words = {"pixel_linear": "logistic regression", "pixel_mlp": "the per-pixel MLP"}
    pixel_text = ", ".join(f"{words[k]} **{probe[f'{k}_miou']:.1f}**" for k in pixel_keys)
    lines = [
        f"This run measured {pixel_text} and the context network **{probe['context_miou']:.1f}** "
        f"val mIoU: **{probe['gap']:+.1f} points** for context.",
        "Classes no per-pixel model finds (IoU below "
        f"{not_found:g}): {', '.join(missed) if missed else 'none'}.",
        "The context network, weakest class first: "
        + ", ".join(f"{n} {v:.1f}" for n, v in context)
        + ".",
    ]
    return "\n\n".join(lines)
