"""Pascal VOC 2012 segmentation, 21 classes (background + 20), with the augmented set if present.

Layout::

    <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2012/SegmentationClass/<id>.png  palette PNG; index 255 = border (ignore)
    <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt  one id per line

(``root`` may also be the ``VOC2012`` folder itself.) The augmented training set (SBD labels
converted to PNG) is read for ``split="train_aug"``: ids from
``ImageSets/Segmentation/train_aug.txt``, labels from ``SegmentationClassAug/<id>.png``
(single-channel or palette PNGs with class ids 0..20, 255 = ignore). Other splits always read
``SegmentationClass``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from skdlib.data.base import (
    DataError,
    Sample,
    SegmentationDataset,
    Transform,
    as_path,
    bit_palette,
    check_split,
    identity_lut,
)

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
SPLITS = ("train", "val", "trainval", "train_aug")


def _voc_base(root: Path) -> Path:
    if root.name == "VOC2012":
        return root
    return root / "VOCdevkit" / "VOC2012"


class VOCDataset(SegmentationDataset):
    """Pascal VOC 2012 (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        check_split(split, SPLITS, "VOC")
        base = _voc_base(as_path(root))
        label_dir = base / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
        list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        expected = f"{base}/JPEGImages/<id>.jpg, {label_dir}/<id>.png and the id list {list_file}"
        if not list_file.is_file():
            raise DataError(f"split list not found: {list_file}; expected {expected}")
        for directory in (base / "JPEGImages", label_dir):
            if not directory.is_dir():
                raise DataError(f"directory not found: {directory}; expected {expected}")
        ids = [
            line.strip().split()[0] for line in list_file.read_text().splitlines() if line.strip()
        ]
        samples = []
        for name in ids:
            image, label = base / "JPEGImages" / f"{name}.jpg", label_dir / f"{name}.png"
            missing = [p for p in (image, label) if not p.is_file()]
            if missing:
                message = (
                    f"id {name!r} listed in {list_file} but missing {', '.join(map(str, missing))}"
                )
                if not skip_bad:
                    raise DataError(message)
                logger.warning("skipping: %s", message)
                continue
            samples.append(Sample(image=image, label=label, name=name))
        if not samples:
            raise DataError(f"empty split: {list_file} lists no readable ids; expected {expected}")
        super().__init__(
            samples,
            class_names=CLASS_NAMES,
            palette=bit_palette(len(CLASS_NAMES)),
            label_lut=identity_lut(len(CLASS_NAMES)),
            transform=transform,
            skip_bad=skip_bad,
            description=expected,
        )
