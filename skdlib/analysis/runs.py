"""Reading experiment runs: the pipeline's ``index.json``, run folders, seed aggregation, a noise
test.

Layout (the pipeline's contract)::

    runs/<profile>/index.json              # profile, data, num_classes, teachers, experiments[...]
    runs/<profile>/<teacher name>/         # each teacher's run folder ("teacher": the default)
    runs/<profile>/<experiment>/seed<k>/   # one run folder per experiment and seed

Every ``run_dir`` in the index is relative to the profile folder. A run counts as **finished** only
when its folder holds a ``summary.json`` with ``"finished": true``; an index entry marked ``failed``
stays failed; anything else (pending, interrupted, summary missing) is **unfinished**. Missing and
failed runs are reported in the tables (counts per experiment), never raised.

Aggregation over seeds: mean, sample standard deviation (``ddof=1``; NaN with fewer than two
finished seeds), min and max of the finished seeds' values.

Noise test (:func:`noise_comparison`): no SciPy is installed, so the test is written out here.
For two experiments with means ``m``, sample standard deviations ``s`` and ``n`` finished seeds,
Welch's statistic ``t = (m_a - m_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b)``; a difference is called
*larger than the seed noise* when ``|t| > threshold`` (default 2, about a two-sided 5 % level for a
normal statistic). With three seeds per experiment Welch's degrees of freedom (returned as ``df``)
are about 2-4, whose two-sided 5 % critical values are 4.3-2.8, so ``|t| > 2`` is a lenient rule:
a difference it flags is worth a look, not a proof. :func:`contrast` applies the same rule to sums
and differences of several experiments' means (e.g. a term's gain under one preset minus its gain
under another).

Chapters open a tree with :func:`open_profile`, which falls back to a tiny demo tree
(:func:`make_demo_runs`, one training iteration per run) when the profile has no index yet.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from skdlib.train.runfolder import RunFolder

if TYPE_CHECKING:
    from skdlib.train.config import ExperimentConfig

__all__ = [
    "FAILED",
    "FINISHED",
    "PLATEAU_FRACTION",
    "PLATEAU_TOLERANCE",
    "TEACHER_GAP",
    "TEACHER_MIN_CLASS_IOU",
    "UNFINISHED",
    "collect_runs",
    "contrast",
    "curve_summary",
    "demo_experiments",
    "experiment_table",
    "find_repo_root",
    "load_index",
    "load_metrics",
    "load_run_config",
    "load_summary",
    "make_demo_runs",
    "noise_comparison",
    "open_profile",
    "plateau_check",
    "plateau_of_groups",
    "run_status",
    "teacher_curve",
    "teacher_entry",
    "teacher_summary",
    "val_curves",
    "welch_t",
]

logger = logging.getLogger(__name__)

FINISHED = "finished"
FAILED = "failed"
UNFINISHED = "unfinished"

_INDEX_KEYS = ("profile", "experiments")
_RUN_KEYS = ("seed", "run_dir")

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------
def find_repo_root(start: PathLike, *, fallback_to_package: bool = True) -> Path:
    """The nearest folder at or above ``start`` holding ``pyproject.toml``.

    With ``fallback_to_package`` (default) a ``start`` outside the repository (e.g. a chapter's
    notebook copied to a temporary folder) falls back to the repository of the installed
    ``skdlib`` package (an editable install lives in it).

    Raises:
        FileNotFoundError: no such folder above ``start`` (nor above the package, with the
            fallback).
    """
    here = Path(start).resolve()
    starts = (here, Path(__file__).resolve().parent) if fallback_to_package else (here,)
    for origin in starts:
        for folder in (origin, *origin.parents):
            if (folder / "pyproject.toml").is_file():
                return folder
    raise FileNotFoundError(f"start: no pyproject.toml in {here} or any folder above it")


def load_index(profile_dir: PathLike) -> dict[str, Any]:
    """Read ``<profile_dir>/index.json`` and check its top-level shape.

    Raises:
        FileNotFoundError: no index (the message says how the pipeline writes one).
        ValueError: not JSON, or missing ``profile`` / ``experiments``, or a run without
            ``seed`` / ``run_dir``.
    """
    path = Path(profile_dir) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"profile_dir: no index.json in {Path(profile_dir)}; the pipeline writes it "
            "(`make experiments PROFILE=<profile>`)"
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"profile_dir: {path} is not valid JSON ({exc})") from exc
    if not isinstance(index, dict):
        raise ValueError(f"profile_dir: {path} holds a {type(index).__name__}, expected an object")
    missing = [key for key in _INDEX_KEYS if key not in index]
    if missing:
        raise ValueError(f"profile_dir: {path} lacks the keys {missing}")
    for exp in index["experiments"]:
        if "name" not in exp:
            raise ValueError(f"profile_dir: {path} has an experiment without a name: {exp!r}")
        for run in exp.get("runs", []):
            lacking = [key for key in _RUN_KEYS if key not in run]
            if lacking:
                raise ValueError(
                    f"profile_dir: {path}, experiment {exp['name']!r}: a run lacks {lacking}: "
                    f"{run!r}"
                )
    return index


def load_summary(run_dir: PathLike) -> dict[str, Any] | None:
    """The run's ``summary.json`` as a dict, or ``None`` when the folder has none (or it is
    unreadable): :meth:`skdlib.train.runfolder.RunFolder.read_summary`."""
    return RunFolder(Path(run_dir)).read_summary()


def load_metrics(run_dir: PathLike) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` in file order (``[]`` without the file; torn lines skipped
    with a warning): :meth:`skdlib.train.runfolder.RunFolder.read_metrics`."""
    return RunFolder(Path(run_dir)).read_metrics()


def load_run_config(run_dir: PathLike) -> ExperimentConfig:
    """The run's ``config.yaml`` as an :class:`skdlib.train.config.ExperimentConfig`:
    :meth:`skdlib.train.runfolder.RunFolder.read_config`.

    Raises:
        FileNotFoundError: the folder has no config.yaml.
    """
    return RunFolder(Path(run_dir)).read_config()


def run_status(run_dir: PathLike, listed: str | None = None) -> str:
    """``finished`` when ``summary.json`` says so; else ``failed`` if the index lists it failed;
    else ``unfinished``."""
    summary = load_summary(run_dir)
    if summary is not None and summary.get("finished") is True:
        return FINISHED
    if listed == FAILED:
        return FAILED
    if listed == FINISHED:
        logger.warning(
            "%s is listed finished but has no finished summary.json: counted as unfinished", run_dir
        )
    return UNFINISHED


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------
def _experiments(index: Mapping[str, Any], group: str | None) -> list[dict[str, Any]]:
    return [exp for exp in index["experiments"] if group is None or group in exp.get("groups", [])]


def _class_ious(summary: Mapping[str, Any]) -> dict[str, float]:
    """``{class name: IoU}`` from a summary (``None`` entries -> NaN)."""
    values = summary.get("class_iou") or []
    if isinstance(values, Mapping):
        items = list(values.items())
    else:
        names = summary.get("class_names") or [f"class{k}" for k in range(len(values))]
        items = list(zip(names, values, strict=False))
    return {str(name): (math.nan if v is None else float(v)) for name, v in items}


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def collect_runs(
    index: Mapping[str, Any], group: str | None = None, *, profile_dir: PathLike
) -> pd.DataFrame:
    """One row per listed run:
    ``experiment, label, seed, run_dir, status, miou, pixel_acc, iterations, wall_time_s`` and
    ``iou/<class>`` columns (NaN where the run is not finished).

    ``group`` keeps the experiments whose ``groups`` contain it (``None``: all).
    """
    rows = []
    for exp in _experiments(index, group):
        for run in exp.get("runs", []):
            folder = Path(profile_dir) / run["run_dir"]
            status = run_status(folder, run.get("status"))
            row: dict[str, Any] = {
                "experiment": exp["name"],
                "label": exp.get("label", exp["name"]),
                "seed": int(run["seed"]),
                "run_dir": str(folder),
                "status": status,
                "miou": math.nan,
                "pixel_acc": math.nan,
                "iterations": math.nan,
                "wall_time_s": math.nan,
            }
            if status == FINISHED:
                summary = load_summary(folder) or {}
                row.update(
                    miou=_number(summary.get("miou")),
                    pixel_acc=_number(summary.get("pixel_acc")),
                    iterations=_number(summary.get("iterations")),
                    wall_time_s=_number(summary.get("wall_time_s")),
                )
                row.update({f"iou/{name}": v for name, v in _class_ious(summary).items()})
            rows.append(row)
    columns = [
        "experiment",
        "label",
        "seed",
        "run_dir",
        "status",
        "miou",
        "pixel_acc",
        "iterations",
        "wall_time_s",
    ]
    return pd.DataFrame(rows, columns=None if rows else columns)


def _spread(values: pd.Series) -> dict[str, float]:
    """mean, sample std (ddof=1, NaN below two values), min, max of the non-NaN values."""
    finite = values.dropna()
    n = len(finite)
    return {
        "mean": float(finite.mean()) if n else math.nan,
        "std": float(finite.std(ddof=1)) if n >= 2 else math.nan,
        "min": float(finite.min()) if n else math.nan,
        "max": float(finite.max()) if n else math.nan,
    }


def experiment_table(
    index: Mapping[str, Any], group: str | None = None, *, profile_dir: PathLike
) -> pd.DataFrame:
    """Per experiment of ``group`` (index order), aggregated over its finished seeds.

    Columns: ``label``, ``n_runs`` (listed), ``n_finished``, ``n_failed``, ``n_unfinished``,
    ``miou_mean/std/min/max``, ``pixel_acc_mean/std``, ``iou/<class>`` (means over seeds), and
    ``missing`` (a short text naming the seeds not finished, ``""`` when none). The index of the
    frame is the experiment name. Values are fractions in [0, 1] as the summaries store them.
    """
    runs = collect_runs(index, group, profile_dir=profile_dir)
    rows = []
    for exp in _experiments(index, group):
        mine = runs[runs["experiment"] == exp["name"]] if len(runs) else runs
        done = mine[mine["status"] == FINISHED] if len(mine) else mine
        miou = _spread(done["miou"]) if len(done) else _spread(pd.Series(dtype=float))
        acc = _spread(done["pixel_acc"]) if len(done) else _spread(pd.Series(dtype=float))
        not_done = [
            f"seed{int(r.seed)} {r.status}" for r in mine.itertuples() if r.status != FINISHED
        ]
        row: dict[str, Any] = {
            "experiment": exp["name"],
            "label": exp.get("label", exp["name"]),
            "n_runs": len(mine),
            "n_finished": len(done),
            "n_failed": int((mine["status"] == FAILED).sum()) if len(mine) else 0,
            "n_unfinished": int((mine["status"] == UNFINISHED).sum()) if len(mine) else 0,
            "miou_mean": miou["mean"],
            "miou_std": miou["std"],
            "miou_min": miou["min"],
            "miou_max": miou["max"],
            "pixel_acc_mean": acc["mean"],
            "pixel_acc_std": acc["std"],
            "missing": ", ".join(not_done),
        }
        for column in [c for c in runs.columns if str(c).startswith("iou/")]:
            row[column] = (
                float(done[column].mean()) if len(done) and done[column].notna().any() else math.nan
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table = table.set_index("experiment")
    return table


def teacher_entry(index: Mapping[str, Any], experiment: str | None = None) -> dict[str, Any]:
    """The index entry (``run_dir``, ``status``, ...) of the profile's default teacher, or with
    ``experiment`` of the teacher run that experiment learns from (its ``teacher_dir``); ``{}``
    when the index has none."""
    if experiment is None:
        return dict(index.get("teacher") or {})
    exp = next((e for e in index.get("experiments", []) if e.get("name") == experiment), None)
    if exp is None or "teacher_dir" not in exp:
        return {}
    entry = (index.get("teachers") or {}).get(exp.get("teacher")) or {}
    return {**entry, "run_dir": exp["teacher_dir"]}


def teacher_summary(
    index: Mapping[str, Any], *, profile_dir: PathLike, experiment: str | None = None
) -> dict[str, Any] | None:
    """The teacher run's summary (with ``status`` and ``run_dir`` added): the default teacher's,
    or with ``experiment`` the one that experiment learns from; ``None`` without one."""
    entry = teacher_entry(index, experiment)
    if not entry or "run_dir" not in entry:
        return None
    folder = Path(profile_dir) / entry["run_dir"]
    status = run_status(folder, entry.get("status"))
    summary = load_summary(folder) if status == FINISHED else None
    return {**(summary or {}), "status": status, "run_dir": str(folder)}


def val_curves(
    index: Mapping[str, Any], group: str | None = None, *, profile_dir: PathLike
) -> pd.DataFrame:
    """Validation records of every listed run (finished or not), long format.

    Columns: ``experiment, label, seed, status, iter, miou, pixel_acc``; one row per
    ``"split": "val"`` record of ``metrics.jsonl`` (a run without records contributes nothing).
    """
    rows = []
    for exp in _experiments(index, group):
        for run in exp.get("runs", []):
            folder = Path(profile_dir) / run["run_dir"]
            status = run_status(folder, run.get("status"))
            for record in load_metrics(folder):
                if record.get("split") != "val":
                    continue
                rows.append(
                    {
                        "experiment": exp["name"],
                        "label": exp.get("label", exp["name"]),
                        "seed": int(run["seed"]),
                        "status": status,
                        "iter": int(record["iter"]),
                        "miou": _number(record.get("miou")),
                        "pixel_acc": _number(record.get("pixel_acc")),
                    }
                )
    return pd.DataFrame(
        rows, columns=["experiment", "label", "seed", "status", "iter", "miou", "pixel_acc"]
    )


def teacher_curve(
    index: Mapping[str, Any], *, profile_dir: PathLike, experiment: str | None = None
) -> pd.DataFrame:
    """The teacher run's validation records (the default teacher's, or with ``experiment`` the
    one it learns from): columns ``iter, miou, pixel_acc`` (empty without one or records)."""
    entry = teacher_entry(index, experiment)
    rows = []
    if "run_dir" in entry:
        for record in load_metrics(Path(profile_dir) / entry["run_dir"]):
            if record.get("split") == "val":
                rows.append(
                    {
                        "iter": int(record["iter"]),
                        "miou": _number(record.get("miou")),
                        "pixel_acc": _number(record.get("pixel_acc")),
                    }
                )
    return pd.DataFrame(rows, columns=["iter", "miou", "pixel_acc"])


def curve_summary(curves: pd.DataFrame, metric: str = "miou") -> pd.DataFrame:
    """Per ``(experiment, iter)``: ``mean``, ``min``, ``max``, ``n`` (seeds) of ``metric`` from
    :func:`val_curves`."""
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
    """Per experiment of :func:`val_curves` (finished runs only): the seed mean of the validation
    mIoU at ``fraction`` of training and at the end, the rise between them, and whether it is
    below ``tolerance`` (``at_plateau``).

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


def plateau_of_groups(
    index: Mapping[str, Any], groups: Sequence[str], *, profile_dir: PathLike
) -> pd.DataFrame:
    """:func:`plateau_check` of every experiment of ``groups``, each once (an experiment in two
    groups appears where it first does), in the groups' order.

    Raises:
        ValueError: no group named.
    """
    if not groups:
        raise ValueError("groups: name at least one experiment group")
    plateau = pd.concat(
        [plateau_check(val_curves(index, g, profile_dir=profile_dir)) for g in groups]
    )
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
        table: :func:`experiment_table`'s frame (needs ``<metric>_mean``, ``<metric>_std``,
            ``n_finished``).
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


# --------------------------------------------------------------------------------------------------
# A tiny runs tree for smoke checks and tests
# --------------------------------------------------------------------------------------------------
def _plan_path(repo: PathLike | None) -> Path:
    root = find_repo_root(repo if repo is not None else Path(__file__))
    return root / "configs" / "experiments.yaml"


def demo_experiments(
    repo: PathLike | None = None, *, profile: str = "smoke"
) -> dict[str, dict[str, Any]]:
    """The pipeline's experiments ``{name: {groups, label, description, overrides}}`` from its
    plan (``configs/experiments.yaml``), their settings expanded as ``profile`` expands them (the
    smoke profile's tiny sizes by default)."""
    from skdlib.experiments import load_plan

    plan = load_plan(_plan_path(repo))
    prof = plan.profile(profile)
    return {
        e.name: {
            "groups": list(e.groups),
            "label": e.label,
            "description": e.description,
            "overrides": list(plan.overrides(e, prof)),
        }
        for e in plan.experiments
    }


def make_demo_runs(
    root: PathLike,
    experiments: Iterable[str],
    *,
    iters: int = 1,
    repo: PathLike | None = None,
    num_train: int = 8,
    num_val: int = 2,
    reuse: bool = False,
    threads: int = 1,
) -> Path:
    """Train a tiny runs tree with the pipeline itself and return its profile folder
    (``<root>/smoke``).

    :func:`skdlib.experiments.run_pipeline` runs the smoke profile of the plan in-process (no
    notebook) for the listed experiments: a teacher and one run per experiment, ``iters``
    iterations each, on a generated 128x128 embedded data set of ``num_train`` / ``num_val``
    images placed under ``root`` (as every data set the runs read). About a second per run on a
    CPU; the numbers mean nothing. ``threads`` torch threads (restored afterwards): on a shared
    2-core machine one thread was measured 8x faster than two for such a tree.

    Existing run folders are trained again from scratch, unless ``reuse`` is set and the folder
    holds a finished run of the same config (the pipeline's reuse by config hash). Callers
    sharing ``root`` across processes should hold a lock (see :func:`open_profile`).

    Raises:
        ValueError: an unknown experiment name, ``iters < 1`` or ``threads < 1`` (before any
            work).
    """
    from skdlib.experiments import run_pipeline

    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    plan = _plan_path(repo)
    sets = [
        f"data.options={{height: 128, width: 128, num_train: {num_train}, num_val: {num_val}}}",
        f"train.max_iters={iters}",
        "train.log_every=1",
    ]
    result = run_pipeline(
        "smoke",
        plan_path=plan,
        runs_root=Path(root).resolve(),
        project_root=plan.parents[1],
        data_base=Path(root).resolve(),
        executor="inprocess",
        force=not reuse,
        only=list(experiments),
        sets=sets,
        jobs=1,
        threads=threads,
        teacher_threads=threads,
    )
    if result["failed"]:
        raise RuntimeError(f"demo runs failed: {result['failed']} (see the log)")
    return Path(result["index"]).parent


def _source_digest() -> str:
    """A short hash of the ``skdlib`` sources: a cached demo tree is reused only by the same
    code."""
    import hashlib

    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def open_profile(
    repo: PathLike,
    runs_root: str,
    profile: str,
    *,
    smoke: bool,
    demo_experiments: Sequence[str],
    demo_dir: PathLike | None = None,
) -> tuple[Path, dict[str, Any], str]:
    """The runs tree a chapter reads: ``(profile_dir, index, note)``.

    * normal mode: ``<repo>/<runs_root>/<profile>`` when its ``index.json`` exists;
    * smoke mode (``smoke=True``): ``<repo>/<runs_root>/smoke`` when its ``index.json`` exists;
    * otherwise a demo tree of ``demo_experiments`` (one seed, one iteration,
      :func:`make_demo_runs`) in ``demo_dir``. When ``demo_dir`` is ``None`` the tree is cached in
      the temporary folder under a name that hashes the ``skdlib`` sources, so chapters checked one
      after the other share the runs they have in common (finished runs with the same config are
      reused; an exclusive file lock serialises processes building it at the same time).

    ``note`` is one Markdown sentence saying which tree was read (for the chapter to display).
    """
    import fcntl
    import tempfile

    repo = Path(repo)
    wanted = "smoke" if smoke else profile
    profile_dir = repo / runs_root / wanted
    if (profile_dir / "index.json").is_file():
        index = load_index(profile_dir)
        return (
            profile_dir,
            index,
            f"Runs read from `{runs_root}/{wanted}/` (profile `{index['profile']}`).",
        )
    folder = (
        Path(demo_dir)
        if demo_dir is not None
        else (Path(tempfile.gettempdir()) / f"skd-demo-runs-{os.getuid()}-{_source_digest()}")
    )
    folder.mkdir(parents=True, exist_ok=True)
    logger.warning(
        "no index.json in %s: using a one-iteration demo tree in %s", profile_dir, folder
    )
    # The index lists this caller's experiments; it is read under the lock, before another caller
    # rewrites it.
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            tree = make_demo_runs(folder, demo_experiments, iters=1, repo=repo, reuse=True)
            index = load_index(tree)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    note = (
        f"**No runs found under `{runs_root}/{wanted}/`**: everything below comes from a demo tree "
        "(one seed, one training iteration per run, four 128x128 training images) built on the "
        "spot. Its numbers only show that the chapter's code runs; they say nothing about the "
        f"method. Run `make experiments PROFILE={profile}` for real results."
    )
    return tree, index, note
