"""The shared data-set class: a list of (image file, label file, name) read with Pillow.

Every data set in :mod:`skdlib.data` is a :class:`SegmentationDataset`; the per-data-set modules
only find the files and say how raw label values map to class ids (a 256-entry lookup table).
Items are dicts::

    {"image": float32 (3, H, W) in [0, 1], "label": int64 (H, W) with 255 = ignore, "name": str}

Normalisation is a transform (:mod:`skdlib.data.transforms`), never done here.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from skdlib.constants import IGNORE_INDEX

logger = logging.getLogger(__name__)

INVALID = -1  # lookup-table entry of a raw label value that is neither a class nor ignore
LUT_SIZE = 256

Item = dict[str, Any]
Transform = Callable[[Item], Item]


class DataError(ValueError):
    """A data file or layout problem; the message names the file or the expected layout."""


@dataclass(frozen=True)
class Sample:
    """One entry of a data set: where its image and label live, and its name."""

    image: Path
    label: Path
    name: str


def identity_lut(num_classes: int) -> np.ndarray:
    """Lookup table ``(256,)`` int16: ``k -> k`` for ``k < num_classes``, 255 -> 255, anything else
    invalid."""
    if not 0 < num_classes < IGNORE_INDEX:
        raise ValueError(f"num_classes must be in 1..254, got {num_classes}")
    lut = np.full(LUT_SIZE, INVALID, dtype=np.int16)
    lut[:num_classes] = np.arange(num_classes)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8; ``FileNotFoundError`` / ``DataError`` name the
    file."""
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return np.array(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image file {path}: {exc}") from exc


def read_label(path: Path) -> np.ndarray:
    """Read a single-channel label PNG (mode ``L`` or palette ``P``) as ``(H, W)`` uint8 raw
    values."""
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P"):
                raise DataError(
                    f"label file {path} has mode {img.mode!r}; expected a single-channel PNG "
                    "(mode 'L' with class ids or palette mode 'P')"
                )
            return np.array(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"cannot decode label file {path}: {exc}") from exc


def merge_classes(
    names: Sequence[str],
    palette: Sequence[tuple[int, int, int]],
    groups: Mapping[str, Sequence[str]],
) -> tuple[list[str], list[tuple[int, int, int]], np.ndarray]:
    """A coarser label set: ``groups`` maps each new class to the classes it merges, in the order
    of the new ids; every class of ``names`` must be in exactly one group. Returns the new names,
    their colours (each group's first member's) and the ``(256,)`` table from the original class
    ids to the new ones (ignore stays ignore).

    Raises:
        ValueError: a class in no group or in two, an unknown class name, an empty group.
    """
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError(f"class_groups: expected a non-empty mapping, got {groups!r}")
    lut = np.full(LUT_SIZE, INVALID, dtype=np.int16)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    new_palette = []
    for new_id, (group, members) in enumerate(groups.items()):
        if isinstance(members, str) or not members:
            raise ValueError(f"class_groups.{group}: expected a list of class names")
        for member in members:
            if member not in names:
                raise ValueError(f"class_groups.{group}: unknown class {member!r}; known: {names}")
            old = names.index(member)
            if lut[old] != INVALID:
                raise ValueError(f"class_groups: {member!r} is in two groups")
            lut[old] = new_id
        new_palette.append(tuple(palette[names.index(members[0])]))
    missing = [n for k, n in enumerate(names) if lut[k] == INVALID]
    if missing:
        raise ValueError(f"class_groups: the classes {missing} are in no group")
    return list(groups), new_palette, lut


class SegmentationDataset(Dataset):
    """A list of samples plus the class set; ``__getitem__`` reads, checks and maps one item.

    Args:
        samples: the files, in a fixed order.
        class_names: one name per class id ``0..K-1``.
        palette: one RGB colour per class.
        label_lut: ``(256,)`` integer table from raw label value to class id (255 = ignore,
            -1 = a value that must not occur; reading it raises ``DataError``).
        transform: callable on the item dict (after reading), e.g. a per-item augmentation.
        skip_bad: when reading an item fails (missing or corrupt file, size mismatch, label values
            outside the class set), log a warning and return the next readable item instead of
            raising.
        description: the layout, for error messages (``"<root>/train/images/*.png"``).
    """

    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        class_names: Sequence[str],
        palette: Sequence[tuple[int, int, int]],
        label_lut: np.ndarray,
        transform: Transform | None = None,
        skip_bad: bool = False,
        description: str = "",
    ) -> None:
        if len(samples) == 0:
            raise DataError(
                f"empty split: no samples found; expected {description or 'at least one image'}"
            )
        if len(palette) != len(class_names):
            raise ValueError(f"palette has {len(palette)} colours for {len(class_names)} classes")
        if label_lut.shape != (LUT_SIZE,):
            raise ValueError(f"label_lut must have shape (256,), got {tuple(label_lut.shape)}")
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.palette = [tuple(int(v) for v in colour) for colour in palette]
        self.label_lut = label_lut.astype(np.int16)
        self.transform = transform
        self.skip_bad = skip_bad
        self.description = description
        self._bad: set[int] = set()
        self._decoded: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
        self._decoded_budget = self._decoded_bytes = 0

    def keep_decoded(self, max_bytes: int) -> None:
        """Keep decoded items in memory, up to ``max_bytes`` in all (the first items read).

        A kept item is the image as read (``(H, W, 3)`` uint8) and its mapped label (``(H, W)``
        int16): an item read again gives the same tensors without decoding its files, so a run
        that reads a small data set many times pays its decoding once per item. Items beyond the
        budget are read from their files every time; ``max_bytes=0`` keeps nothing.
        """
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._decoded, self._decoded_budget, self._decoded_bytes = {}, int(max_bytes), 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def first(self, count: int) -> SegmentationDataset:
        """The same data set restricted to its first ``count`` samples (a labelled subset): same
        classes, label table, transform and ``skip_bad``. ``DataError`` when it has fewer."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if count > len(self.samples):
            raise DataError(
                f"asked for the first {count} samples, but the data set has only "
                f"{len(self.samples)} ({self.description})"
            )
        view = copy.copy(self)
        view.samples = self.samples[:count]
        view._bad = {i for i in self._bad if i < count}
        if self._decoded is not None:
            view.keep_decoded(self._decoded_budget)
        return view

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Item:
        """Read item ``index`` without the transform; raises on a bad file."""
        kept = self._decoded.get(index) if self._decoded is not None else None
        image, label = kept if kept is not None else self._decode(index)
        if kept is None and self._decoded is not None:
            size = image.nbytes + label.nbytes
            if self._decoded_bytes + size <= self._decoded_budget:
                self._decoded[index] = (image, label)
                self._decoded_bytes += size
        image_t = torch.from_numpy(image).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
        return {
            "image": image_t.to(torch.float32).div_(255.0),
            "label": torch.from_numpy(label.astype(np.int64)),
            "name": self.samples[index].name,
        }

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index``'s image ``(H, W, 3)`` uint8 and mapped label ``(H, W)`` int16, read
        from its files and checked."""
        sample = self.samples[index]
        image = np.ascontiguousarray(read_rgb(sample.image))
        raw = read_label(sample.label)
        if image.shape[:2] != raw.shape:
            raise DataError(
                f"image {sample.image} is {image.shape[0]}x{image.shape[1]} (HxW) but label "
                f"{sample.label} is {raw.shape[0]}x{raw.shape[1]}"
            )
        label = self.label_lut[raw]  # (H, W) int16
        if (label == INVALID).any():
            bad = np.unique(raw[label == INVALID])
            raise DataError(
                f"label file {sample.label} has values {bad.tolist()[:10]} outside the class set "
                f"({self.num_classes} classes, 255 = ignore)"
            )
        return image, label

    def __getitem__(self, index: int) -> Item:
        item = load_readable(
            index,
            len(self),
            self.load,
            bad=self._bad,
            skip_bad=self.skip_bad,
            name=lambda i: self.samples[i].name,
            nothing_left=(
                f"every item of this data set is unreadable ({len(self)} items; {self.description})"
            ),
        )
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} items, "
            f"{self.num_classes} classes, {self.description})"
        )


def check_split(split: str, known: Sequence[str], dataset: str) -> None:
    """``ValueError`` naming the known splits when ``split`` is not one of ``known`` (of
    ``dataset``)."""
    if split not in known:
        raise ValueError(f"split must be one of {list(known)} for {dataset}, got {split!r}")


def load_readable(
    index: int,
    size: int,
    load: Callable[[int], Any],
    *,
    bad: set[int],
    skip_bad: bool,
    name: Callable[[int], str],
    nothing_left: str,
) -> Any:
    """``load(index)`` for a data set of ``size`` items (negative indices count from the end).

    A :class:`DataError` or :class:`FileNotFoundError` is raised as it is, unless ``skip_bad``:
    then the item's index joins ``bad`` (never tried again), a warning names it (``name(i)``) and
    the next item is loaded instead, wrapping around; :class:`DataError` ``nothing_left`` when no
    item is readable. :class:`IndexError` for an index outside ``[-size, size)``.
    """
    if not -size <= index < size:
        raise IndexError(f"index {index} out of range for a data set of {size} items")
    index %= size
    for attempt in range(size):
        current = (index + attempt) % size
        if current in bad:
            continue
        try:
            return load(current)
        except (DataError, FileNotFoundError) as exc:
            if not skip_bad:
                raise
            bad.add(current)
            logger.warning("skipping unreadable item %d (%s): %s", current, name(current), exc)
    raise DataError(nothing_left)


def pair_by_stem(
    image_dir: Path,
    label_dir: Path,
    *,
    image_suffixes: Sequence[str],
    label_suffix: str,
    skip_bad: bool,
    expected: str,
) -> list[Sample]:
    """Samples for every image in ``image_dir`` with a label ``<stem><label_suffix>`` in
    ``label_dir``.

    A missing label raises ``DataError`` (or is skipped with a warning when ``skip_bad``).
    """
    if not image_dir.is_dir():
        raise DataError(f"directory not found: {image_dir}; expected {expected}")
    if not label_dir.is_dir():
        raise DataError(f"directory not found: {label_dir}; expected {expected}")
    suffixes = {s.lower() for s in image_suffixes}
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in suffixes and p.is_file())
    samples = []
    for image in images:
        label = label_dir / (image.stem + label_suffix)
        if not label.is_file():
            message = f"no label {label} for image {image}"
            if not skip_bad:
                raise DataError(message)
            logger.warning("skipping: %s", message)
            continue
        samples.append(Sample(image=image, label=label, name=image.stem))
    if not samples:
        raise DataError(f"empty split: no image/label pairs in {image_dir}; expected {expected}")
    return samples


def as_path(root: str | os.PathLike[str], *, what: str = "root") -> Path:
    """``root`` as a ``Path`` that must be an existing directory."""
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {path}")
    return path


def bit_palette(num_colours: int) -> list[tuple[int, int, int]]:
    """The Pascal VOC colour map: colour ``k`` spreads the bits of ``k`` over the high bits of R, G,
    B."""
    colours = []
    for k in range(num_colours):
        r = g = b = 0
        code = k
        for shift in range(7, -1, -1):
            r |= (code & 1) << shift
            g |= ((code >> 1) & 1) << shift
            b |= ((code >> 2) & 1) << shift
            code >>= 3
        colours.append((r, g, b))
    return colours
