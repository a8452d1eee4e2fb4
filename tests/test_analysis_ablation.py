"""Tests of the ablation chapter's helpers (analysis.ablation) on hand-made run frames."""

from __future__ import annotations

import math

import pandas as pd

from skdlib.analysis import ablation


def _runs(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [
        {"experiment": name, "label": name, "seed": seed, "status": "finished", "miou": v / 100}
        for name, scores in values.items()
        for seed, v in enumerate(scores)
    ]
    return pd.DataFrame(rows)


RUNS = _runs(
    {
        "baseline": [57.0, 56.0, 58.0],
        "baseline_2x": [57.2, 56.2, 58.2],
        "pi": [55.0, 56.0, 57.0],
        "pi_pa": [55.5, 56.5, 57.5],
        "pi_l1": [57.0, 58.0, 59.0],
        "pi_l3": [56.0, 57.0, 58.0],
    }
)


def test_present_keeps_the_finished_settings_in_order() -> None:
    assert ablation.present(RUNS, ["pi_pa_ho", "pi", "baseline"]) == ["pi", "baseline"]


def test_steps_table_tests_only_steps_that_ran() -> None:
    table = ablation.steps_table(RUNS)
    assert list(zip(table["against"], table["setting"], strict=True)) == [
        ("baseline", "pi"),
        ("pi", "pi_pa"),
        ("baseline", "pi_pa"),
    ]
    assert table.loc[0, "difference"] == -1.0  # 56 - 57


def test_convergence_view_pairs_each_setting_with_its_control() -> None:
    view = ablation.convergence_view(RUNS)
    assert list(view["setting"]) == ["baseline"]
    assert view.loc[0, "change"] == 0.2 and view.loc[0, "converged"] == "yes"


def test_lambda_table_and_best_lambda() -> None:
    table = ablation.lambda_table(RUNS)
    # +PI+PA ran at λ1 = 10 only (the ablation's own run)
    assert list(zip(table["terms"], table["λ1"], strict=True)) == [
        ("+PI", 1), ("+PI", 3), ("+PI", 10), ("+PI+PA", 10)
    ]  # fmt: skip
    assert list(table["vs baseline"]) == [1.0, 0.0, -1.0, -0.5]
    lines = ablation.reading(RUNS, 0.70)
    assert any("+PI at λ1 = 1 (58.00" in line for line in lines)
    assert lines[-1].startswith("- The teacher scores 70.00, 13.00 points above")
    assert not any(line.startswith("- Does the holistic term") for line in lines)


def test_regime_view_marks_the_chosen_recipe() -> None:
    records = pd.DataFrame(
        [
            {"kind": "teacher", "width": 0.25, "init": "pretrained", "scenes": 100, "lr": 0.02,
             "iters": 4000, "seed": 0, "miou": 73.0, "min_class_iou": 0.5},
            *[
                {"kind": "student", "width": 0.0625, "init": "pretrained", "scenes": 100,
                 "lr": 0.02, "iters": t, "seed": s, "miou": m, "min_class_iou": 0.2}
                for t, s, m in [(1000, 0, 57.0), (1000, 1, 58.0), (2000, 0, 57.5), (2000, 1, 58.1)]
            ],
        ]
    )  # fmt: skip
    chosen = {"width": 0.0625, "init": "pretrained", "scenes": 100, "lr": 0.02, "iters": 1000}
    view = ablation.regime_view(records, chosen)
    row = view.iloc[0]
    assert (row["baseline at T"], row["baseline at 2T"], row["change"]) == (
        "57.50",
        "57.80",
        "0.30",
    )
    assert row["converged"] == "yes" and row["chosen"].startswith("<-")
    assert row["gap"] == "15.20" and row["AdamW lr"] == "0.02" and row["student width"] == "0.0625"
    assert math.isclose(float(row["teacher (same scenes)"]), 73.0)
