"""The embedded generator: determinism, atomic writes, reuse rules, CLI, content, the probe."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skdlib.data import build_dataset
from skdlib.data.generate import (
    CLASS_NAMES,
    MANIFEST_NAME,
    draw_sample,
    ensure_embedded,
    generate_embedded,
    main,
    read_manifest,
    verify_embedded,
)

TINY = {"seed": 3, "height": 32, "width": 64, "num_train": 4, "num_val": 2}


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_embedded(tmp_path_factory.mktemp("emb") / "set", **TINY)


def test_same_seed_same_bytes(tiny_set: Path, tmp_path: Path) -> None:
    again = generate_embedded(tmp_path / "again", **TINY)
    assert _tree_digest(again) == _tree_digest(tiny_set)
    other = generate_embedded(tmp_path / "other", **{**TINY, "seed": 4})
    assert (
        _tree_digest(other)["train/images/000000.png"]
        != _tree_digest(tiny_set)["train/images/000000.png"]
    )


def test_golden_samples() -> None:
    # Stored digests of two drawn scenes: any change to the drawing code (or the numpy stream) shows
    # here.
    image, label = draw_sample(0, "train", 0, height=32, width=64)
    assert hashlib.sha256(image.tobytes()).hexdigest() == (
        "c57020676ca6c17fd1c2aad1d1686eafcc0d5daede1b7703d0dda23096ec9277"
    )
    assert hashlib.sha256(label.tobytes()).hexdigest() == (
        "7247c1afedc0668d2e5f6f421e2d2f2ad664fba698f4a9b99048d9e0a09890f4"
    )
    image, label = draw_sample(7, "val", 3, height=32, width=64)
    assert hashlib.sha256(image.tobytes()).hexdigest() == (
        "49faa6c1e4a1d6e7c2e15bb15837d224479f731f8a24cdb1a427fa3f33d119f6"
    )
    assert hashlib.sha256(label.tobytes()).hexdigest() == (
        "2bc038dca1229ecd556baef27f66af80c97d53ec654cc756369654979276aa84"
    )


def test_image_does_not_depend_on_count(tiny_set: Path, tmp_path: Path) -> None:
    bigger = generate_embedded(tmp_path / "big", **{**TINY, "num_train": 5})
    assert (bigger / "train/images/000003.png").read_bytes() == (
        tiny_set / "train/images/000003.png"
    ).read_bytes()


def test_layout_manifest_and_files(tiny_set: Path) -> None:
    manifest = read_manifest(tiny_set)
    assert manifest is not None
    assert manifest["options"] == {"generator_version": 1, **TINY}
    assert len(manifest["files"]) == 1 + 2 * (4 + 2)  # classes.json + image/label per sample
    classes = json.loads((tiny_set / "classes.json").read_text())
    assert (
        classes["names"] == list(CLASS_NAMES) and len(classes["palette"]) == len(CLASS_NAMES) >= 8
    )
    with Image.open(tiny_set / "train/images/000001.png") as img:
        assert img.mode == "RGB" and img.size == (64, 32)
    with Image.open(tiny_set / "train/labels/000001.png") as lab:
        assert lab.mode == "L"
        values = np.unique(np.asarray(lab))
    assert set(values.tolist()) <= set(range(len(CLASS_NAMES))) | {255}
    assert verify_embedded(tiny_set, checksums=True)


def test_scene_content_at_default_size() -> None:
    # Every class occurs in a few scenes; perspective: cars near the bottom are bigger than near the
    # horizon.
    counts = np.zeros(len(CLASS_NAMES), dtype=np.int64)
    for index in range(4):
        image, label = draw_sample(0, "train", index, height=128, width=256)
        assert (
            image.shape == (128, 256, 3) and image.dtype == np.uint8 and label.shape == (128, 256)
        )
        counts += np.bincount(label.ravel(), minlength=256)[: len(CLASS_NAMES)]
    assert (counts > 0).all(), dict(zip(CLASS_NAMES, counts.tolist(), strict=True))


def test_colour_alone_is_ambiguous() -> None:
    # Pooled over scenes, road/sidewalk and car/building colours differ in mean by far less than
    # their spread.
    pooled: dict[int, list[np.ndarray]] = {0: [], 1: [], 2: [], 5: []}
    for index in range(8):
        image, label = draw_sample(0, "train", index, height=64, width=128)
        for k in pooled:
            pooled[k].append(image[label == k].astype(float))
    colours = {k: np.concatenate(v) for k, v in pooled.items()}
    for a, b in ((0, 1), (5, 2)):
        gap = np.linalg.norm(colours[a].mean(0) - colours[b].mean(0))
        spread = min(np.linalg.norm(colours[a].std(0)), np.linalg.norm(colours[b].std(0)))
        assert gap < 0.5 * spread, (CLASS_NAMES[a], CLASS_NAMES[b], gap, spread)


def test_leftover_temp_dir_is_removed_and_incomplete_dir_regenerated(tmp_path: Path) -> None:
    out = tmp_path / "set"
    leftover = tmp_path / ".tmp-set-abc123"  # what an interrupted generation leaves
    (leftover / "train/images").mkdir(parents=True)
    (leftover / "train/images/000000.png").write_bytes(b"partial")
    out.mkdir()
    (out / "classes.json").write_text("{}")  # a data set without a manifest: not trusted
    assert read_manifest(out) is None
    ensure_embedded(out, **TINY)
    assert not leftover.exists()
    assert verify_embedded(out)


def test_incomplete_manifest_not_trusted(tiny_set: Path, tmp_path: Path) -> None:
    out = generate_embedded(tmp_path / "set", **TINY)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["complete"] = False
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert read_manifest(out) is None
    ensure_embedded(out, **TINY)
    assert read_manifest(out) is not None
    # A file deleted after generation is noticed too.
    (out / "val/labels/000001.png").unlink()
    assert not verify_embedded(out, checksums=False)
    ensure_embedded(out, **TINY)
    assert _tree_digest(out) == _tree_digest(tiny_set)


def test_interrupted_generation_leaves_nothing_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import skdlib.data.generate as gen

    calls = {"n": 0}
    real = gen.draw_sample

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "draw_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_embedded(tmp_path / "set", **TINY)
    assert not (tmp_path / "set").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_reuse_and_refuse_other_options(tiny_set: Path) -> None:
    before = (tiny_set / MANIFEST_NAME).stat().st_mtime_ns
    assert ensure_embedded(tiny_set, **TINY) == tiny_set.absolute()
    assert (tiny_set / MANIFEST_NAME).stat().st_mtime_ns == before  # reused, not rewritten
    with pytest.raises(ValueError, match="pick another folder or delete"):
        ensure_embedded(tiny_set, **{**TINY, "seed": 9})


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an embedded data set"):
        generate_embedded(tmp_path, **TINY)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_small_object_scale_default_is_the_original_and_larger_grows_persons_and_poles(
    tmp_path: Path,
) -> None:
    # 1.0 is today's scene byte for byte (and stays out of the manifest); a larger scale draws more
    # person and pole pixels and leaves the sky (drawn first, never over an object) as it was.
    for index in range(3):
        plain = draw_sample(0, "train", index, height=64, width=128)
        same = draw_sample(0, "train", index, height=64, width=128, small_object_scale=1.0)
        assert all(np.array_equal(a, b) for a, b in zip(plain, same, strict=True))
    person, pole = CLASS_NAMES.index("person"), CLASS_NAMES.index("pole")
    counts = {1.0: np.zeros(2), 2.0: np.zeros(2)}
    for scale, total in counts.items():
        for index in range(6):
            _, label = draw_sample(
                0, "train", index, height=64, width=128, small_object_scale=scale
            )
            total += [(label == person).sum(), (label == pole).sum()]
    assert (counts[2.0] > 2 * counts[1.0]).all(), counts
    assert read_manifest(generate_embedded(tmp_path / "plain", **TINY, small_object_scale=1.0))[
        "options"
    ] == {"generator_version": 1, **TINY}
    big = generate_embedded(tmp_path / "big", **TINY, small_object_scale=2)
    assert read_manifest(big)["options"]["small_object_scale"] == 2.0
    assert ensure_embedded(big, **TINY, small_object_scale=2.0) == big.absolute()
    with pytest.raises(ValueError, match="pick another folder or delete"):
        ensure_embedded(big, **TINY)
    assert (
        main(
            [
                "--out",
                str(tmp_path / "cli"),
                "--seed",
                "3",
                "--height",
                "32",
                "--width",
                "64",
                "--train",
                "4",
                "--val",
                "2",
                "--small-object-scale",
                "2",
            ]
        )
        == 0
    )
    assert _tree_digest(tmp_path / "cli") == _tree_digest(big)


@pytest.mark.parametrize(
    "bad",
    [
        {"height": 4},
        {"num_train": 0},
        {"seed": -1},
        {"small_object_scale": 0.0},
        {"small_object_scale": True},
        {"small_object_scale": float("nan")},
    ],
)
def test_bad_options(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ValueError):
        generate_embedded(tmp_path / "x", **{**TINY, **bad})


def test_cli(tmp_path: Path, tiny_set: Path) -> None:
    out = tmp_path / "cli"
    assert (
        main(
            [
                "--out",
                str(out),
                "--seed",
                "3",
                "--height",
                "32",
                "--width",
                "64",
                "--train",
                "4",
                "--val",
                "2",
            ]
        )
        == 0
    )
    assert _tree_digest(out) == _tree_digest(tiny_set)


def test_dataset_reads_generated_set(tiny_set: Path) -> None:
    ds = build_dataset("embedded", tiny_set, "train")
    assert len(ds) == 4 and ds.num_classes == 8 and ds.ignore_index == 255
    item = ds[1]
    assert item["image"].shape == (3, 32, 64) and item["image"].dtype.is_floating_point
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert item["label"].shape == (32, 64) and str(item["label"].dtype) == "torch.int64"
    with Image.open(tiny_set / "train/labels/000001.png") as lab:
        assert (item["label"].numpy() == np.asarray(lab)).all()
    assert item["name"] == "000001"


def test_dataset_generates_on_first_use(tmp_path: Path) -> None:
    ds = build_dataset("embedded", tmp_path / "new", "val", **TINY)
    assert len(ds) == 2
    with pytest.raises(ValueError, match="no complete embedded data set"):
        build_dataset("embedded", tmp_path / "absent", "val", generate=False)


def test_probe_runs_and_reports(tiny_set: Path) -> None:
    import torch

    from skdlib.analysis.context import pixel_vs_context_probe

    threads = torch.get_num_threads()
    result = pixel_vs_context_probe(
        tiny_set, iters=2, seed=0, device="cpu", batch_size=2, pixel_batch_size=256
    )
    assert torch.get_num_threads() == threads  # the probe restores the thread setting
    for key in ("pixel_linear_miou", "pixel_mlp_miou", "context_miou"):
        assert 0.0 <= result[key] <= 100.0
    assert result["gap"] == pytest.approx(
        result["context_miou"] - max(result["pixel_linear_miou"], result["pixel_mlp_miou"])
    )
    assert len(result["class_iou"]["context"]) == 8
    again = pixel_vs_context_probe(
        tiny_set, iters=2, seed=0, device="cpu", batch_size=2, pixel_batch_size=256, mlp=False
    )
    assert again["context_miou"] == result["context_miou"]  # seeded


def test_concurrent_callers_agree(tmp_path: Path, tiny_set: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "shared"
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: ensure_embedded(out, **TINY), range(2)))
    assert results == [out.absolute(), out.absolute()]
    assert _tree_digest(out) == _tree_digest(tiny_set)
    assert not list(tmp_path.glob(".tmp-*"))


def test_probe_reading_words_a_result_by_hand() -> None:
    from skdlib.analysis.context import probe_reading

    probe = {
        "class_names": ["road", "sidewalk", "person"],
        "class_iou": {
            "pixel_linear": [60.0, 0.2, 0.0],
            "pixel_mlp": [70.0, 4.9, float("nan")],
            "context": [85.0, 70.0, 30.0],
        },
        "pixel_linear_miou": 20.07,
        "pixel_mlp_miou": 25.0,
        "context_miou": 61.67,
        "gap": 36.67,
    }
    text = probe_reading(probe)
    assert "logistic regression **20.1**, the per-pixel MLP **25.0**" in text
    assert "the context network **61.7** val mIoU: **+36.7 points** for context" in text
    # sidewalk: 4.9 at best; person: 0.0 and NaN (never predicted nor present) -> not found.
    assert "(IoU below 5): sidewalk, person." in text
    assert text.endswith("weakest class first: person 30.0, sidewalk 70.0, road 85.0.")
    without_mlp = {**probe, "pixel_mlp_miou": None}
    assert "the per-pixel MLP" not in probe_reading(without_mlp)
