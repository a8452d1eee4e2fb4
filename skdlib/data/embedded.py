"""The embedded generated data set as a :class:`SegmentationDataset`.

Layout (written by :mod:`skdlib.data.generate`)::

    <root>/manifest.json, <root>/classes.json
    <root>/{train,val}/images/NNNNNN.png   RGB
    <root>/{train,val}/labels/NNNNNN.png   uint8 class ids, 255 = ignore
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skdlib.data.base import (
    DataError,
    SegmentationDataset,
    Transform,
    check_split,
    identity_lut,
    merge_classes,
    pair_by_stem,
)
from skdlib.data.generate import CLASSES_NAME, SPLITS, ensure_embedded, read_manifest


class EmbeddedDataset(SegmentationDataset):
    """The generated street scenes (8 classes).

    Args:
        root: the data-set directory.
        split: ``"train"`` or ``"val"``.
        generate: generate the set into ``root`` when it holds no complete one (default ``True``).
        class_groups: a coarser label set, ``{new class: [embedded classes it merges]}`` with
            every embedded class in exactly one group, in the order of the new class ids (e.g.
            ``{ground: [road, sidewalk], structure: [...], sky: [sky]}``, a source task for
            pretraining); ``None`` (default): the 8 classes.
        transform, skip_bad: see :class:`SegmentationDataset`.
        **generate_options: ``seed``, ``height``, ``width``, ``num_train``, ``num_val``,
            ``small_object_scale`` for :func:`skdlib.data.generate.ensure_embedded`. When given,
            an existing set must match them; when omitted, any complete set under ``root`` is used
            as it is.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        generate: bool = True,
        class_groups: Mapping[str, Sequence[str]] | None = None,
        transform: Transform | None = None,
        skip_bad: bool = False,
        **generate_options: Any,
    ) -> None:
        check_split(split, SPLITS, "the embedded data set")
        root = Path(root)
        if generate_options or (generate and read_manifest(root) is None):
            if not generate and read_manifest(root) is None:
                raise DataError(f"{root} holds no complete embedded data set and generate=False")
            ensure_embedded(root, **generate_options)
        elif read_manifest(root) is None:
            raise DataError(
                f"{root} holds no complete embedded data set (no complete manifest.json); "
                "generate it with `python -m skdlib.data.generate --out DIR` or pass generate=True"
            )
        classes = json.loads((root / CLASSES_NAME).read_text())
        expected = f"{root}/{split}/images/*.png with labels {root}/{split}/labels/*.png"
        samples = pair_by_stem(
            root / split / "images",
            root / split / "labels",
            image_suffixes=(".png",),
            label_suffix=".png",
            skip_bad=skip_bad,
            expected=expected,
        )
        names, palette = classes["names"], [tuple(c) for c in classes["palette"]]
        lut = identity_lut(len(names))
        if class_groups is not None:
            names, palette, lut = merge_classes(names, palette, class_groups)
        super().__init__(
            samples,
            class_names=names,
            palette=palette,
            label_lut=lut,
            transform=transform,
            skip_bad=skip_bad,
            description=expected,
        )
        self.root = root
        self.split = split
