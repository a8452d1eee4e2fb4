"""Tests of the recipe search's tables (skdlib.analysis.regimes), on hand-made record folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from skdlib.analysis.regimes import read_search, regime_table, teacher_table


def _record(
    root: Path,
    name: str,
    *,
    width: float,
    miou: float,
    iters: int,
    seed: int = 0,
    scenes: int = 100,
    lr: float = 0.02,
    pretrained: bool = True,
    teacher: bool = False,
) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    cfg = {
        "name": "teacher_quick" if teacher else "student",
        "model": {
            "student": "pspnet_resnet18",
            "student_options": {"width": width},
            "teacher": None if teacher else "pspnet_resnet18",
            "student_pretrained": "x/final.pt" if pretrained else None,
        },
        "data": {"train_limit": None, "options": {"num_train": scenes}},
        "train": {"lr": lr, "max_iters": iters, "seed": seed},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "summary.json").write_text(json.dumps({"miou": miou / 100, "class_iou": [0.5, 0.4]}))
    val = {"iter": iters, "split": "val", "miou": miou / 100}
    (folder / "metrics.jsonl").write_text(
        json.dumps({"iter": 1, "task": 1.0}) + "\n" + json.dumps(val)
    )


def test_regimes_pair_lengths_and_match_teachers(tmp_path: Path) -> None:
    _record(tmp_path, "t100", width=0.25, miou=73.0, iters=4000, teacher=True)
    _record(tmp_path, "t100r", width=0.25, miou=70.0, iters=4000, teacher=True, pretrained=False)
    for seed, (a, b) in enumerate([(56.0, 56.5), (58.0, 58.1)]):
        _record(tmp_path, f"s1k{seed}", width=0.0625, miou=a, iters=1000, seed=seed)
        _record(tmp_path, f"s2k{seed}", width=0.0625, miou=b, iters=2000, seed=seed)
    _record(tmp_path, "other", width=0.0625, miou=50.0, iters=1000, scenes=300)
    (tmp_path / "unfinished").mkdir()
    records = read_search(tmp_path)
    assert sorted(records["kind"].unique()) == ["student", "teacher"] and len(records) == 7
    teachers = teacher_table(records)
    assert list(teachers["val mIoU (%)"]) == [73.0, 70.0]
    chosen = {"width": 0.0625, "init": "pretrained", "scenes": 100, "lr": 0.02, "iters": 1000}
    table = regime_table(records, chosen=chosen).set_index("labelled scenes")
    row = table.loc[100]
    assert (row["T"], row["seeds"]) == (1000, 2)
    assert row["at T"] == pytest.approx(57.0) and row["at 2T"] == pytest.approx(57.3)
    assert row["change"] == pytest.approx(0.3) and row["converged"] and row["chosen"]
    # the pretrained teacher of the same scenes; the gap to the baseline at 2T
    assert row["teacher (same scenes)"] == 73.0 and row["gap"] == pytest.approx(15.7)
    lone = table.loc[300]  # one length only, no teacher on 300 scenes
    assert math.isnan(lone["at 2T"]) and not lone["converged"] and not lone["chosen"]
    assert math.isnan(lone["gap"])


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no record folder"):
        read_search(tmp_path / "nope")


def test_kept_quick_search_holds_the_chosen_recipe() -> None:
    root = Path(__file__).resolve().parents[1] / "kept" / "quick" / "regime_search"
    table = regime_table(
        read_search(root),
        chosen={"width": 0.0625, "init": "pretrained", "scenes": 100, "lr": 0.02, "iters": 1000},
    )
    chosen = table[table["chosen"]]
    assert len(chosen) == 1 and bool(chosen["converged"].iloc[0])
    assert float(chosen["gap"].iloc[0]) >= 8
