"""The book's findings: one verdict per question, computed from a runs tree (the introduction).

The questions are the paper's and the book's (does each term help in the paper's regime, and at
which λ1; how do CWD and DIST compare; do the structured terms add anything to PI with unlabeled
scenes; does Fig. 3 separate the students): each answer is a sentence of
:func:`skdlib.analysis.verdicts.verdict_with_control` (seed means, the difference, Welch's two-sided
p-value, the verdict, and what the twice-as-long controls say), read from the same run folders the
result chapters read. Settings are named by their labels. Nothing is typed in.
"""

from __future__ import annotations

import math

import pandas as pd

from skdlib.analysis.ablation import reading
from skdlib.analysis.embedding import embedding_scores, load_fig3_models
from skdlib.analysis.fig3 import WITH, WITHOUT
from skdlib.analysis.report import difference, paired_difference
from skdlib.analysis.runs import RunsTree, collect_runs, teacher_summary
from skdlib.analysis.verdicts import seed_scores, verdict_with_control

__all__ = ["QUESTIONS", "fig3_line", "findings"]

#: ``(reference, setting, question)`` beyond the ablation's own (:func:`~.ablation.reading`).
QUESTIONS = (
    ("baseline", "cwd", "How does CWD compare"),
    ("baseline", "dist", "How does DIST compare"),
    ("pi_unl0x", "pi_unl1x", "Do unlabeled scenes help the pixel-wise term"),
    (
        "pi_unl1x",
        "pi_pa_ho_unl1x",
        "Do the structured terms add anything to it with unlabeled scenes",
    ),
)


def _answered(runs: pd.DataFrame, reference: str, setting: str) -> bool:
    return bool(len(seed_scores(runs, reference)) and len(seed_scores(runs, setting)))


def fig3_line(tree: RunsTree, *, seed: int = 0) -> str:
    """Fig. 3 by the critic of the holistic run (seed ``seed``): on the validation scenes, is the
    +PI+PA+HO student's score closer to the teacher's than the +PI+PA student's (a paired test
    over the images of ``|diff without HO| - |diff with HO|``)? ``""`` when the runs or their
    weights are missing. The fair judge's answer is the embedding chapter's (it trains a critic).
    """
    try:
        fig3 = load_fig3_models(tree, seed=seed)
    except (FileNotFoundError, ValueError):
        return ""
    scores = embedding_scores(fig3.critic, fig3.teacher, fig3.students, fig3.val_set)
    without, with_ho = scores[f"diff/{WITHOUT}"].abs(), scores[f"diff/{WITH}"].abs()
    gap = paired_difference(without, with_ho)
    closer = int((without > with_ho).sum())
    return (
        f"- Does Fig. 3 separate the students: to the critic of the holistic run (seed {seed}), "
        f"the +PI+PA+HO student's maps score closer to the teacher's than the +PI+PA student's on "
        f"{closer} of {len(scores)} validation scenes; |difference without HO| - |with HO|: "
        f"{difference(gap, scale=1, unit='', digits=4)} (a paired t-test over the scenes). "
        "The fair judge's answer: the embedding chapter."
    )


def findings(tree: RunsTree, *, fig3: bool = True) -> list[str]:
    """Markdown bullets, one verdict per question whose runs finished: the ablation's
    (:func:`~skdlib.analysis.ablation.reading`: each term over the one before, the best λ1, the
    teacher's lead), CWD and DIST against the baseline, the unlabeled pool, the structured terms
    with it, and Fig. 3 (``fig3=False`` leaves it out: it loads networks). ``[]`` when nothing
    has finished."""
    runs = collect_runs(tree)
    if not len(runs):
        return []
    teacher = teacher_summary(tree) or {}
    miou = teacher.get("miou")
    lines = reading(runs, math.nan if miou is None else float(miou))
    lines += [
        "- " + verdict_with_control(runs, ref, setting, question=question)
        for ref, setting, question in QUESTIONS
        if _answered(runs, ref, setting)
    ]
    if fig3:
        lines.append(fig3_line(tree))
    return [line for line in lines if line]
