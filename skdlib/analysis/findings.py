"""The book's findings in a few lines, computed from a runs tree (the introduction).

Each line is read from the same run folders the result chapters read: the teacher against the
baseline, each distillation setting of the ablation against the baseline, the largest pool of
unlabeled scenes against the same terms without one, and whether every compared setting reached
its plateau. Nothing is typed in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from skdlib.analysis.report import comparison_lines, points
from skdlib.analysis.runs import experiment_table, plateau_of_groups, teacher_summary
from skdlib.analysis.unlabeled import unlabeled_table

__all__ = ["findings"]

PathLike = str | os.PathLike[str]

#: The groups whose settings the plateau line covers (those the chapters compare).
COMPARED_GROUPS = ("ablation", "lambda", "later", "variants", "official", "unlabeled")


def _teacher_line(index: Mapping[str, Any], ablation: pd.DataFrame, profile_dir: PathLike) -> str:
    teacher = teacher_summary(index, profile_dir=profile_dir) or {}
    if teacher.get("miou") is None or "baseline" not in ablation.index:
        return ""
    base = ablation.loc["baseline", "miou_mean"]
    return (
        f"- The teacher scores {points(teacher['miou'])} val mIoU, "
        f"{100 * (teacher['miou'] - base):.1f} points above the baseline student's seed mean "
        f"({points(base)})."
    )


def _unlabeled_lines(index: Mapping[str, Any], profile_dir: PathLike) -> list[str]:
    """Per distilled terms: the largest pool against the same terms without unlabeled scenes."""
    table = unlabeled_table(index, profile_dir=profile_dir)
    if not len(table) or "unlabeled" not in table:
        return []
    done = table[table["n_finished"] > 0]
    pairs = []
    for terms, mine in done.groupby("terms", sort=False):
        zero = mine[mine["unlabeled"] == 0]
        if terms == "baseline" or not len(zero) or mine["unlabeled"].max() <= 0:
            continue
        pairs.append((mine["unlabeled"].astype(float).idxmax(), zero.index[0]))
    return comparison_lines(table, pairs)  # labels such as "+PI, 16x unlabeled" vs "+PI"


def _plateau_line(index: Mapping[str, Any], profile_dir: PathLike) -> str:
    plateau = plateau_of_groups(index, COMPARED_GROUPS, profile_dir=profile_dir)
    if not len(plateau):
        return ""
    failing = list(plateau.index[~plateau["at_plateau"].astype(bool)])
    if not failing:
        return f"- All {len(plateau)} compared settings reached their plateau."
    return f"- Not at a plateau: {', '.join(failing)} (of {len(plateau)} settings)."


def findings(index: Mapping[str, Any], *, profile_dir: PathLike) -> list[str]:
    """Markdown bullets: the teacher against the baseline, each ablation setting against the
    baseline (with the noise verdict), the largest unlabeled pool against the same terms without
    it, and the plateau check over every compared setting. Lines whose runs are missing are left
    out; ``[]`` when nothing has finished."""
    ablation = experiment_table(index, "ablation", profile_dir=profile_dir)
    ablation = ablation[ablation["n_finished"] > 0]
    lines = [_teacher_line(index, ablation, profile_dir)]
    lines += comparison_lines(
        ablation, [(name, "baseline") for name in ablation.index if name != "baseline"]
    )
    lines += _unlabeled_lines(index, profile_dir)
    lines.append(_plateau_line(index, profile_dir))
    return [line for line in lines if line]
