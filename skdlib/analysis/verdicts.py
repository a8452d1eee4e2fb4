"""Comparisons of settings with p-values, convergence controls, and verdicts in words.

Every function here reads the per-run frame of :func:`skdlib.analysis.runs.collect_runs` (one row
per run: ``experiment``, ``label``, ``seed``, ``status``, ``miou`` as a fraction), so a chapter
computes its tables and sentences from the run folders and types nothing in. Scores are shown in
points (mIoU x 100); "±" is one sample standard deviation across seeds; a difference is *larger
than seed noise* only at ``p < 0.05`` in a two-sided Welch's t-test
(:mod:`skdlib.analysis.significance`).

Convergence (the book's rule): a setting converged when the same seeds trained twice as long
(its ``<name>_2x`` experiment) move its seed mean by less than
:data:`~skdlib.analysis.regimes.CONVERGED_WITHIN` points, both means over the seeds the two share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from skdlib.analysis.regimes import CONVERGED_WITHIN
from skdlib.analysis.significance import TTest, p_cell, welch_test

__all__ = [
    "Comparison",
    "compare",
    "comparison_table",
    "convergence_table",
    "label_of",
    "seed_scores",
    "sentence",
    "verdict_with_control",
]

#: A setting's convergence control: the same seeds, twice the iterations (``<name>_2x``).
TWICE_SUFFIX = "_2x"

_FINISHED = "finished"


def seed_scores(runs: pd.DataFrame, experiment: str) -> pd.Series:
    """The finished runs' mIoU of ``experiment`` in points, indexed by seed (sorted)."""
    if not len(runs):
        return pd.Series(dtype=float)
    mine = runs[(runs["experiment"] == experiment) & (runs["status"] == _FINISHED)]
    return (100 * mine.set_index("seed")["miou"].astype(float)).sort_index()


def label_of(runs: pd.DataFrame, experiment: str) -> str:
    """The setting's label as the reader knows it (its name when the frame has no row)."""
    rows = runs[runs["experiment"] == experiment] if len(runs) else runs
    return str(rows["label"].iloc[0]) if len(rows) else experiment


@dataclass(frozen=True)
class Comparison:
    """``setting`` against ``reference``: their seed means, spreads, and the test of the
    difference ``setting - reference`` (points)."""

    reference: str
    setting: str
    reference_label: str
    setting_label: str
    reference_mean: float
    setting_mean: float
    reference_std: float
    setting_std: float
    test: TTest

    @property
    def difference(self) -> float:
        return self.test.value


def compare(runs: pd.DataFrame, reference: str, setting: str) -> Comparison:
    """Welch's two-sided test of ``setting``'s seed mean minus ``reference``'s."""
    a, b = seed_scores(runs, reference), seed_scores(runs, setting)
    return Comparison(
        reference=reference,
        setting=setting,
        reference_label=label_of(runs, reference),
        setting_label=label_of(runs, setting),
        reference_mean=float(a.mean()) if len(a) else math.nan,
        setting_mean=float(b.mean()) if len(b) else math.nan,
        reference_std=float(a.std(ddof=1)) if len(a) > 1 else math.nan,
        setting_std=float(b.std(ddof=1)) if len(b) > 1 else math.nan,
        test=welch_test(list(a), list(b)),
    )


def comparison_table(runs: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """One row per ``(reference, setting)`` pair: the two settings (labels), their seeds and
    ``mean ± sd``, the difference, Welch's ``t`` and ``df``, the two-sided ``p`` and the
    verdict."""
    rows = []
    for reference, setting in pairs:
        c = compare(runs, reference, setting)
        rows.append(
            {
                "setting": c.setting_label,
                "against": c.reference_label,
                "seeds": f"{c.test.n[1]} vs {c.test.n[0]}",
                "setting mIoU": _mean_sd(c.setting_mean, c.setting_std),
                "reference mIoU": _mean_sd(c.reference_mean, c.reference_std),
                "difference": round(c.difference, 2),
                "Welch's t": round(c.test.t, 2),
                "df": round(c.test.df, 1),
                "p (two-sided)": p_cell(c.test.p),
                "verdict": c.test.verdict,
            }
        )
    return pd.DataFrame(rows)


def _mean_sd(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def sentence(c: Comparison, *, question: str = "") -> str:
    """``"<question>: <setting> against <reference>: 57.16 -> 58.40, +1.24 points, p = 0.012
    (Welch's t = 3.40, df = 7.1): larger than seed noise."`` (numbers from the runs)."""
    head = f"{question}: " if question else ""
    if c.test.untestable:
        return (
            f"{head}{c.setting_label} against {c.reference_label}: {c.test.verdict} "
            f"({c.test.n[1]} and {c.test.n[0]} finished seeds)."
        )
    return (
        f"{head}{c.setting_label} against {c.reference_label}: {c.reference_mean:.2f} -> "
        f"{c.setting_mean:.2f}, {c.test.describe()}: {c.test.verdict}."
    )


def convergence_table(runs: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """One row per ``(setting, control)`` pair (the control: the same seeds, twice the
    iterations): the seeds the two share, the setting's seed mean on them at 1x and the control's
    at 2x, the change, and ``converged`` (``|change| <`` the rule's half point). A pair with no
    shared finished seed reports NaN and ``converged`` False."""
    rows = []
    for setting, control in pairs:
        once, twice = seed_scores(runs, setting), seed_scores(runs, control)
        shared = sorted(set(once.index) & set(twice.index))
        at_1x = float(once.loc[shared].mean()) if shared else math.nan
        at_2x = float(twice.loc[shared].mean()) if shared else math.nan
        change = at_2x - at_1x
        rows.append(
            {
                "setting": label_of(runs, setting),
                "seeds": ", ".join(str(s) for s in shared) or "none",
                "mIoU at 1x": round(at_1x, 2),
                "mIoU at 2x": round(at_2x, 2),
                "change": round(change, 2),
                "converged": bool(abs(change) < CONVERGED_WITHIN) if shared else False,
            }
        )
    return pd.DataFrame(rows)


def verdict_with_control(
    runs: pd.DataFrame, reference: str, setting: str, *, question: str = ""
) -> str:
    """:func:`sentence` for ``setting`` against ``reference``, then what the convergence controls
    say: when ``<setting>_2x`` or ``<reference>_2x`` moved its seeds' mean by
    :data:`~skdlib.analysis.regimes.CONVERGED_WITHIN` points or more, the sentence says the
    comparison is not yet converged and adds the same comparison at twice the iterations (when
    both controls ran); when every control that ran moved less, it says the comparison converged.
    """
    text = sentence(compare(runs, reference, setting), question=question)
    names = [n for n in (reference, setting) if len(seed_scores(runs, n + TWICE_SUFFIX))]
    if not names:
        return text + " (No twice-as-long control of either side was run.)"
    table = convergence_table(runs, [(n, n + TWICE_SUFFIX) for n in names])
    moved = table[~table["converged"]]
    if not len(moved):
        return (
            text
            + " Both sides' controls at twice the iterations moved less than "
            + (
                f"{CONVERGED_WITHIN} point: converged."
                if len(names) == 2
                else f"{CONVERGED_WITHIN} point (the one that ran)."
            )
        )
    shifts = ", ".join(f"{r['setting']} {r['change']:+.2f}" for _, r in moved.iterrows())
    text += f" Not converged: twice the iterations moved {shifts} points."
    if len(names) == 2:
        later = compare(runs, reference + TWICE_SUFFIX, setting + TWICE_SUFFIX)
        text += f" At twice the iterations: {later.test.describe()}: {later.test.verdict}."
    return text
