"""Data: the embedded generated data set, real data-set loaders, transforms, loaders.

One way in: :func:`build_dataset` (``"embedded"``, ``"cityscapes"``, ``"camvid"``, ``"ade20k"``,
``"voc"``, ``"folder"``, and ``"images"``: images without labels, for the unlabeled stream of
distillation). Items are dicts ``{"image": float32 (3, H, W) in [0, 1], "label": int64
(H, W) with 255 = ignore, "name": str}``; every data set has ``class_names``, ``palette``,
``num_classes`` and ``ignore_index = 255``. Importing this package does no work.
"""

from __future__ import annotations

import os
from typing import Any

from skdlib.data.ade20k import ADE20KDataset
from skdlib.data.base import IGNORE_INDEX, DataError, SegmentationDataset
from skdlib.data.camvid import CamVidDataset
from skdlib.data.cityscapes import CityscapesDataset, cityscapes_train_id_to_label_id
from skdlib.data.embedded import EmbeddedDataset
from skdlib.data.folder import FolderDataset
from skdlib.data.generate import ensure_embedded, generate_embedded
from skdlib.data.images import ImageFolderDataset
from skdlib.data.loader import make_loader
from skdlib.data.transforms import (
    NORMALIZATIONS,
    EvalTransform,
    ItemAugment,
    Normalization,
    TrainAugment,
    get_normalization,
)
from skdlib.data.voc import VOCDataset

DATASETS: dict[str, type[SegmentationDataset] | type[ImageFolderDataset]] = {
    "embedded": EmbeddedDataset,
    "cityscapes": CityscapesDataset,
    "camvid": CamVidDataset,
    "ade20k": ADE20KDataset,
    "voc": VOCDataset,
    "folder": FolderDataset,
    "images": ImageFolderDataset,
}


def build_dataset(
    name: str, root: str | os.PathLike[str], split: str, **options: Any
) -> SegmentationDataset | ImageFolderDataset:
    """The data set ``name`` under ``root``, split ``split``.

    Options common to all: ``transform`` (callable on the item dict) and ``skip_bad`` (skip
    unreadable items with a logged warning). ``embedded`` also takes ``generate`` and the
    generator options (``seed``, ``height``, ``width``, ``num_train``, ``num_val``).
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {sorted(DATASETS)}")
    return DATASETS[key](root, split, **options)


__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "NORMALIZATIONS",
    "ADE20KDataset",
    "CamVidDataset",
    "CityscapesDataset",
    "DataError",
    "EmbeddedDataset",
    "EvalTransform",
    "FolderDataset",
    "ImageFolderDataset",
    "ItemAugment",
    "Normalization",
    "SegmentationDataset",
    "TrainAugment",
    "VOCDataset",
    "build_dataset",
    "cityscapes_train_id_to_label_id",
    "ensure_embedded",
    "generate_embedded",
    "get_normalization",
    "make_loader",
]
