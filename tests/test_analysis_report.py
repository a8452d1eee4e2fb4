"""skdlib.analysis.report: the chapters' words and tables, against values computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from skdlib.analysis.report import (
    best_line,
    comparison_lines,
    comparison_table,
    difference,
    experiment_cell,
    measured,
    network,
    paired_difference,
    points,
    results_table,
    seeds_finished,
    setting_value,
    settings_table,
    setup_table,
    skipped_steps,
    transfer,
)
from skdlib.analysis.runs import RunsTree
from skdlib.analysis.stats import contrast
from skdlib.train.config import load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _table() -> pd.DataFrame:
    """Three finished experiments of three seeds each, one not run.

    By hand, B - A: diff 0.02, se sqrt(0.01^2/3 + 0.02^2/3) = 0.0129099, t = 1.549, Welch's
    df = (v_a + v_b)^2 / (v_a^2/2 + v_b^2/2) = 2.94, two-sided p = 0.221 (within seed noise);
    C - A: diff 0.06, se sqrt(2 * 0.01^2/3) = 0.0081650, t = 7.348, df = 4, p = 0.0018 (larger).
    """
    rows = {
        "a": ("A", 3, 3, "", 0.50, 0.01, 0.49, 0.51, 0.80, 0.005),
        "b": ("B", 3, 3, "", 0.52, 0.02, 0.50, 0.54, 0.81, math.nan),
        "c": ("C", 3, 3, "", 0.56, 0.01, 0.55, 0.57, 0.82, 0.010),
        "x": ("X", 1, 0, "seed0 unfinished", *[math.nan] * 6),
    }
    columns = ["label", "n_runs", "n_finished", "missing", "miou_mean", "miou_std"]
    columns += ["miou_min", "miou_max", "pixel_acc_mean", "pixel_acc_std"]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "experiment"
    return table


# --------------------------------------------------------------------------------------------------
# Words for numbers
# --------------------------------------------------------------------------------------------------
def test_points_formats_fractions_in_points() -> None:
    assert points(0.5, 0.0125) == "50.00 ± 1.25"
    assert points(0.5) == "50.00"
    assert points(0.123456, math.nan, digits=1) == "12.3"
    assert points(math.nan, 0.01) == "n/a"
    assert points(None) == "n/a"


def test_seeds_finished_and_experiment_cell() -> None:
    table = _table()
    assert seeds_finished(table.loc["a"]) == "3/3"
    assert seeds_finished(table.loc["x"]) == "0/1 (seed0 unfinished)"
    assert experiment_cell(table, "b") == "52.00 ± 2.00 (3/3 seeds)"
    assert experiment_cell(table, "x") == "not run"
    assert experiment_cell(table, "absent") == "not run"


def test_difference_words_a_comparison_and_a_contrast() -> None:
    table = _table()
    assert (
        difference(contrast(table, ["b"], ["a"])) == "+2.00 points, p = 0.221 (within seed noise)"
    )
    row = {"diff": -0.0123, "p": math.nan, "verdict": "not testable: 1 finished seed(s)"}
    assert difference(row) == "-1.23 points (not testable: 1 finished seed(s))"
    plain = {"value": 0.5, "p": 0.0004, "verdict": "larger than seed noise"}
    assert (
        difference(plain, scale=1, unit="", digits=3)
        == "+0.500, p < 0.001 (larger than seed noise)"
    )


def test_measured_names_what_is_missing() -> None:
    table = _table()
    assert measured(table, ["c"], ["a"]) == "+6.00 points, p = 0.002 (larger than seed noise)"
    assert measured(table, ["c", "x"], ["a", "y"]) == (
        "not measured in this tree (no finished runs of x, y)"
    )


def test_paired_difference_by_hand() -> None:
    # gaps 2, 3, 4: mean 3, sample std 1, se 1 / sqrt(3), t = 3 sqrt(3) = 5.196
    result = paired_difference([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])
    assert result["value"] == pytest.approx(3.0)
    assert result["se"] == pytest.approx(1 / math.sqrt(3))
    assert result["t"] == pytest.approx(3 * math.sqrt(3)) and result["df"] == pytest.approx(2)
    assert result["p"] == pytest.approx(0.0351, abs=1e-4)  # 2 P(T_2 > 5.196)
    assert result["exceeds"] and result["verdict"] == "larger than the noise"
    assert not paired_difference([3.0, 5.0, 7.0], [1.0, 2.0, 3.0], alpha=0.01)["exceeds"]
    # gaps 1, -1: mean 0, t 0
    assert paired_difference([1.0, 0.0], [0.0, 1.0])["verdict"] == "within the noise"
    one = paired_difference([1.0], [0.0])
    assert one["verdict"].startswith("not testable") and math.isnan(one["se"])
    with pytest.raises(ValueError, match="pair up"):
        paired_difference([1.0], [1.0, 2.0])


# --------------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------------
def test_comparison_table_by_hand() -> None:
    frame = comparison_table(_table(), [("b", "a"), ("c", "a"), ("absent", "a")])
    assert frame.to_dict("records") == [
        {
            "comparison": "B vs A",
            "difference (mIoU points)": "+2.00",
            "Welch's t": "+1.55",
            "df": "2.9",
            "p (two-sided)": "0.221",
            "verdict": "within seed noise",
        },
        {
            "comparison": "C vs A",
            "difference (mIoU points)": "+6.00",
            "Welch's t": "+7.35",
            "df": "4.0",
            "p (two-sided)": "0.002",
            "verdict": "larger than seed noise",
        },
    ]
    assert comparison_table(_table(), []).empty


def test_comparison_lines_with_the_papers_difference() -> None:
    lines = comparison_lines(
        _table(), [("b", "a"), ("c", "a"), ("x", "a")], paper={"a": 69.10, "b": 70.51}
    )
    assert lines == [
        "- B vs A: +2.00 points, p = 0.221 (within seed noise); the paper: +1.41.",
        "- C vs A: +6.00 points, p = 0.002 (larger than seed noise).",
    ]


def test_best_line() -> None:
    assert best_line(_table()) == "- The highest mean is C (56.00)."
    assert best_line(_table().loc[["x"]]) == ""


def test_results_table_by_hand() -> None:
    teacher = {"status": "finished", "miou": 0.7, "pixel_acc": 0.9}
    frame = results_table(
        _table(), reference="a", paper={"a": 69.10, "c": 70.00, "teacher": 78.56}, teacher=teacher
    )
    assert list(frame.columns) == [
        "setting",
        "seeds finished",
        "mIoU % (mean ± std)",
        "range %",
        "pixel acc %",
        "vs A (points)",
        "p",
        "verdict",
        "paper mIoU %",
        "paper vs A",
    ]
    rows = frame.set_index("setting")
    assert rows.loc["A", "vs A (points)"] == "reference"
    assert rows.loc["B", "mIoU % (mean ± std)"] == "52.00 ± 2.00"
    assert rows.loc["B", "range %"] == "50.00-54.00"
    assert rows.loc["B", "pixel acc %"] == "81.00"
    assert rows.loc["C", ["vs A (points)", "p"]].tolist() == ["+6.00", "0.002"]
    assert rows.loc["C", ["paper mIoU %", "paper vs A"]].tolist() == ["70.00", "+0.90"]
    assert rows.loc["B", "paper vs A"] == ""
    assert rows.loc["X", "range %"] == "n/a"
    assert rows.loc[
        "teacher", ["seeds finished", "mIoU % (mean ± std)", "paper mIoU %"]
    ].tolist() == [
        "finished",
        "70.00",
        "78.56",
    ]
    plain = results_table(_table())
    assert list(plain.columns) == [
        "setting",
        "seeds finished",
        "mIoU % (mean ± std)",
        "range %",
        "pixel acc %",
    ]


# --------------------------------------------------------------------------------------------------
# Run folders and settings
# --------------------------------------------------------------------------------------------------
def _profile(tmp_path: Path) -> tuple[Path, dict]:
    """``pi``: seed0 unfinished (a config, no summary), seed1 finished with 7 iterations and two
    skipped records; ``pa``: seed0 failed."""
    profile = tmp_path / "quick"
    runs = {
        "pi/seed0": (["train.max_iters=5"], None, []),
        "pi/seed1": (
            ["train.max_iters=7"],
            {"finished": True},
            [{"iter": 1}, {"iter": 2, "nonfinite": True}, {"iter": 3, "skipped_critic": 1}],
        ),
        "pa/seed0": ([], {"finished": False}, [{"iter": 1, "skipped_critic": 0}]),
    }
    for run_dir, (overrides, summary, records) in runs.items():
        folder = profile / run_dir
        folder.mkdir(parents=True)
        save_config(load_config(CONFIGS / "smoke.yaml", overrides), folder / "config.yaml")
        if summary is not None:
            (folder / "summary.json").write_text(json.dumps(summary))
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    index = {
        "profile": "quick",
        "experiments": [
            {
                "name": "pi",
                "runs": [{"seed": 0, "run_dir": "pi/seed0"}, {"seed": 1, "run_dir": "pi/seed1"}],
            },
            {"name": "pa", "runs": [{"seed": 0, "run_dir": "pa/seed0", "status": "failed"}]},
        ],
    }
    return profile, index


def test_first_config_takes_the_first_finished_run(tmp_path: Path) -> None:
    tree = RunsTree(*_profile(tmp_path), tmp_path)
    assert tree.first_config("pi").train.max_iters == 7
    assert tree.first_config("pa") is None
    assert tree.first_config("absent") is None


def test_skipped_steps_counts_records(tmp_path: Path) -> None:
    tree = RunsTree(*_profile(tmp_path), tmp_path)
    assert skipped_steps(tree, ["pi", "pa", "absent"]) == {"pi": 2, "pa": 0}


def test_setting_value() -> None:
    cfg = load_config(
        CONFIGS / "quick.yaml", ["data.scale_range=[0.75,1.5]", "train.teacher_cache=false"]
    )
    assert setting_value(cfg, "data.scale_range") == "0.75-1.5"
    assert setting_value(cfg, "distill.lambda_ho") == "0.1"
    assert setting_value(cfg, "data.crop_size") == "64-128"
    assert setting_value(None, "distill.pool") == "n/a"


def test_settings_table_marks_differences() -> None:
    paper = load_config(CONFIGS / "quick.yaml")
    code = load_config(
        CONFIGS / "quick.yaml",
        ["distill.pool=max", "data.scale_range=[0.7,2.1]", "train.teacher_cache=false"],
    )
    frame = settings_table(
        {"pi": paper, "official_pi": code},
        ["distill.pool", "data.scale_range", "distill.lambda_pi", "distill.detach_norm"],
    )
    assert frame.values.tolist() == [
        ["distill.pool", "avg", "max", True],
        ["data.scale_range", "1-1", "0.7-2.1", True],
        ["distill.lambda_pi", "10", "10", False],
        ["distill.detach_norm", "False", "False", False],
    ]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ([], "global pair-wise (lambda 10; avg pooling, 2x2 nodes)"),
        (
            ["distill.pool=max", "distill.node_size=1", "distill.node_fraction=0.5"],
            "global pair-wise (lambda 10; max pooling, kernel 0.5 of the map)",
        ),
        (["distill.pairwise=false"], "none"),
        (["distill.pairwise=false", "distill.mimic=true"], "MIMIC, 1x1-conv regression (lambda "),
        (["distill.pairwise=false", "distill.attention=true"], "attention transfer (lambda "),
        (
            ["distill.pairwise=false", "distill.local_pairwise=true"],
            "local pair-wise, 8 neighbours",
        ),
    ],
)
def test_transfer_names_the_extra_term(overrides: list[str], words: str) -> None:
    assert transfer(load_config(CONFIGS / "quick.yaml", overrides).distill).startswith(words)


def test_network() -> None:
    assert network("pspnet_resnet18", {"width": 0.25}) == "pspnet_resnet18 width 0.25"
    assert network("espnet", {}) == "espnet width 1"


def test_setup_table_reads_configs_and_data(tmp_path: Path) -> None:
    from skdlib.data.generate import ensure_embedded

    data = ensure_embedded(tmp_path / "data", height=128, width=128, num_train=4, num_val=2)
    student = load_config(
        CONFIGS / "quick.yaml", [f"data.root={data}", "data.options=null", "data.train_limit=3"]
    )
    teacher = load_config(CONFIGS / "teacher_quick.yaml")
    frame = setup_table(student, teacher, tree=RunsTree(tmp_path, {}, tmp_path)).set_index(
        "setting"
    )["these runs"]
    assert frame["data"] == "embedded, 3 train / 2 val"
    # The teacher's data is not on disk here: counted from its generator options (not the
    # students' 3 scenes on disk).
    scenes = teacher.data.options["num_train"]
    assert scenes != 3 and frame["teacher data"] == f"embedded, {scenes} train (labelled)"
    # The preset's student and optimiser (configs/quick.yaml: a sixteenth of ResNet18's width).
    assert frame["student"] == "pspnet_resnet18 width 0.0625, init random"
    assert frame["optimiser"] == f"adamw, lr {student.train.lr:g}, weight decay 0.0005"
    assert frame["crop"] == "64 x 128" and frame["random scale"] == "1-1"
    assert frame["node size beta"] == "2 x 2"
    assert frame["lambda1 (PI, PA) / lambda2 (HO)"] == "10, 10 / 0.1"
    with_paper = setup_table(
        student,
        teacher,
        tree=RunsTree(tmp_path, {}, tmp_path),
        paper={"crop": ("512 x 512", "CPU budget")},
    )
    assert list(with_paper.columns) == ["setting", "paper", "these runs", "why"]
    crop = with_paper.set_index("setting").loc["crop"].tolist()
    assert crop == ["512 x 512", "64 x 128", "CPU budget"]


def test_teacher_checks_by_hand() -> None:
    from skdlib.analysis.report import teacher_checks

    teacher = {"miou": 0.78, "class_names": ["road", "pole"], "class_iou": [0.9, 0.29]}
    curve = pd.DataFrame({"iter": [2000, 4000, 6000, 8000], "miou": [0.6, 0.7, 0.772, 0.78]})
    checks = teacher_checks(teacher, curve, 0.62).set_index("criterion")
    assert checks["holds"].tolist() == [True, False, True]
    assert checks.loc["above the baseline's seed mean", "measured"].startswith("16.0 points")
    assert checks.loc["every class learnt", "measured"] == "lowest: pole 0.29"
    assert checks.loc["its own curve at a plateau", "measured"] == "+0.80 points (6000 -> 8000)"
    # A gap of 7.9 points fails; a curve rising 1 point or more fails; no curve cannot hold.
    assert not teacher_checks(teacher, curve, 0.701)["holds"].iloc[0]
    rising = curve.assign(miou=[0.6, 0.7, 0.76, 0.78])
    assert not teacher_checks(teacher, rising, 0.62)["holds"].iloc[2]
    assert not teacher_checks(teacher, curve.iloc[:1], 0.62)["holds"].iloc[2]
