"""Tests of skdlib.analysis.unlabeled: what the unlabeled-images chapter plots against."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from skdlib.analysis.runs import load_index, make_demo_runs
from skdlib.analysis.unlabeled import (
    stream_reuse,
    terms_label,
    unlabeled_grid,
    unlabeled_pairs,
    unlabeled_setup,
    unlabeled_table,
)
from skdlib.train.config import load_config, save_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("overrides", "label"),
    [
        (
            ["distill.pixelwise=false", "distill.pairwise=false", "distill.holistic=false"],
            "baseline",
        ),
        (["distill.pairwise=false", "distill.holistic=false"], "+PI"),
        ([], "+PI+PA+HO"),
        (["distill.pairwise=false", "distill.holistic=false", "distill.attention=true"], "+PI+AT"),
    ],
)
def test_terms_label_names_the_switched_on_terms(overrides: list[str], label: str) -> None:
    assert terms_label(load_config(REPO / "configs" / "quick.yaml", overrides).distill) == label


@pytest.mark.slow
def test_unlabeled_table_reads_counts_from_the_runs_data(tmp_path: Path) -> None:
    # The smoke profile's sizes: 4 labelled images, the 4x pool has 16 fresh scenes.
    root = make_demo_runs(tmp_path / "tree", ["few_baseline", "few_pi_unl4x"], iters=1, repo=REPO)
    index = load_index(root)
    table = unlabeled_table(index, profile_dir=root)
    assert list(table.index) == ["few_baseline", "few_pi_unl4x"]
    assert table.loc["few_baseline", ["terms", "labelled", "unlabeled", "ratio"]].tolist() == [
        "baseline",
        4,
        0,
        0,
    ]
    assert table.loc["few_pi_unl4x", ["terms", "labelled", "unlabeled", "ratio"]].tolist() == [
        "+PI",
        4,
        16,
        4,
    ]
    assert (table["n_finished"] == 1).all() and table["miou_mean"].notna().all()
    # The demo placed each experiment's own data sets inside the tree, never in the repository.
    run_dir = root / index["experiments"][1]["runs"][0]["run_dir"]
    pool = Path(load_config(run_dir / "config.yaml").data.unlabeled.root)
    assert pool.is_relative_to(root.parent) and (pool / "train" / "images").is_dir()
    # An experiment whose runs have not started yet: counts unknown, not guessed.
    index["experiments"][0]["runs"][0]["run_dir"] = "few_baseline/seed7"
    table = unlabeled_table(index, profile_dir=root)
    assert table.loc["few_baseline", "terms"] == "" and math.isnan(
        table.loc["few_baseline", "labelled"]
    )


def _unlabeled_frame() -> pd.DataFrame:
    """What unlabeled_table returns, by hand: baseline, +PI at 0 and 16 unlabeled images (one of
    them with a missing seed), +PI+PA+HO at 0 only, and an experiment with no finished seed."""
    rows = {
        "few_baseline": ("baseline", "baseline", 0, 3, 3, 0.40, 0.01),
        "few_pi": ("+PI", "+PI", 0, 3, 3, 0.42, 0.02),
        "few_pi_unl1x": ("+PI + 16 unlabeled", "+PI", 16, 3, 2, 0.45, math.nan),
        "few_pi_pa_ho": ("+PI+PA+HO", "+PI+PA+HO", 0, 3, 3, 0.43, 0.01),
        "few_pi_pa_ho_unl1x": (
            "+PI+PA+HO + 16 unlabeled",
            "+PI+PA+HO",
            16,
            3,
            0,
            math.nan,
            math.nan,
        ),
    }
    columns = ["label", "terms", "unlabeled", "n_runs", "n_finished", "miou_mean", "miou_std"]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    frame["labelled"] = 16
    return frame


def test_unlabeled_grid_by_hand() -> None:
    grid = unlabeled_grid(_unlabeled_frame())
    assert list(grid.index) == ["baseline", "+PI", "+PI+PA+HO"]
    assert grid.to_dict("list") == {
        "0 unlabeled": ["40.00 ± 1.00", "42.00 ± 2.00", "43.00 ± 1.00"],
        "16 unlabeled": ["", "45.00", ""],
        "seeds finished": ["3/3", "3/3, 2/3", "3/3"],
    }


def test_unlabeled_pairs_by_hand() -> None:
    frame = _unlabeled_frame()
    assert unlabeled_pairs(frame) == [
        ("few_pi", "few_baseline"),
        ("few_pi_unl1x", "few_pi"),
        ("few_pi_unl1x", "few_baseline"),
        ("few_pi_pa_ho", "few_baseline"),
    ]
    assert unlabeled_pairs(frame, baseline=False) == [("few_pi_unl1x", "few_pi")]


def test_unlabeled_setup_and_stream_reuse_read_the_runs(tmp_path: Path) -> None:
    stream = [
        "data.train_limit=16",
        "train.max_iters=40",
        "data.unlabeled.name=embedded",
        "data.unlabeled.root=pool",
        "data.unlabeled.batch_size=4",
    ]
    for name, overrides in {
        "few_baseline": ["data.train_limit=16"],
        "few_pi_unl1x": stream,
    }.items():
        folder = tmp_path / name / "seed0"
        folder.mkdir(parents=True)
        save_config(load_config(REPO / "configs" / "quick.yaml", overrides), folder / "config.yaml")
        (folder / "summary.json").write_text('{"finished": true}')
    index = {
        "profile": "quick",
        "experiments": [
            {"name": n, "runs": [{"seed": 0, "run_dir": f"{n}/seed0"}]}
            for n in ("few_baseline", "few_pi_unl1x")
        ],
    }
    frame = _unlabeled_frame().loc[["few_baseline", "few_pi_unl1x"]]
    setup = unlabeled_setup(frame, index, profile_dir=tmp_path, teacher_miou=0.6).set_index(
        "setting"
    )
    assert setup.loc["labelled / unlabeled images per step", "value"] == "4 / 4"
    assert setup.loc["unlabeled images", "value"] == "0, 16"
    assert setup.loc["iterations", "value"] == "120"  # the first experiment's (quick's) iterations
    assert setup.loc["teacher", "value"].endswith("val mIoU 60.00 %)")
    assert stream_reuse(frame, index, profile_dir=tmp_path) == (
        "Each run with a stream draws 40 x 4 = 160 unlabeled images, so it sees each image of the "
        "pool of 16 about 10 times."
    )
