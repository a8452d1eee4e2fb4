"""Tests of skdlib.analysis.unlabeled: what the unlabeled-images chapter plots against."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from skdlib.analysis.demo import make_demo_runs
from skdlib.analysis.runs import RunsTree
from skdlib.analysis.unlabeled import (
    PAPER_CAMVID,
    paper_camvid_table,
    stream_reuse,
    terms_label,
    unlabeled_pairs,
    unlabeled_reading,
    unlabeled_runs,
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
    # The smoke profile's sizes: 8 labelled images, a pool of 8 fresh scenes; the ablation's
    # baseline is the student without teacher or pool, its +PI (another teacher) is left out.
    names = ["baseline", "pi", "pi_unl0x", "pi_unl1x"]
    root = make_demo_runs(tmp_path / "tree", names, iters=1, repo=REPO)
    tree = RunsTree.read(root, project_root=REPO)
    index = dict(tree.index)
    table = unlabeled_table(tree)
    assert list(table.index) == ["baseline", "pi_unl0x", "pi_unl1x"]
    columns = ["terms", "labelled", "unlabeled", "iterations"]
    assert table.loc["baseline", columns].tolist() == ["baseline", 8, 0, 1]
    assert table.loc["pi_unl0x", columns].tolist() == ["+PI", 8, 0, 1]
    assert table.loc["pi_unl1x", columns].tolist() == ["+PI", 8, 8, 1]
    assert (table["n_finished"] == 1).all() and table["miou_mean"].notna().all()
    assert list(unlabeled_runs(tree, table)["experiment"]) == list(table.index)
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
    """What unlabeled_table returns, by hand: the baseline, +PI without and with a pool of 16,
    +PI+PA+HO with it, the 2x controls of both (+PI+PA+HO's with no finished seed), and a +PI
    run at other iterations without a control."""
    rows = {
        "baseline": ("baseline", "baseline", 0, 1000, 3),
        "pi_unl0x": ("+PI, no pool", "+PI", 0, 1000, 3),
        "pi_unl1x": ("+PI, pool", "+PI", 16, 1000, 2),
        "pi_pa_ho_unl1x": ("+PI+PA+HO, pool", "+PI+PA+HO", 16, 1000, 3),
        "pi_unl1x_2x": ("+PI, pool, 2x iterations", "+PI", 16, 2000, 3),
        "pi_pa_ho_unl1x_2x": ("+PI+PA+HO, pool, 2x iterations", "+PI+PA+HO", 16, 2000, 0),
        "pi_long": ("+PI, pool, long", "+PI", 16, 3000, 3),
    }
    columns = ["label", "terms", "unlabeled", "iterations", "n_finished"]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    frame["labelled"], frame["n_runs"] = 16, 3
    return frame


def test_unlabeled_pairs_by_hand() -> None:
    assert unlabeled_pairs(_unlabeled_frame()) == {
        "pool": [("pi_unl0x", "pi_unl1x")],
        "terms": [("pi_unl1x", "pi_pa_ho_unl1x")],  # the +PI+PA+HO control has no seed
        "baseline": [
            ("baseline", "pi_unl0x"),
            ("baseline", "pi_unl1x"),
            ("baseline", "pi_pa_ho_unl1x"),
        ],
        "convergence": [("pi_unl1x", "pi_unl1x_2x")],
    }
    # The demo tree runs every experiment for one iteration: a control is still told apart.
    frame = _unlabeled_frame().drop(index="pi_long").assign(iterations=1, n_finished=1)
    pairs = unlabeled_pairs(frame)
    assert pairs["pool"] == [("pi_unl0x", "pi_unl1x")]
    assert pairs["terms"] == [("pi_unl1x", "pi_pa_ho_unl1x"), ("pi_unl1x_2x", "pi_pa_ho_unl1x_2x")]
    assert len(pairs["baseline"]) == 3 and len(pairs["convergence"]) == 2


def _runs() -> pd.DataFrame:
    """collect_runs' rows by hand: seed means 50 (sd 1), 52, 58 and 59 (sd 2) points."""
    scores = {
        "baseline": ("baseline", [0.49, 0.50, 0.51]),
        "pi_unl0x": ("+PI, no pool", [0.50, 0.52, 0.54]),
        "pi_unl1x": ("+PI, pool", [0.56, 0.58, 0.60]),
        "pi_unl1x_2x": ("+PI, pool, 2x iterations", [0.57, 0.59, 0.61]),
    }
    rows = [
        {"experiment": name, "label": label, "seed": seed, "status": "finished", "miou": miou}
        for name, (label, values) in scores.items()
        for seed, miou in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_unlabeled_reading_by_hand() -> None:
    # Pool: 58 - 52 = +6, se = sqrt(4/3 + 4/3) = 1.633, t = 3.674, df = (8/3)^2 / (2 (4/3)^2 / 2)
    # = 4, two-sided p = 0.0213. The control moves the pool's seed mean 58 -> 59: not converged.
    table = _unlabeled_frame().loc[["baseline", "pi_unl0x", "pi_unl1x", "pi_unl1x_2x"]]
    table["n_finished"] = 3
    lines = unlabeled_reading(_runs(), table, teacher_miou=0.7).splitlines()
    assert lines[:3] == [
        "- The pool: +PI, pool against +PI, no pool: 52.00 -> 58.00, +6.00 points, p = 0.021 "
        "(Welch's t = 3.67, df = 4.0): larger than seed noise.",
        "- Convergence: +PI, pool moved +1.00 points at twice the iterations (seeds 0, 1, 2): "
        "not converged (the rule: less than 0.5).",
        "- So +PI, pool against +PI, no pool is not a converged comparison: +PI, no pool has no "
        "2x control and +PI, pool was still moving.",
    ]
    assert [line.split(":")[1] for line in lines[3:5]] == [
        " +PI, no pool against baseline",
        " +PI, pool against baseline",
    ]
    assert lines[5:] == ["- Ceiling: the teacher scores 70.00."]
    assert unlabeled_reading(_runs().iloc[:0], table.iloc[:0]) == ""


def test_paper_camvid_table_holds_the_papers_numbers() -> None:
    table = paper_camvid_table()
    assert table.shape == (len(PAPER_CAMVID), 4)
    assert table.iloc[0].tolist() == ["ESPNet", 57.8, 61.4, 65.1]


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
    quick_iters = load_config(REPO / "configs" / "quick.yaml").train.max_iters
    frame = _unlabeled_frame().loc[["baseline", "pi_unl1x"]]
    frame["iterations"] = [quick_iters, 40]
    tree = RunsTree(tmp_path, index, tmp_path)
    setup = unlabeled_setup(frame, tree, teacher_miou=0.6).set_index("setting")
    assert setup.loc["labelled / unlabeled images per step", "value"] == "8 / 4"
    assert setup.loc["labelled images", "value"] == "16 training images of embedded"
    assert setup.loc["unlabeled images (pool)", "value"] == "16"
    assert setup.loc["iterations", "value"] == f"40 and {quick_iters}"
    assert setup.loc["seeds per setting", "value"] == "3"
    assert setup.loc["teacher", "value"].endswith("val mIoU 60.00 %")
    assert stream_reuse(frame, tree) == (
        "Each run with the pool draws 40 x 4 = 160 unlabeled images, so it sees each of the 16 "
        "images about 10 times (twice as often in a 2x control)."
    )
    assert list(unlabeled_runs(tree, frame.iloc[::-1])["experiment"]) == ["pi_unl1x", "baseline"]
