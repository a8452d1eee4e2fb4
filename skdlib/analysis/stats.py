"""The statistics of the book's runs: the seed-noise test, contrasts, curve bands and the
plateau rule.

Noise test (:func:`noise_comparison`): no SciPy is installed, so the test is written out here.
For two experiments with means ``m``, sample standard deviations ``s`` and ``n`` finished seeds,
Welch's statistic ``t = (m_a - m_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b)``; a difference is called
*larger than the seed noise* when ``|t| > threshold`` (default 2, about a two-sided 5 % level for a
normal statistic). With three seeds per experiment Welch's degrees of freedom (returned as ``df``)
are about 2-4, whose two-sided 5 % critical values are 4.3-2.8, so ``|t| > 2`` is a lenient rule:
a difference it flags is worth a look, not a proof. :func:`contrast` applies the same rule to sums
and differences of several experiments' means (e.g. a term's gain under one preset minus its gain
under another).

The tables these functions read come from :mod:`skdlib.analysis.runs`
(:func:`~skdlib.analysis.runs.experiment_table`, :func:`~skdlib.analysis.runs.val_curves`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from skdlib.analysis.runs import FINISHED, RunsTree, val_curves

__all__ = [
    "PLATEAU_FRACTION",
    "PLATEAU_TOLERANCE",
    "TEACHER_GAP",
    "TEACHER_MIN_CLASS_IOU",
    "contrast",
    "curve_summary",
    "noise_comparison",
    "plateau_check",
    "plateau_of_groups",
    "welch_t",
]


# --------------------------------------------------------------------------------------------------
# Curves and the plateau rule
# --------------------------------------------------------------------------------------------------
def curve_summary(curves: pd.DataFrame, metric: str = "miou") -> pd.DataFrame:
    """Per ``(experiment, iter)``: ``mean``, ``min``, ``max``, ``n`` (seeds) of ``metric`` from
    :func:`skdlib.analysis.runs.val_curves`."""
    if metric not in curves.columns:
        raise ValueError(f"metric: {metric!r} is not a column of curves ({list(curves.columns)})")
    if not len(curves):
        return pd.DataFrame(columns=["experiment", "label", "iter", "mean", "min", "max", "n"])
    grouped = curves.groupby(["experiment", "label", "iter"], sort=False)[metric]
    out = grouped.agg(mean="mean", min="min", max="max", n="count").reset_index()
    return out.sort_values(["experiment", "iter"], kind="stable").reset_index(drop=True)


#: The plateau rule of the book: the mean over seeds rises by less than this (mIoU as a fraction)
#: between the validation at 75 % of training and the final one.
PLATEAU_TOLERANCE = 0.01
PLATEAU_FRACTION = 0.75
#: What makes a teacher worth distilling in the book: this many mIoU points (as a fraction) above
#: the converged baseline student's seed mean, and every class at least this IoU.
TEACHER_GAP = 0.08
TEACHER_MIN_CLASS_IOU = 0.3


def plateau_check(
    curves: pd.DataFrame,
    *,
    fraction: float = PLATEAU_FRACTION,
    tolerance: float = PLATEAU_TOLERANCE,
) -> pd.DataFrame:
    """Per experiment of :func:`skdlib.analysis.runs.val_curves` (finished runs only): the seed
    mean of the validation mIoU at ``fraction`` of training and at the end, the rise between
    them, and whether it is below ``tolerance`` (``at_plateau``).

    The iteration at ``fraction`` is the validation record closest to ``fraction * last``
    (``at_iter`` says which); an experiment whose runs have no record before the last one gets
    NaN and ``at_plateau`` False. Columns: ``label, n_seeds, at_iter, last_iter, miou_at,
    miou_last, rise, at_plateau``; the index is the experiment name (curve order).

    Raises:
        ValueError: ``fraction`` outside (0, 1) or a negative ``tolerance``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    done = curves[curves["status"] == FINISHED] if len(curves) else curves
    rows = []
    for name, runs in done.groupby("experiment", sort=False):
        last = int(runs["iter"].max())
        earlier = sorted(i for i in runs["iter"].unique() if i < last)
        at = min(earlier, key=lambda i: abs(i - fraction * last)) if earlier else None
        at_mean = runs.loc[runs["iter"] == at, "miou"].mean() if at is not None else math.nan
        last_mean = runs.loc[runs["iter"] == last, "miou"].mean()
        rise = last_mean - at_mean
        rows.append(
            {
                "experiment": name,
                "label": runs["label"].iloc[0],
                "n_seeds": int(runs["seed"].nunique()),
                "at_iter": at if at is not None else math.nan,
                "last_iter": last,
                "miou_at": at_mean,
                "miou_last": last_mean,
                "rise": rise,
                "at_plateau": bool(rise < tolerance) if not math.isnan(rise) else False,
            }
        )
    columns = ["label", "n_seeds", "at_iter", "last_iter", "miou_at", "miou_last", "rise"]
    if not rows:
        return pd.DataFrame(columns=[*columns, "at_plateau"])
    return pd.DataFrame(rows).set_index("experiment")


def plateau_of_groups(tree: RunsTree, groups: Sequence[str]) -> pd.DataFrame:
    """:func:`plateau_check` of every experiment of ``groups``, each once (an experiment in two
    groups appears where it first does), in the groups' order.

    Raises:
        ValueError: no group named.
    """
    if not groups:
        raise ValueError("groups: name at least one experiment group")
    plateau = pd.concat([plateau_check(val_curves(tree, g)) for g in groups])
    return plateau[~plateau.index.duplicated()]


# --------------------------------------------------------------------------------------------------
# Noise test
# --------------------------------------------------------------------------------------------------
def welch_t(
    mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int
) -> tuple[float, float]:
    """Welch's ``(t, df)`` for ``a - b`` from summary statistics (sample standard deviations).

    ``t = (mean_a - mean_b) / sqrt(std_a^2 / n_a + std_b^2 / n_b)`` and the Welch-Satterthwaite
    ``df = (v_a + v_b)^2 / (v_a^2 / (n_a - 1) + v_b^2 / (n_b - 1))`` with ``v = std^2 / n``.
    Returns ``(nan, nan)`` when either side has fewer than two values or a NaN statistic; with
    both standard deviations zero, ``t`` is ``±inf`` (or NaN for equal means) and ``df`` NaN.
    """
    values = (mean_a, std_a, mean_b, std_b)
    if n_a < 2 or n_b < 2 or any(v is None or math.isnan(v) for v in values):
        return math.nan, math.nan
    if std_a < 0 or std_b < 0:
        raise ValueError(f"std_a, std_b must be >= 0, got {std_a}, {std_b}")
    var_a, var_b = std_a**2 / n_a, std_b**2 / n_b
    diff = mean_a - mean_b
    if var_a + var_b == 0:
        return (math.copysign(math.inf, diff) if diff else math.nan), math.nan
    t = diff / math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
    return t, df


def noise_comparison(
    table: pd.DataFrame, reference: str, *, metric: str = "miou", threshold: float = 2.0
) -> pd.DataFrame:
    """Which experiments differ from ``reference`` by more than the seed noise (module docstring).

    Args:
        table: :func:`skdlib.analysis.runs.experiment_table`'s frame (needs ``<metric>_mean``,
            ``<metric>_std``, ``n_finished``).
        reference: the experiment (row) to compare against.
        metric: ``"miou"`` or ``"pixel_acc"``.
        threshold: ``|t|`` above which a difference is called larger than the noise.

    Returns:
        One row per other experiment: ``label``, ``diff`` (mean minus the reference's mean),
        ``se`` (``sqrt(s_a^2/n_a + s_b^2/n_b)``), ``t``, ``df``, ``exceeds`` (bool) and ``verdict``
        (``"larger than seed noise"``, ``"within seed noise"``, or ``"not testable: ..."``).

    Raises:
        ValueError: ``reference`` not in the table, a missing column, or ``threshold <= 0``.
    """
    needed = [f"{metric}_mean", f"{metric}_std", "n_finished"]
    lacking = [c for c in needed if c not in table.columns]
    if lacking:
        raise ValueError(f"table: lacks the columns {lacking} for metric {metric!r}")
    if reference not in table.index:
        raise ValueError(
            f"reference: {reference!r} is not an experiment of the table ({list(table.index)})"
        )
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    ref = table.loc[reference]
    rows = []
    for name, row in table.iterrows():
        if name == reference:
            continue
        n_a, n_b = int(row["n_finished"]), int(ref["n_finished"])
        mean_a, std_a = float(row[f"{metric}_mean"]), float(row[f"{metric}_std"])
        mean_b, std_b = float(ref[f"{metric}_mean"]), float(ref[f"{metric}_std"])
        diff = mean_a - mean_b
        t, df = welch_t(mean_a, std_a, n_a, mean_b, std_b, n_b)
        se = math.sqrt(std_a**2 / n_a + std_b**2 / n_b) if n_a >= 2 and n_b >= 2 else math.nan
        if min(n_a, n_b) < 2:
            verdict, exceeds = (
                f"not testable: {min(n_a, n_b)} finished seed(s) on one side (needs 2)",
                False,
            )
        elif math.isnan(t):
            verdict, exceeds = "within seed noise", False
        else:
            exceeds = abs(t) > threshold
            verdict = "larger than seed noise" if exceeds else "within seed noise"
        rows.append(
            {
                "experiment": name,
                "label": row.get("label", name),
                "diff": diff,
                "se": se,
                "t": t,
                "df": df,
                "exceeds": exceeds,
                "verdict": verdict,
            }
        )
    columns = ["experiment", "label", "diff", "se", "t", "df", "exceeds", "verdict"]
    return pd.DataFrame(rows, columns=columns).set_index("experiment")


def contrast(
    table: pd.DataFrame,
    plus: Sequence[str],
    minus: Sequence[str],
    *,
    metric: str = "miou",
    threshold: float = 2.0,
) -> dict[str, Any]:
    """A contrast of seed means, ``sum(mean[plus]) - sum(mean[minus])``, against the seed noise.

    For "how much more does a term add under preset A than under preset B":
    ``plus=[A_with, B_without]`` and ``minus=[A_without, B_with]``. The experiments' seeds are
    independent, so the standard error is ``sqrt(sum over all listed of s^2 / n)``;
    ``t = value / se``; ``exceeds`` when ``|t| > threshold``. With a single experiment on each side
    this is :func:`welch_t`'s ``t``.

    Returns:
        ``{"value", "se", "t", "exceeds", "verdict"}`` (verdict as in :func:`noise_comparison`;
        "not testable: ..." when a listed experiment has fewer than two finished seeds).

    Raises:
        ValueError: an experiment not in the table, an empty side, a missing column.
    """
    names = [*plus, *minus]
    if not plus or not minus:
        raise ValueError(
            f"plus and minus must both name experiments, got {list(plus)} and {list(minus)}"
        )
    lacking = [n for n in names if n not in table.index]
    if lacking:
        raise ValueError(f"plus/minus: {lacking} not in the table ({list(table.index)})")
    for column in (f"{metric}_mean", f"{metric}_std", "n_finished"):
        if column not in table.columns:
            raise ValueError(f"table: lacks the column {column!r}")
    value = sum(float(table.loc[n, f"{metric}_mean"]) for n in plus) - sum(
        float(table.loc[n, f"{metric}_mean"]) for n in minus
    )
    few = [n for n in names if int(table.loc[n, "n_finished"]) < 2]
    if few:
        return {
            "value": value,
            "se": math.nan,
            "t": math.nan,
            "exceeds": False,
            "verdict": f"not testable: fewer than 2 finished seeds in {few}",
        }
    se = math.sqrt(
        sum(
            float(table.loc[n, f"{metric}_std"]) ** 2 / int(table.loc[n, "n_finished"])
            for n in names
        )
    )
    if se != 0:
        t = value / se
    elif value:
        t = math.copysign(math.inf, value)
    else:
        t = math.nan
    exceeds = not math.isnan(t) and abs(t) > threshold
    return {
        "value": value,
        "se": se,
        "t": t,
        "exceeds": exceeds,
        "verdict": "larger than seed noise" if exceeds else "within seed noise",
    }
