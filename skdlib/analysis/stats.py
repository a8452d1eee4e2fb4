"""The statistics of the book's runs: the seed-noise test, contrasts, curve bands and the
plateau rule.

Noise test (:func:`noise_comparison`): for two experiments with means ``m``, sample standard
deviations ``s`` and ``n`` finished seeds, Welch's ``t = (m_a - m_b) / sqrt(s_a^2 / n_a + s_b^2 /
n_b)`` with Welch-Satterthwaite degrees of freedom; a difference is called *larger than seed
noise* when the two-sided ``p < 0.05`` (:data:`skdlib.analysis.significance.ALPHA`, the book's one
rule, computed by :mod:`skdlib.analysis.significance`). :func:`contrast` applies the same test to
sums and differences of several experiments' means (e.g. a term's gain under one preset minus its
gain under another).

The tables these functions read come from :mod:`skdlib.analysis.runs`
(:func:`~skdlib.analysis.runs.experiment_table`, :func:`~skdlib.analysis.runs.val_curves`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from skdlib.analysis.runs import FINISHED, RunsTree, val_curves
from skdlib.analysis.significance import (
    ALPHA,
    LARGER,
    WITHIN,
    TTest,
    contrast_from_summaries,
)

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


def _test_row(
    table: pd.DataFrame, names: Sequence[str], coefficients: Sequence[float], metric: str
) -> TTest:
    """The contrast test of ``sum_k c_k mean[names_k]`` from the table's summary statistics."""
    return contrast_from_summaries(
        [float(table.loc[n, f"{metric}_mean"]) for n in names],
        [float(table.loc[n, f"{metric}_std"]) for n in names],
        [int(table.loc[n, "n_finished"]) for n in names],
        coefficients,
    )


def noise_comparison(
    table: pd.DataFrame, reference: str, *, metric: str = "miou", alpha: float = ALPHA
) -> pd.DataFrame:
    """Which experiments differ from ``reference`` by more than the seed noise (module docstring).

    Args:
        table: :func:`skdlib.analysis.runs.experiment_table`'s frame (needs ``<metric>_mean``,
            ``<metric>_std``, ``n_finished``).
        reference: the experiment (row) to compare against.
        metric: ``"miou"`` or ``"pixel_acc"``.
        alpha: the two-sided level below which ``p`` calls a difference larger than the noise.

    Returns:
        One row per other experiment: ``label``, ``diff`` (mean minus the reference's mean),
        ``se`` (``sqrt(s_a^2/n_a + s_b^2/n_b)``), Welch's ``t`` and ``df``, the two-sided ``p``,
        ``exceeds`` (``p < alpha``) and ``verdict`` (``"larger than seed noise"``,
        ``"within seed noise"``, or ``"not testable: ..."``).

    Raises:
        ValueError: ``reference`` not in the table, a missing column, or ``alpha`` not in (0, 1).
    """
    _check_columns(table, metric)
    if reference not in table.index:
        raise ValueError(
            f"reference: {reference!r} is not an experiment of the table ({list(table.index)})"
        )
    _check_alpha(alpha)
    rows = []
    for name, row in table.iterrows():
        if name == reference:
            continue
        result = _result(_test_row(table, [name, reference], [1.0, -1.0], metric), alpha)
        result["diff"] = result.pop("value")
        rows.append({"experiment": name, "label": row.get("label", name), **result})
    columns = ["experiment", "label", "diff", "se", "t", "df", "p", "exceeds", "verdict"]
    return pd.DataFrame(rows, columns=columns).set_index("experiment")


def _check_columns(table: pd.DataFrame, metric: str) -> None:
    needed = [f"{metric}_mean", f"{metric}_std", "n_finished"]
    lacking = [c for c in needed if c not in table.columns]
    if lacking:
        raise ValueError(f"table: lacks the columns {lacking} for metric {metric!r}")


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def _result(test: TTest, alpha: float) -> dict[str, Any]:
    """A test as the chapters' helpers read it: value, se, t, df, p, exceeds, verdict."""
    return {
        "value": test.value,
        "se": test.se,
        "t": test.t,
        "df": test.df,
        "p": test.p,
        "exceeds": test.significant(alpha),
        "verdict": _verdict(test, alpha),
    }


def _verdict(test: TTest, alpha: float) -> str:
    if test.untestable:
        return f"not testable: {test.untestable}"
    return LARGER if test.significant(alpha) else WITHIN


def contrast(
    table: pd.DataFrame,
    plus: Sequence[str],
    minus: Sequence[str],
    *,
    metric: str = "miou",
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """A contrast of seed means, ``sum(mean[plus]) - sum(mean[minus])``, against the seed noise.

    For "how much more does a term add under preset A than under preset B":
    ``plus=[A_with, B_without]`` and ``minus=[A_without, B_with]``. The experiments' seeds are
    independent, so the standard error is ``sqrt(sum over all listed of s^2 / n)``,
    ``t = value / se`` with Welch-Satterthwaite degrees of freedom, and ``exceeds`` when the
    two-sided ``p < alpha``. With one experiment on each side this is Welch's test.

    Returns:
        ``{"value", "se", "t", "df", "p", "exceeds", "verdict"}`` (verdict as in
        :func:`noise_comparison`; "not testable: ..." when a listed experiment has fewer than two
        finished seeds).

    Raises:
        ValueError: an experiment not in the table, an empty side, a missing column, a bad alpha.
    """
    names = [*plus, *minus]
    if not plus or not minus:
        raise ValueError(
            f"plus and minus must both name experiments, got {list(plus)} and {list(minus)}"
        )
    lacking = [n for n in names if n not in table.index]
    if lacking:
        raise ValueError(f"plus/minus: {lacking} not in the table ({list(table.index)})")
    _check_columns(table, metric)
    _check_alpha(alpha)
    return _result(_test_row(table, names, [1.0] * len(plus) + [-1.0] * len(minus), metric), alpha)
