"""Tests of skdlib.analysis.unlabeled: what the unlabeled-images chapter plots against."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from skdlib.analysis.runs import load_index, make_demo_runs
from skdlib.analysis.unlabeled import terms_label, unlabeled_table
from skdlib.train.config import load_config

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
