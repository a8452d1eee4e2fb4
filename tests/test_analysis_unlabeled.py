"""Tests of skdlib.analysis.unlabeled: what the unlabeled-images chapter plots against."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from skdlib.analysis.demo import make_demo_runs
from skdlib.analysis.runs import RunsTree
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
    # The smoke profile's sizes: 8 labelled images, the pool as many fresh scenes; the
    # ablation's runs of the same terms (and its baseline) are the students without a stream.
    names = ["baseline", "pi", "pi_pa", "pi_unl1x"]
    root = make_demo_runs(tmp_path / "tree", names, iters=1, repo=REPO)
    tree = RunsTree.read(root, project_root=REPO)
    index = dict(tree.index)
    table = unlabeled_table(tree)
    assert list(table.index) == ["baseline", "pi", "pi_unl1x"]  # +PI+PA has no stream here
    columns = ["terms", "labelled", "unlabeled", "ratio"]
    assert table.loc["baseline", columns].tolist() == ["baseline", 8, 0, 0]
    assert table.loc["pi", columns].tolist() == ["+PI", 8, 0, 0]
    assert table.loc["pi_unl1x", columns].tolist() == ["+PI", 8, 8, 1]
    assert (table["n_finished"] == 1).all() and table["miou_mean"].notna().all()
    # The demo placed each experiment's own data sets inside the tree, never in the repository.
    entry = next(e for e in index["experiments"] if e["name"] == "pi_unl1x")
    run_dir = root / entry["runs"][0]["run_dir"]
    pool = Path(load_config(run_dir / "config.yaml").data.unlabeled.root)
    assert pool.is_relative_to(root.parent) and (pool / "train" / "images").is_dir()
    # An experiment whose runs have not started yet: counts unknown, not guessed.
    entry["runs"][0]["run_dir"] = "pi_unl1x/seed7"
    table = unlabeled_table(RunsTree(root, index, REPO))
    assert table.loc["pi_unl1x", "terms"] == "" and math.isnan(table.loc["pi_unl1x", "labelled"])


def _unlabeled_frame() -> pd.DataFrame:
    """What unlabeled_table returns, by hand: baseline, +PI at 0 and 16 unlabeled images (one of
    them with a missing seed), +PI+PA+HO at 0 only, and an experiment with no finished seed."""
    rows = {
        "baseline": ("baseline", "baseline", 0, 3, 3, 0.40, 0.01),
        "pi": ("+PI", "+PI", 0, 3, 3, 0.42, 0.02),
        "pi_unl1x": ("+PI, 1x unlabeled", "+PI", 16, 3, 2, 0.45, math.nan),
        "pi_pa_ho": ("+PI+PA+HO", "+PI+PA+HO", 0, 3, 3, 0.43, 0.01),
        "pi_pa_ho_unl1x": (
            "+PI+PA+HO, 1x unlabeled",
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
        ("pi", "baseline"),
        ("pi_unl1x", "pi"),
        ("pi_unl1x", "baseline"),
        ("pi_pa_ho", "baseline"),
    ]
    assert unlabeled_pairs(frame, baseline=False) == [("pi_unl1x", "pi")]


def test_unlabeled_setup_and_stream_reuse_read_the_runs(tmp_path: Path) -> None:
    stream = [
        "train.max_iters=40",
        "data.unlabeled.name=embedded",
        "data.unlabeled.root=pool",
        "data.unlabeled.batch_size=4",
    ]
    for name, overrides in {"baseline": [], "pi_unl1x": stream}.items():
        folder = tmp_path / name / "seed0"
        folder.mkdir(parents=True)
        save_config(load_config(REPO / "configs" / "quick.yaml", overrides), folder / "config.yaml")
        (folder / "summary.json").write_text('{"finished": true}')
    index = {
        "profile": "quick",
        "experiments": [
            {"name": n, "runs": [{"seed": 0, "run_dir": f"{n}/seed0"}]}
            for n in ("baseline", "pi_unl1x")
        ],
    }
    frame = _unlabeled_frame().loc[["baseline", "pi_unl1x"]]
    tree = RunsTree(tmp_path, index, tmp_path)
    setup = unlabeled_setup(frame, tree, teacher_miou=0.6).set_index("setting")
    assert setup.loc["labelled / unlabeled images per step", "value"] == "8 / 4"
    assert setup.loc["labelled images", "value"] == "16 training images of embedded"
    assert setup.loc["unlabeled images", "value"] == "0, 16"
    # The first experiment's (quick's) iterations, not pi_unl1x's 40.
    quick = load_config(REPO / "configs" / "quick.yaml")
    assert quick.train.max_iters != 40
    assert setup.loc["iterations", "value"] == str(quick.train.max_iters)
    assert setup.loc["teacher", "value"].endswith("val mIoU 60.00 %)")
    assert stream_reuse(frame, tree) == (
        "Each run with a stream draws 40 x 4 = 160 unlabeled images, so it sees each image of the "
        "pool of 16 about 10 times."
    )
