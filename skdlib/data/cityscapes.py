"""Cityscapes (fine annotations), read from the official layout.

Layout::

    <root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The ``labelIds`` files hold the 34 Cityscapes label ids; they are mapped to the 19 training ids
with the official table (:data:`LABELS`), every other id to 255 (ignore).
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import numpy as np

from skdlib.data.base import (
    IGNORE_INDEX,
    INVALID,
    LUT_SIZE,
    DataError,
    Sample,
    SegmentationDataset,
    Transform,
    as_path,
    check_split,
)

logger = logging.getLogger(__name__)


class CityscapesLabel(NamedTuple):
    """One row of the official Cityscapes label table."""

    id: int
    name: str
    train_id: int  # 255 = ignored in training and evaluation
    color: tuple[int, int, int]


# The official table (id, name, trainId, colour). License plate (id -1) never occurs in labelIds.
LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel(0, "unlabeled", 255, (0, 0, 0)),
    CityscapesLabel(1, "ego vehicle", 255, (0, 0, 0)),
    CityscapesLabel(2, "rectification border", 255, (0, 0, 0)),
    CityscapesLabel(3, "out of roi", 255, (0, 0, 0)),
    CityscapesLabel(4, "static", 255, (0, 0, 0)),
    CityscapesLabel(5, "dynamic", 255, (111, 74, 0)),
    CityscapesLabel(6, "ground", 255, (81, 0, 81)),
    CityscapesLabel(7, "road", 0, (128, 64, 128)),
    CityscapesLabel(8, "sidewalk", 1, (244, 35, 232)),
    CityscapesLabel(9, "parking", 255, (250, 170, 160)),
    CityscapesLabel(10, "rail track", 255, (230, 150, 140)),
    CityscapesLabel(11, "building", 2, (70, 70, 70)),
    CityscapesLabel(12, "wall", 3, (102, 102, 156)),
    CityscapesLabel(13, "fence", 4, (190, 153, 153)),
    CityscapesLabel(14, "guard rail", 255, (180, 165, 180)),
    CityscapesLabel(15, "bridge", 255, (150, 100, 100)),
    CityscapesLabel(16, "tunnel", 255, (150, 120, 90)),
    CityscapesLabel(17, "pole", 5, (153, 153, 153)),
    CityscapesLabel(18, "polegroup", 255, (153, 153, 153)),
    CityscapesLabel(19, "traffic light", 6, (250, 170, 30)),
    CityscapesLabel(20, "traffic sign", 7, (220, 220, 0)),
    CityscapesLabel(21, "vegetation", 8, (107, 142, 35)),
    CityscapesLabel(22, "terrain", 9, (152, 251, 152)),
    CityscapesLabel(23, "sky", 10, (70, 130, 180)),
    CityscapesLabel(24, "person", 11, (220, 20, 60)),
    CityscapesLabel(25, "rider", 12, (255, 0, 0)),
    CityscapesLabel(26, "car", 13, (0, 0, 142)),
    CityscapesLabel(27, "truck", 14, (0, 0, 70)),
    CityscapesLabel(28, "bus", 15, (0, 60, 100)),
    CityscapesLabel(29, "caravan", 255, (0, 0, 90)),
    CityscapesLabel(30, "trailer", 255, (0, 0, 110)),
    CityscapesLabel(31, "train", 16, (0, 80, 100)),
    CityscapesLabel(32, "motorcycle", 17, (0, 0, 230)),
    CityscapesLabel(33, "bicycle", 18, (119, 11, 32)),
)
NUM_CLASSES = 19
SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def _train_labels() -> list[CityscapesLabel]:
    """The 19 training classes, ordered by train id."""
    return sorted(
        (label for label in LABELS if label.train_id != IGNORE_INDEX),
        key=lambda label: label.train_id,
    )


def cityscapes_class_names() -> list[str]:
    """The 19 training-class names, by train id."""
    return [label.name for label in _train_labels()]


def cityscapes_palette() -> list[tuple[int, int, int]]:
    """The 19 training-class colours, by train id."""
    return [label.color for label in _train_labels()]


def cityscapes_label_id_to_train_id() -> np.ndarray:
    """Lookup table ``(256,)`` int16: label id -> train id (ignored ids -> 255, ids > 33 invalid,
    255 -> 255)."""
    lut = np.full(LUT_SIZE, INVALID, dtype=np.int16)
    for label in LABELS:
        lut[label.id] = label.train_id
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def cityscapes_train_id_to_label_id() -> np.ndarray:
    """Lookup table ``(256,)`` uint8: train id -> label id (for exporting predictions to the
    official evaluation); 255 and unused entries -> 0 (unlabeled)."""
    lut = np.zeros(LUT_SIZE, dtype=np.uint8)
    for label in _train_labels():
        lut[label.train_id] = label.id
    return lut


class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine annotations, 19 classes (see the module docstring for the layout)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        check_split(split, SPLITS, "Cityscapes")
        root = as_path(root)
        expected = (
            f"{root}/leftImg8bit/{split}/<city>/*{IMAGE_SUFFIX} with labels "
            f"{root}/gtFine/{split}/<city>/*{LABEL_SUFFIX}"
        )
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        for directory in (image_dir, label_dir):
            if not directory.is_dir():
                raise DataError(f"directory not found: {directory}; expected {expected}")
        samples = []
        for image in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")):
            stem = image.name[: -len(IMAGE_SUFFIX)]
            label = label_dir / image.parent.name / f"{stem}{LABEL_SUFFIX}"
            if not label.is_file():
                if not skip_bad:
                    raise DataError(f"no label {label} for image {image}; expected {expected}")
                logger.warning("skipping image %s: no label %s", image, label)
                continue
            samples.append(Sample(image=image, label=label, name=stem))
        if not samples:
            raise DataError(
                f"empty split: no image/label pairs under {image_dir}; expected {expected}"
            )
        super().__init__(
            samples,
            class_names=cityscapes_class_names(),
            palette=cityscapes_palette(),
            label_lut=cityscapes_label_id_to_train_id(),
            transform=transform,
            skip_bad=skip_bad,
            description=expected,
        )
