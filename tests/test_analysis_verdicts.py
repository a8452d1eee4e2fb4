"""Tests of the comparisons, convergence controls and verdict sentences (analysis.verdicts)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from skdlib.analysis.verdicts import (
    compare,
    comparison_table,
    convergence_table,
    seed_scores,
    sentence,
)


def _runs(values: dict[str, list[float | None]]) -> pd.DataFrame:
    rows = []
    for name, scores in values.items():
        for seed, v in enumerate(scores):
            rows.append(
                {
                    "experiment": name,
                    "label": f"+{name}" if name != "baseline" else "baseline",
                    "seed": seed,
                    "status": "finished" if v is not None else "failed",
                    "miou": math.nan if v is None else v / 100,
                }
            )
    return pd.DataFrame(rows)


RUNS = _runs(
    {
        "baseline": [57.0, 56.0, 58.0, 57.5, 56.5],
        "pi": [59.0, 60.0, 58.5, 59.5, None],
        "dist": [57.2, 56.9, 57.4],
        "baseline_2x": [57.3, 56.2, 58.1],
        "pi_2x": [60.5, 61.0, 59.0],
    }
)


def test_seed_scores_in_points_finished_only() -> None:
    assert list(seed_scores(RUNS, "pi")) == pytest.approx([59.0, 60.0, 58.5, 59.5])
    assert seed_scores(RUNS, "nothing").empty


def test_compare_is_welch_on_the_finished_seeds() -> None:
    c = compare(RUNS, "baseline", "pi")
    ref = stats.ttest_ind([59.0, 60.0, 58.5, 59.5], [57.0, 56.0, 58.0, 57.5, 56.5], equal_var=False)
    assert c.difference == pytest.approx(59.25 - 57.0)
    assert c.test.p == pytest.approx(ref.pvalue) and c.test.n == (5, 4)
    assert c.test.verdict == "larger than seed noise"
    assert compare(RUNS, "baseline", "dist").test.verdict == "within seed noise"


def test_table_and_sentence() -> None:
    table = comparison_table(RUNS, [("baseline", "pi"), ("baseline", "dist")])
    assert list(table["setting"]) == ["+pi", "+dist"]
    assert table.loc[0, "seeds"] == "4 vs 5" and table.loc[0, "setting mIoU"] == "59.25 ± 0.65"
    assert table.loc[1, "verdict"] == "within seed noise"
    text = sentence(compare(RUNS, "baseline", "pi"), question="Does PI help")
    assert text.startswith("Does PI help: +pi against baseline: 57.00 -> 59.25, +2.25 points, p =")
    assert text.endswith("larger than seed noise.")
    lone = _runs({"baseline": [57.0], "pi": [58.0, 59.0]})
    assert "not testable" in sentence(compare(lone, "baseline", "pi"))


def test_convergence_on_the_shared_seeds() -> None:
    table = convergence_table(RUNS, [("baseline", "baseline_2x"), ("pi", "pi_2x")])
    base, pi = table.iloc[0], table.iloc[1]
    assert base["seeds"] == "0, 1, 2"
    assert base["mIoU at 1x"] == pytest.approx(57.0) and base["change"] == pytest.approx(0.2)
    assert bool(base["converged"]) and not bool(pi["converged"])  # 59.17 -> 60.17
    none = convergence_table(RUNS, [("baseline", "missing_2x")]).iloc[0]
    assert none["seeds"] == "none" and not bool(none["converged"])


def test_verdict_with_control_says_what_twice_the_iterations_show() -> None:
    from skdlib.analysis.verdicts import verdict_with_control

    runs = _runs(
        {
            "baseline": [57.0, 56.0, 58.0],
            "baseline_2x": [57.2, 56.2, 58.2],  # +0.2: converged
            "pi": [55.0, 56.0, 57.0],
            "pi_2x": [56.0, 57.0, 58.0],  # +1.0: not converged
            "dist": [58.0, 59.0, 60.0],
        }
    )
    text = verdict_with_control(runs, "baseline", "pi", question="Does it help")
    assert text.startswith("Does it help: +pi against baseline: 57.00 -> 56.00, -1.00 points")
    assert "Not converged: twice the iterations moved +pi +1.00 points." in text
    # At 2x: 57.2 vs 57.0, both sd 1, n 3: t = -0.2 / sqrt(2/3), df 4.
    p = 2 * stats.t.sf(0.2 / math.sqrt(2 / 3), 4)
    assert f"At twice the iterations: -0.20 points, p = {p:.3f}" in text
    only_one = verdict_with_control(runs, "baseline", "dist")
    assert only_one.endswith("moved less than 0.5 point (the one that ran).")
    none = verdict_with_control(
        runs.loc[~runs["experiment"].str.endswith("_2x")], "baseline", "dist"
    )
    assert none.endswith("(No twice-as-long control of either side was run.)")
