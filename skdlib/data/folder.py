"""A plain folder layout for your own data.

Layout::

    <root>/classes.txt                 one class per line: "name" or "name R G B" (palette optional)
    <root>/images/<split>/*.png|*.jpg  RGB images
    <root>/labels/<split>/<stem>.png   single-channel PNG, class ids 0..K-1, 255 = ignore

Lines of ``classes.txt`` that are empty or start with ``#`` are skipped. Without colours the
Pascal VOC bit colour map is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from skdlib.constants import IGNORE_INDEX
from skdlib.data.base import (
    DataError,
    SegmentationDataset,
    Transform,
    as_path,
    bit_palette,
    identity_lut,
    pair_by_stem,
)


def read_classes(path: Path) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and palette from a ``classes.txt``."""
    if not path.is_file():
        raise FileNotFoundError(f"class list not found: {path}; expected one class name per line")
    names: list[str] = []
    colours: list[tuple[int, int, int] | None] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 4 and all(p.isdigit() for p in parts[-3:]):
            rgb = tuple(int(p) for p in parts[-3:])
            if any(v > 255 for v in rgb):
                raise DataError(f"{path}:{number}: colour values must be 0..255, got {rgb}")
            names.append(" ".join(parts[:-3]))
            colours.append(rgb)  # type: ignore[arg-type]
        else:
            names.append(line)
            colours.append(None)
    if not names:
        raise DataError(f"{path} lists no classes")
    if len(names) >= IGNORE_INDEX:
        raise DataError(
            f"{path} lists {len(names)} classes; at most 254 fit in a uint8 label with 255 = ignore"
        )
    fallback = bit_palette(len(names))
    palette = [c if c is not None else fallback[i] for i, c in enumerate(colours)]
    return names, palette


class FolderDataset(SegmentationDataset):
    """Images and labels in ``<root>/images/<split>`` and ``<root>/labels/<split>`` (see the module
    docstring)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        root = as_path(root)
        names, palette = read_classes(root / "classes.txt")
        expected = f"{root}/images/{split}/*.png|*.jpg with labels {root}/labels/{split}/<stem>.png"
        samples = pair_by_stem(
            root / "images" / split,
            root / "labels" / split,
            image_suffixes=(".png", ".jpg", ".jpeg"),
            label_suffix=".png",
            skip_bad=skip_bad,
            expected=expected,
        )
        super().__init__(
            samples,
            class_names=names,
            palette=palette,
            label_lut=identity_lut(len(names)),
            transform=transform,
            skip_bad=skip_bad,
            description=expected,
        )
