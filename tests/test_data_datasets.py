"""Every loader on a tiny tree in its official layout; the Cityscapes table; bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skdlib.data import (
    DATASETS,
    DataError,
    build_dataset,
    cityscapes_train_id_to_label_id,
    make_loader,
)
from skdlib.data.base import bit_palette
from skdlib.data.cityscapes import LABELS, cityscapes_class_names, cityscapes_label_id_to_train_id
from skdlib.data.loader import collate_items, default_num_workers


def _rgb(path: Path, h: int = 6, w: int = 8, seed: int = 0, fmt: str = "PNG") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(array, "RGB").save(path, format=fmt, quality=100)
    return array


def _label(path: Path, values: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(values.astype(np.uint8), "L")
    if palette:  # a VOC-style palette PNG: indices are the class ids
        img = Image.fromarray(values.astype(np.uint8), "P")
        img.putpalette([c for colour in bit_palette(256) for c in colour])
    img.save(path, format="PNG")


RAW = np.array([[0, 7, 8, 11, 26, 33, 24, 23]] * 6)  # Cityscapes label ids, (6, 8)


def _cityscapes(root: Path, split: str = "train", raw: np.ndarray = RAW) -> None:
    for city, frame in (("aachen", "000000_000019"), ("bonn", "000001_000019")):
        stem = f"{city}_{frame}"
        _rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        _label(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", raw)


# -- Cityscapes ------------------------------------------------------------------------------------


def test_cityscapes_table_matches_cityscapesscripts() -> None:
    from cityscapesscripts.helpers import labels as official

    mine = {label.id: label for label in LABELS}
    theirs = {label.id: label for label in official.labels if label.id >= 0}
    assert set(mine) == set(theirs)
    for label_id, label in theirs.items():
        train_id = 255 if label.trainId in (255, -1) else label.trainId
        assert mine[label_id].name == label.name
        assert mine[label_id].train_id == train_id
        assert mine[label_id].color == tuple(label.color)
    lut = cityscapes_label_id_to_train_id()
    for label_id, label in theirs.items():
        assert lut[label_id] == (255 if label.trainId in (255, -1) else label.trainId)


def test_cityscapes_inverse_table() -> None:
    inverse = cityscapes_train_id_to_label_id()
    forward = cityscapes_label_id_to_train_id()
    assert inverse.shape == (256,) and inverse.dtype == np.uint8
    for train_id in range(19):
        assert forward[inverse[train_id]] == train_id
    assert inverse[0] == 7 and inverse[13] == 26 and inverse[18] == 33  # road, car, bicycle
    assert inverse[255] == 0


def test_cityscapes_reads_and_maps(tmp_path: Path) -> None:
    _cityscapes(tmp_path)
    ds = build_dataset("cityscapes", tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 19 and len(ds.palette) == 19
    assert ds.class_names == cityscapes_class_names() and ds.class_names[0] == "road"
    item = ds[0]
    assert item["name"] == "aachen_000000_000019"
    assert item["label"][0].tolist() == [255, 0, 1, 2, 13, 18, 11, 10]
    assert item["image"].shape == (3, 6, 8)


def test_cityscapes_wrong_layout_says_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=r"leftImg8bit/train/<city>/\*_leftImg8bit.png"):
        build_dataset("cityscapes", tmp_path, "train")


def test_cityscapes_missing_label_and_skip_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _cityscapes(tmp_path)
    (tmp_path / "gtFine/train/bonn/bonn_000001_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError, match=r"bonn_000001_000019_gtFine_labelIds\.png"):
        build_dataset("cityscapes", tmp_path, "train")
    with caplog.at_level(logging.WARNING):
        ds = build_dataset("cityscapes", tmp_path, "train", skip_bad=True)
    assert len(ds) == 1 and "bonn" in caplog.text


def test_cityscapes_out_of_range_label(tmp_path: Path) -> None:
    raw = RAW.copy()
    raw[0, 0] = 40  # not a Cityscapes id
    _cityscapes(tmp_path, raw=raw)
    with pytest.raises(DataError, match=r"values \[40\] outside the class set"):
        build_dataset("cityscapes", tmp_path, "train")[0]


# -- CamVid, ADE20K, VOC, folder -------------------------------------------------------------------


def test_camvid(tmp_path: Path) -> None:
    values = np.array([[0, 3, 10, 11]] * 4)
    for split in ("train", "val", "test"):
        _rgb(tmp_path / split / "0001TP_006690.png", 4, 4)
        _label(tmp_path / f"{split}annot" / "0001TP_006690.png", values)
    ds = build_dataset("camvid", tmp_path, "val")
    assert ds.num_classes == 11 and ds.class_names[3] == "road"
    assert ds[0]["label"][0].tolist() == [0, 3, 10, 255]  # 11 = void -> ignore


def test_ade20k(tmp_path: Path) -> None:
    base = tmp_path / "ADEChallengeData2016"
    values = np.array([[0, 1, 150, 3]] * 4)
    _rgb(base / "images/validation/ADE_val_00000001.jpg", 4, 4, fmt="JPEG")
    _label(base / "annotations/validation/ADE_val_00000001.png", values)
    ds = build_dataset("ade20k", tmp_path, "val")
    assert ds.num_classes == 150 and ds.class_names[0] == "wall" and len(ds.palette) == 150
    assert ds[0]["label"][0].tolist() == [255, 0, 149, 2]
    assert len(build_dataset("ade20k", base, "validation")) == 1  # root may be the inner folder
    with pytest.raises(DataError, match="images/training"):
        build_dataset("ade20k", tmp_path, "train")


def test_voc_and_augmented(tmp_path: Path) -> None:
    base = tmp_path / "VOCdevkit" / "VOC2012"
    values = np.array([[0, 15, 255, 20]] * 4)
    for name in ("2007_000032", "2007_000033"):
        _rgb(base / "JPEGImages" / f"{name}.jpg", 4, 4, fmt="JPEG")
        _label(base / "SegmentationClass" / f"{name}.png", values, palette=True)
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n")
    (lists / "val.txt").write_text("2007_000033\n")
    ds = build_dataset("voc", tmp_path, "val")
    assert ds.num_classes == 21 and ds.class_names[15] == "person"
    assert ds[0]["label"][0].tolist() == [0, 15, 255, 20] and ds[0]["name"] == "2007_000033"
    with pytest.raises(DataError, match=r"train_aug\.txt"):
        build_dataset("voc", tmp_path, "train_aug")
    (lists / "train_aug.txt").write_text("2007_000032\n2007_000033\n")
    _label(base / "SegmentationClassAug" / "2007_000032.png", np.full((4, 4), 7))
    _label(base / "SegmentationClassAug" / "2007_000033.png", np.full((4, 4), 8))
    aug = build_dataset("voc", base, "train_aug")
    assert len(aug) == 2 and int(aug[1]["label"][0, 0]) == 8


def test_voc_palette_is_the_official_colour_map() -> None:
    palette = bit_palette(21)
    assert palette[0] == (0, 0, 0) and palette[1] == (128, 0, 0) and palette[15] == (192, 128, 128)
    assert palette[20] == (0, 64, 128)


def test_folder(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("# my classes\nbackground\nleaf 0 200 0\nstem\n")
    _rgb(tmp_path / "images/train/a.png", 4, 4)
    _rgb(tmp_path / "images/train/b.jpg", 4, 4, fmt="JPEG")
    _label(tmp_path / "labels/train/a.png", np.array([[0, 1, 2, 255]] * 4))
    _label(tmp_path / "labels/train/b.png", np.zeros((4, 4)))
    ds = build_dataset("folder", tmp_path, "train")
    assert ds.class_names == ["background", "leaf", "stem"] and ds.palette[1] == (0, 200, 0)
    assert [ds[i]["name"] for i in range(2)] == ["a", "b"]
    assert ds[0]["label"][0].tolist() == [0, 1, 2, 255]


# -- bad input -------------------------------------------------------------------------------------


def _folder(root: Path, n: int = 3) -> None:
    (root / "classes.txt").write_text("a\nb\n")
    for i in range(n):
        _rgb(root / f"images/train/{i}.png", 4, 4, seed=i)
        _label(root / f"labels/train/{i}.png", np.full((4, 4), i % 2))


def test_unknown_name_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid names") as info:
        build_dataset("kitti", tmp_path, "train")
    for name in DATASETS:
        assert name in str(info.value)


def test_corrupt_image_names_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _folder(tmp_path)
    (tmp_path / "images/train/1.png").write_bytes(b"not a png")
    ds = build_dataset("folder", tmp_path, "train")
    with pytest.raises(DataError, match=r"images/train/1.png"):
        ds[1]
    skipping = build_dataset("folder", tmp_path, "train", skip_bad=True)
    with caplog.at_level(logging.WARNING):
        item = skipping[1]
    assert item["name"] == "2" and "1.png" in caplog.text


def test_missing_image_file(tmp_path: Path) -> None:
    _folder(tmp_path)
    ds = build_dataset("folder", tmp_path, "train")
    (tmp_path / "images/train/0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"0.png"):
        ds[0]


def test_size_mismatch(tmp_path: Path) -> None:
    _folder(tmp_path)
    _label(tmp_path / "labels/train/2.png", np.zeros((5, 4)))
    with pytest.raises(DataError, match=r"4x4 .* but label .*2.png is 5x4"):
        build_dataset("folder", tmp_path, "train")[2]


def test_label_outside_class_set(tmp_path: Path) -> None:
    _folder(tmp_path)
    _label(tmp_path / "labels/train/0.png", np.full((4, 4), 2))  # only classes 0, 1 exist
    with pytest.raises(DataError, match=r"values \[2\] outside the class set"):
        build_dataset("folder", tmp_path, "train")[0]


def test_rgb_label_rejected(tmp_path: Path) -> None:
    _folder(tmp_path)
    _rgb(tmp_path / "labels/train/0.png", 4, 4)
    with pytest.raises(DataError, match="single-channel"):
        build_dataset("folder", tmp_path, "train")[0]


def test_empty_split(tmp_path: Path) -> None:
    _folder(tmp_path)
    (tmp_path / "images/val").mkdir(parents=True)
    (tmp_path / "labels/val").mkdir(parents=True)
    with pytest.raises(DataError, match="empty split"):
        build_dataset("folder", tmp_path, "val")


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset("camvid", tmp_path / "nowhere", "train")


# -- loader ----------------------------------------------------------------------------------------


def test_loader_deterministic_and_collates(tmp_path: Path) -> None:
    _folder(tmp_path, n=6)
    ds = build_dataset("folder", tmp_path, "train")

    def order(seed: int) -> list[str]:
        return [
            n
            for batch in make_loader(ds, batch_size=2, shuffle=True, seed=seed, num_workers=0)
            for n in batch["name"]
        ]

    assert order(1) == order(1) and sorted(order(1)) == [str(i) for i in range(6)]
    assert order(1) != order(2) or order(1) != order(3)
    batch = next(iter(make_loader(ds, batch_size=4, shuffle=False, num_workers=0, drop_last=True)))
    assert batch["image"].shape == (4, 3, 4, 4) and batch["label"].shape == (4, 4, 4)
    assert batch["label"].dtype == torch.int64 and batch["name"] == ["0", "1", "2", "3"]


def test_loader_settings() -> None:
    assert 0 <= default_num_workers() <= 4
    with pytest.raises(ValueError, match="share one image size"):
        collate_items(
            [
                {
                    "image": torch.zeros(3, 4, 4),
                    "label": torch.zeros(4, 4, dtype=torch.long),
                    "name": "a",
                },
                {
                    "image": torch.zeros(3, 5, 4),
                    "label": torch.zeros(5, 4, dtype=torch.long),
                    "name": "b",
                },
            ]
        )


def test_embedded_class_groups_merge_labels(tmp_path: Path) -> None:
    from skdlib.data.base import merge_classes
    from skdlib.data.embedded import EmbeddedDataset

    groups = {
        "ground": ["road", "sidewalk"],
        "structure": ["building", "vegetation", "car", "person", "pole"],
        "sky": ["sky"],
    }
    fine = EmbeddedDataset(tmp_path / "e", "train", height=32, width=64, num_train=2, num_val=1)
    coarse = EmbeddedDataset(tmp_path / "e", "train", class_groups=groups)
    assert coarse.class_names == ["ground", "structure", "sky"] and coarse.num_classes == 3
    assert coarse.palette[0] == fine.palette[fine.class_names.index("road")]
    table = {fine.class_names.index(m): new for new, ms in enumerate(groups.values()) for m in ms}
    a, b = fine[0]["label"], coarse[0]["label"]
    expected = torch.tensor([table.get(int(v), int(v)) for v in a.flatten()]).view_as(a)
    assert torch.equal(b, expected)
    names = fine.class_names
    with pytest.raises(ValueError, match="in no group"):
        merge_classes(names, fine.palette, {"ground": ["road"]})
    with pytest.raises(ValueError, match="two groups"):
        merge_classes(names, fine.palette, {"a": names, "b": ["road"]})
    with pytest.raises(ValueError, match="unknown class 'tree'"):
        merge_classes(names, fine.palette, {"a": [*names, "tree"]})


# -- decoded items kept in memory ------------------------------------------------------------------


def test_keep_decoded_gives_the_same_items_and_reads_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import skdlib.data.base as base

    _folder(tmp_path, n=3)
    plain = build_dataset("folder", tmp_path, "train")
    kept = build_dataset("folder", tmp_path, "train")
    reads: list[str] = []
    real = base.read_rgb
    monkeypatch.setattr(base, "read_rgb", lambda path: reads.append(Path(path).name) or real(path))
    kept.keep_decoded(10**6)
    for _ in range(3):
        for i in range(3):
            a, b = plain[i], kept[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
            assert a["name"] == b["name"]
    # plain read its 3 files 3 times; kept read each once
    assert sorted(reads) == sorted(["0.png", "1.png", "2.png"] * 4)


def test_keep_decoded_honours_its_budget_and_views(tmp_path: Path) -> None:
    _folder(tmp_path, n=3)
    ds = build_dataset("folder", tmp_path, "train")
    item_bytes = 4 * 4 * 3 + 4 * 4 * 2  # uint8 image + int16 label
    ds.keep_decoded(2 * item_bytes)
    for i in range(3):
        ds[i]
    assert sorted(ds._decoded) == [0, 1]  # the third item is over the budget
    view = ds.first(2)
    assert view._decoded == {} and view._decoded_budget == 2 * item_bytes
    ds.keep_decoded(0)
    ds[0]
    assert ds._decoded == {}
    with pytest.raises(ValueError, match="max_bytes"):
        ds.keep_decoded(-1)
