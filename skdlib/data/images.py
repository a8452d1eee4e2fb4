"""Images without labels: the unlabeled stream of distillation (``build_dataset("images", ...)``).

The distillation terms need no labels, so any folder of images can add to what the student learns
from the teacher. This data set reads images only; it never opens a label file, even where a
label folder sits beside the images. Images are looked for, in this order, in the first folder
that exists:

    <root>/<split>/images/      (the embedded data set's layout: its labels are not read)
    <root>/images/<split>/      (the plain-folder layout of :mod:`skdlib.data.folder`)
    <root>/<split>/
    <root>/

with the extensions ``.png``, ``.jpg`` and ``.jpeg`` (not recursive), sorted by name. Items carry
an all-ignore label (255 everywhere), so they batch and augment like labelled items and a task
loss over them counts nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from skdlib.data.base import IGNORE_INDEX, DataError, Transform, as_path, load_readable, read_rgb

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "find_image_folder"]


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def find_image_folder(root: Path, split: str) -> Path:
    """The first existing folder among the layouts in the module docstring; DataError if none has
    images."""
    candidates = [root / split / "images", root / "images" / split, root / split, root]
    for folder in candidates:
        if folder.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir()):
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"no images ({'/'.join(IMAGE_EXTENSIONS)}) found for split {split!r}; looked in {tried}"
    )


class ImageFolderDataset(Dataset):
    """Unlabeled images from a folder (see the module docstring for where they are looked for).

    Args:
        root: the folder.
        split: the split's name (a sub-folder, if the layout has one).
        transform: callable on the item dict.
        skip_bad: skip unreadable images with a logged warning instead of raising.
    """

    ignore_index: int = IGNORE_INDEX
    class_names: ClassVar[list[str]] = []
    palette: ClassVar[list[tuple[int, int, int]]] = []
    num_classes: int = 0

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        root_path = as_path(root)
        self.folder = find_image_folder(root_path, split)
        self.files = sorted(
            p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
        )
        self.transform = transform
        self.skip_bad = skip_bad
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> dict:
        """Read image ``index``: ``image`` float32 ``(3, H, W)`` in [0, 1], an all-ignore
        ``label``."""
        path = self.files[index]
        image = read_rgb(path)  # (H, W, 3) uint8; raises naming the file
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(
            2, 0, 1
        )  # (H, W, 3) -> (3, H, W)
        height, width = image.shape[:2]
        return {
            "image": image_t.to(torch.float32).div_(255.0),
            "label": torch.full((height, width), IGNORE_INDEX, dtype=torch.int64),
            "name": path.stem,
        }

    def __getitem__(self, index: int) -> dict:
        item = load_readable(
            index,
            len(self),
            self.load,
            bad=self._bad,
            skip_bad=self.skip_bad,
            name=lambda i: str(self.files[i]),
            nothing_left=f"every image in {self.folder} is unreadable",
        )
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return f"ImageFolderDataset({len(self)} images in {self.folder})"
