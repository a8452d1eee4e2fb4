"""CamVid in the SegNet layout, 11 classes.

Layout::

    <root>/{train,val,test}/*.png        RGB images
    <root>/{train,val,test}annot/*.png   same file names, class ids 0..10, 11 = void (-> 255)
"""

from __future__ import annotations

import os

import numpy as np

from skdlib.data.base import (
    IGNORE_INDEX,
    SegmentationDataset,
    Transform,
    as_path,
    check_split,
    identity_lut,
    pair_by_stem,
)

CLASS_NAMES: tuple[str, ...] = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign_symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
VOID_ID = len(CLASS_NAMES)  # 11 in the annotation files
SPLITS = ("train", "val", "test")


def camvid_label_lut() -> np.ndarray:
    """Lookup table ``(256,)``: 0..10 -> themselves, 11 (void) and 255 -> 255, anything else
    invalid."""
    lut = identity_lut(len(CLASS_NAMES))
    lut[VOID_ID] = IGNORE_INDEX
    return lut


class CamVidDataset(SegmentationDataset):
    """CamVid, SegNet layout (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        check_split(split, SPLITS, "CamVid")
        root = as_path(root)
        expected = f"{root}/{split}/*.png with labels {root}/{split}annot/*.png (same file names)"
        samples = pair_by_stem(
            root / split,
            root / f"{split}annot",
            image_suffixes=(".png",),
            label_suffix=".png",
            skip_bad=skip_bad,
            expected=expected,
        )
        super().__init__(
            samples,
            class_names=CLASS_NAMES,
            palette=PALETTE,
            label_lut=camvid_label_lut(),
            transform=transform,
            skip_bad=skip_bad,
            description=expected,
        )
