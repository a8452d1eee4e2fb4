"""ADE20K (the SceneParsing benchmark, 150 classes).

Layout::

    <root>/ADEChallengeData2016/images/{training,validation}/*.jpg
    <root>/ADEChallengeData2016/annotations/{training,validation}/*.png   (same stems)

(``root`` may also be the ``ADEChallengeData2016`` folder itself.) Annotation value 0 ("other")
-> 255 (ignore); value ``k`` in 1..150 -> class ``k - 1``. Splits: ``train`` (= ``training``) and
``val`` (= ``validation``). The palette is the Pascal VOC bit colour map, not an official one.
"""

from __future__ import annotations

import os

import numpy as np

from skdlib.data.base import (
    IGNORE_INDEX,
    INVALID,
    LUT_SIZE,
    SegmentationDataset,
    Transform,
    as_path,
    bit_palette,
    check_split,
    pair_by_stem,
)

CLASS_NAMES: tuple[str, ...] = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)
SPLIT_DIRS = {
    "train": "training",
    "val": "validation",
    "training": "training",
    "validation": "validation",
}


def ade20k_label_lut() -> np.ndarray:
    """Lookup table ``(256,)``: 0 -> 255, ``k`` in 1..150 -> ``k - 1``, 255 -> 255, anything else
    invalid."""
    lut = np.full(LUT_SIZE, INVALID, dtype=np.int16)
    lut[0] = IGNORE_INDEX
    lut[1 : len(CLASS_NAMES) + 1] = np.arange(len(CLASS_NAMES))
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


class ADE20KDataset(SegmentationDataset):
    """ADE20K SceneParsing, 150 classes (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        check_split(split, SPLIT_DIRS, "ADE20K")
        root = as_path(root)
        base = root if root.name == "ADEChallengeData2016" else root / "ADEChallengeData2016"
        sub = SPLIT_DIRS[split]
        expected = (
            f"{base}/images/{sub}/*.jpg with labels {base}/annotations/{sub}/*.png (same stems)"
        )
        samples = pair_by_stem(
            base / "images" / sub,
            base / "annotations" / sub,
            image_suffixes=(".jpg", ".jpeg", ".png"),
            label_suffix=".png",
            skip_bad=skip_bad,
            expected=expected,
        )
        super().__init__(
            samples,
            class_names=CLASS_NAMES,
            palette=bit_palette(len(CLASS_NAMES) + 1)[1:],
            label_lut=ade20k_label_lut(),
            transform=transform,
            skip_bad=skip_bad,
            description=expected,
        )
