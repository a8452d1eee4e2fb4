"""The book's findings in a few lines, computed from a runs tree (the introduction).

Each line is read from the same run folders the result chapters read: the teacher against the
baseline, each distillation setting of the ablation against the baseline, the largest pool of
unlabeled scenes against the same terms without one, and whether every compared setting reached
its plateau. Nothing is typed in.
"""

from __future__ import annotations

import pandas as pd

from skdlib.analysis.report import comparison_lines, points
from skdlib.analysis.runs import RunsTree, experiment_table, teacher_summary
from skdlib.analysis.stats import plateau_of_groups
from skdlib.analysis.unlabeled import unlabeled_table

__all__ = ["findings"]

#: The groups whose settings the plateau line covers (those the chapters compare).
COMPARED_GROUPS = ("ablation", "lambda", "later", "variants", "official", "unlabeled")


def _teacher_line(tree: RunsTree, ablation: pd.DataFrame) -> str:
    teacher = teacher_summary(tree) or {}
    if teacher.get("miou") is None or "baseline" not in ablation.index:
        return ""
    base = ablation.loc["baseline", "miou_mean"]
    return (
        f"- The teacher scores {points(teacher['miou'])} val mIoU, "
        f"{100 * (teacher['miou'] - base):.1f} points above the baseline student's seed mean "
        f"({points(base)})."
    )


def _unlabeled_lines(tree: RunsTree) -> list[str]:
    """Per distilled terms: the largest pool against the same terms without unlabeled scenes."""
    table = unlabeled_table(tree)
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


def _plateau_line(tree: RunsTree) -> str:
    plateau = plateau_of_groups(tree, COMPARED_GROUPS)
    if not len(plateau):
        return ""
    failing = list(plateau.index[~plateau["at_plateau"].astype(bool)])
    if not failing:
        return f"- All {len(plateau)} compared settings reached their plateau."
    return f"- Not at a plateau: {', '.join(failing)} (of {len(plateau)} settings)."


def findings(tree: RunsTree) -> list[str]:
    """Markdown bullets: the teacher against the baseline, each ablation setting against the
    baseline (with the noise verdict), the largest unlabeled pool against the same terms without
    it, and the plateau check over every compared setting. Lines whose runs are missing are left
    out; ``[]`` when nothing has finished."""
    ablation = experiment_table(tree, "ablation")
    ablation = ablation[ablation["n_finished"] > 0]
    lines = [_teacher_line(tree, ablation)]
    lines += comparison_lines(
        ablation, [(name, "baseline") for name in ablation.index if name != "baseline"]
    )
    lines += _unlabeled_lines(tree)
    lines.append(_plateau_line(tree))
    return [line for line in lines if line]
