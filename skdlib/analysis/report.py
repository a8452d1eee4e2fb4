"""What the result chapters print about a profile's runs: scores in mIoU points, differences
against the seed noise as sentences, tables of experiments and of their settings.

Every value of :func:`skdlib.analysis.runs.experiment_table` is a fraction in [0, 1]; the chapters
print percent, i.e. **mIoU points** (``POINTS`` times the fraction). The verdicts come from
:func:`skdlib.analysis.stats.noise_comparison` and :func:`skdlib.analysis.stats.contrast` (or
:func:`paired_difference`, a paired t-test for per-image values): a two-sided ``p < 0.05``
(:mod:`skdlib.analysis.significance`); this module only words them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from skdlib.analysis.runs import RunsTree, as_number, class_ious, collect_runs
from skdlib.analysis.significance import (
    ALPHA,
    contrast_from_summaries,
    format_p,
    p_cell,
)
from skdlib.analysis.stats import (
    PLATEAU_FRACTION,
    PLATEAU_TOLERANCE,
    TEACHER_GAP,
    TEACHER_MIN_CLASS_IOU,
    contrast,
    noise_comparison,
    plateau_of_groups,
)
from skdlib.train.runfolder import RunFolder

if TYPE_CHECKING:
    from skdlib.train.config import DistillConfig, ExperimentConfig

__all__ = [
    "POINTS",
    "best_line",
    "comparison_lines",
    "comparison_table",
    "difference",
    "experiment_cell",
    "measured",
    "network",
    "paired_difference",
    "plateau_report",
    "points",
    "results_table",
    "seeds_finished",
    "setting_value",
    "settings_table",
    "setup_table",
    "skipped_steps",
    "teacher_checks",
    "transfer",
]

PathLike = str | os.PathLike[str]

POINTS = 100.0  # a fraction in [0, 1] printed in percent: mIoU points


# --------------------------------------------------------------------------------------------------
# Words for numbers
# --------------------------------------------------------------------------------------------------
def points(mean: float, std: float = math.nan, *, digits: int = 2) -> str:
    """A fraction's mean (and its sample standard deviation over seeds) in points:
    ``points(0.5, 0.0125) == "50.00 ± 1.25"``; ``"n/a"`` for a NaN mean, no ``±`` for a NaN std."""
    if mean is None or pd.isna(mean):
        return "n/a"
    text = f"{POINTS * mean:.{digits}f}"
    return text if std is None or pd.isna(std) else f"{text} ± {POINTS * std:.{digits}f}"


def seeds_finished(row: Mapping[str, Any]) -> str:
    """``"2/3 (seed2 failed)"`` from a row of :func:`~skdlib.analysis.runs.experiment_table`."""
    text = f"{int(row['n_finished'])}/{int(row['n_runs'])}"
    return f"{text} ({row['missing']})" if row.get("missing") else text


def experiment_cell(table: pd.DataFrame, name: str) -> str:
    """One experiment's mIoU for a table cell: ``"50.00 ± 1.25 (2/3 seeds)"``, or ``"not run"``
    when the table lacks it or none of its seeds finished."""
    if name not in table.index or pd.isna(table.loc[name, "miou_mean"]):
        return "not run"
    row = table.loc[name]
    count = f"{int(row['n_finished'])}/{int(row['n_runs'])} seeds"
    return f"{points(row['miou_mean'], row['miou_std'])} ({count})"


def difference(
    result: Mapping[str, Any], *, scale: float = POINTS, unit: str = "points", digits: int = 2
) -> str:
    """A difference against the seed noise as words: ``"+1.23 points, p = 0.041 (larger than seed
    noise)"``.

    ``result`` is a row of :func:`~skdlib.analysis.stats.noise_comparison` (``diff``, ``p``,
    ``verdict``), a :func:`~skdlib.analysis.stats.contrast` or a :func:`paired_difference`
    (``value`` in place of ``diff``); the value is multiplied by ``scale`` (fractions to points by
    default; 1 for values that are not fractions). No ``p`` where none was computed.
    """
    value = result["value"] if "value" in result else result["diff"]
    text = f"{scale * value:+.{digits}f}{' ' + unit if unit else ''}"
    if not pd.isna(result.get("p", math.nan)):
        text += f", {format_p(result['p'])}"
    return f"{text} ({result['verdict']})"


def measured(table: pd.DataFrame, plus: Sequence[str], minus: Sequence[str]) -> str:
    """:func:`~skdlib.analysis.stats.contrast` of mIoU ``sum(plus) - sum(minus)`` as
    :func:`difference` words, or ``"not measured in this tree (no finished runs of ...)"``."""
    missing = [
        n for n in [*plus, *minus] if n not in table.index or table.loc[n, "n_finished"] == 0
    ]
    if missing:
        return f"not measured in this tree (no finished runs of {', '.join(missing)})"
    return difference(contrast(table, plus, minus))


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, alpha: float = ALPHA
) -> dict[str, Any]:
    """Mean of the paired differences ``a[i] - b[i]`` against their noise (a paired two-sided
    t-test), as :func:`~skdlib.analysis.stats.contrast` returns it: ``{"value", "se", "t", "df",
    "p", "exceeds", "verdict"}`` with ``se = std(a - b, ddof=1) / sqrt(n)``, ``t = value / se``,
    ``df = n - 1`` and ``exceeds`` when ``p < alpha``; "not testable" below two pairs.

    Raises:
        ValueError: ``a`` and ``b`` differ in length, or ``alpha`` not in (0, 1).
    """
    if len(a) != len(b):
        raise ValueError(f"a and b must pair up, got {len(a)} and {len(b)} values")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    gaps = pd.Series([float(x) - float(y) for x, y in zip(a, b, strict=True)], dtype=float)
    value = float(gaps.mean()) if len(gaps) else math.nan
    test = contrast_from_summaries(
        [value],
        [float(gaps.std(ddof=1)) if len(gaps) > 1 else math.nan],
        [len(gaps)],
        [1.0],
        kind="paired",
    )
    if test.untestable:
        verdict = f"not testable: {len(gaps)} pair(s) (needs 2)"
    else:  # the noise of the pairs (e.g. images), not of seeds
        verdict = "larger than the noise" if test.significant(alpha) else "within the noise"
    return {
        "value": value,
        "se": test.se,
        "t": test.t,
        "df": test.df,
        "p": test.p,
        "exceeds": test.significant(alpha),
        "verdict": verdict,
    }


# --------------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------------
def _compare(table: pd.DataFrame, name: str, reference: str) -> pd.Series:
    return noise_comparison(table.loc[[reference, name]], reference).loc[name]


def _label(table: pd.DataFrame, name: str) -> str:
    return str(table.loc[name, "label"]) if "label" in table.columns else name


def comparison_table(table: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """One row per ``(experiment, reference)`` pair of an
    :func:`~skdlib.analysis.runs.experiment_table`: ``comparison`` (their labels), ``difference
    (mIoU points)``, Welch's ``t`` and ``df``, the two-sided ``p`` and the ``verdict`` of
    :func:`~skdlib.analysis.stats.noise_comparison`, as text; pairs naming an experiment the table
    lacks are left out."""
    rows = []
    for name, reference in pairs:
        if name not in table.index or reference not in table.index:
            continue
        result = _compare(table, name, reference)
        rows.append(
            {
                "comparison": f"{_label(table, name)} vs {_label(table, reference)}",
                "difference (mIoU points)": f"{POINTS * result['diff']:+.2f}",
                "Welch's t": "n/a" if pd.isna(result["t"]) else f"{result['t']:+.2f}",
                "df": "n/a" if pd.isna(result["df"]) else f"{result['df']:.1f}",
                "p (two-sided)": p_cell(result["p"]),
                "verdict": result["verdict"],
            }
        )
    columns = ["comparison", "difference (mIoU points)", "Welch's t", "df", "p (two-sided)"]
    return pd.DataFrame(rows, columns=[*columns, "verdict"])


def comparison_lines(
    table: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    paper: Mapping[str, float] | None = None,
) -> list[str]:
    """Markdown bullets, one per ``(experiment, reference)`` pair whose both sides have a finished
    seed: ``"- +PI vs baseline: +1.23 ± 0.45 points (within seed noise); the paper: +1.41."``.

    ``paper`` maps experiment names to the paper's mIoU in points; the paper's difference is added
    when it has both sides.
    """
    lines = []
    for name, reference in pairs:
        if name not in table.index or reference not in table.index:
            continue
        if table.loc[[name, reference], "n_finished"].min() == 0:
            continue
        line = f"- {_label(table, name)} vs {_label(table, reference)}: "
        line += difference(_compare(table, name, reference))
        if paper is not None and name in paper and reference in paper:
            line += f"; the paper: {paper[name] - paper[reference]:+.2f}"
        lines.append(line + ".")
    return lines


def best_line(table: pd.DataFrame) -> str:
    """``"- The highest mean is +PI+PA (51.20)."`` over the experiments with a finished seed;
    ``""`` when none has one."""
    done = table[table["n_finished"] > 0]
    if not len(done):
        return ""
    best = done["miou_mean"].idxmax()
    return f"- The highest mean is {_label(done, best)} ({points(done.loc[best, 'miou_mean'])})."


def results_table(
    table: pd.DataFrame,
    *,
    reference: str | None = None,
    paper: Mapping[str, float] | None = None,
    teacher: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The results of an :func:`~skdlib.analysis.runs.experiment_table`, one row per experiment,
    as text: ``setting``, ``seeds finished``, ``mIoU % (mean ± std)``, ``range %``, ``pixel acc %``;
    with a ``reference`` experiment, the difference to it in points with ``t`` and ``verdict``;
    with ``paper`` (name -> the paper's mIoU in points), the paper's value and difference.

    ``teacher`` (a :func:`~skdlib.analysis.runs.teacher_summary`) adds a last row, ``setting``
    ``"teacher"``, with its run status, mIoU and pixel accuracy (and ``paper["teacher"]``).
    """
    rows = []
    for name, row in table.iterrows():
        out = {
            "setting": row["label"],
            "seeds finished": seeds_finished(row),
            "mIoU % (mean ± std)": points(row["miou_mean"], row["miou_std"]),
            "range %": _range(row),
            "pixel acc %": points(row["pixel_acc_mean"], row["pixel_acc_std"]),
        }
        if reference is not None and reference in table.index:
            out.update(_against(table, name, reference))
        if paper is not None:
            out.update(_paper(table, paper, name, reference))
        rows.append(out)
    if teacher is not None:
        rows.append(_teacher_row(teacher, paper))
    return pd.DataFrame(rows).fillna("")


def _teacher_row(teacher: Mapping[str, Any], paper: Mapping[str, float] | None) -> dict[str, str]:
    row = {
        "setting": "teacher",
        "seeds finished": str(teacher.get("status", "absent")),
        "mIoU % (mean ± std)": points(teacher.get("miou", math.nan)),
        "pixel acc %": points(teacher.get("pixel_acc", math.nan)),
    }
    if paper is not None and "teacher" in paper:
        row["paper mIoU %"] = f"{paper['teacher']:.2f}"
    return row


def _range(row: Mapping[str, Any]) -> str:
    if pd.isna(row["miou_min"]):
        return "n/a"
    return f"{POINTS * row['miou_min']:.2f}-{POINTS * row['miou_max']:.2f}"


def _against(table: pd.DataFrame, name: str, reference: str) -> dict[str, str]:
    column = f"vs {_label(table, reference)} (points)"
    if name == reference:
        return {column: "reference", "p": "", "verdict": ""}
    result = _compare(table, name, reference)
    return {
        column: "n/a" if pd.isna(result["diff"]) else f"{POINTS * result['diff']:+.2f}",
        "p": "" if pd.isna(result["p"]) else p_cell(result["p"]),
        "verdict": result["verdict"],
    }


def _paper(
    table: pd.DataFrame, paper: Mapping[str, float], name: str, reference: str | None
) -> dict[str, str]:
    out = {"paper mIoU %": f"{paper[name]:.2f}" if name in paper else ""}
    if reference is not None and reference in table.index:
        both = name in paper and reference in paper and name != reference
        column = f"paper vs {_label(table, reference)}"
        out[column] = f"{paper[name] - paper[reference]:+.2f}" if both else ""
    return out


# --------------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------------
def skipped_steps(tree: RunsTree, experiments: Sequence[str]) -> dict[str, int]:
    """Per listed experiment with runs in the index: how many logged records of its runs'
    ``metrics.jsonl`` say a step was skipped (``nonfinite`` set, or ``skipped_critic > 0``)."""
    runs = collect_runs(tree)
    counts = {}
    for name in experiments:
        mine = runs[runs["experiment"] == name] if len(runs) else runs
        if not len(mine):
            continue
        records = [r for path in mine["run_dir"] for r in RunFolder(Path(path)).read_metrics()]
        counts[name] = sum(
            1 for r in records if r.get("nonfinite") or (r.get("skipped_critic") or 0) > 0
        )
    return counts


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------
def _curve_rise(curve: pd.DataFrame, fraction: float) -> tuple[float, int | None, int | None]:
    """The rise of ``curve``'s mIoU from the record closest to ``fraction`` of its last iteration
    to the last record (NaN, None, None with fewer than two records)."""
    if len(curve) < 2:
        return math.nan, None, None
    last = int(curve["iter"].max())
    earlier = curve[curve["iter"] < last]
    at = int(earlier.loc[(earlier["iter"] - fraction * last).abs().idxmin(), "iter"])
    value = {int(i): float(m) for i, m in zip(curve["iter"], curve["miou"], strict=True)}
    return value[last] - value[at], at, last


def plateau_report(tree: RunsTree, groups: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """The plateau rule for every setting of ``groups``
    (:func:`skdlib.analysis.stats.plateau_of_groups`) as the chapters print it: a table in mIoU
    points (label, seeds, the two iterations, the two seed means, the rise, yes/no),
    and one sentence naming the settings that fail it, or saying that all pass."""
    plateau = plateau_of_groups(tree, groups)
    shown = plateau.assign(
        **{
            "mIoU at 75 % (%)": POINTS * plateau["miou_at"],
            "final (%)": POINTS * plateau["miou_last"],
            # three decimals: a rise of 0.995 points passes the rule and must not print as 1.00
            "rise (points)": [
                "n/a" if math.isnan(r) else f"{POINTS * r:+.3f}" for r in plateau["rise"]
            ],
            "at plateau": plateau["at_plateau"].map({True: "yes", False: "no"}),
        }
    )
    shown = shown.rename(
        columns={"label": "setting", "n_seeds": "seeds", "at_iter": "at iteration",
                 "last_iter": "last iteration"}
    )  # fmt: skip
    columns = ["setting", "seeds", "at iteration", "last iteration", "mIoU at 75 % (%)"]
    shown = shown[[*columns, "final (%)", "rise (points)", "at plateau"]]
    failing = list(plateau.index[~plateau["at_plateau"].astype(bool)])
    if not len(plateau):
        return shown, "No setting has finished yet."
    if not failing:
        return shown, f"All {len(plateau)} settings pass the plateau rule."
    return shown, (
        f"**Not at a plateau:** {', '.join(failing)} (of {len(plateau)} settings): the seed mean "
        f"still rises by {POINTS * PLATEAU_TOLERANCE:g} point or more over the last quarter, so "
        "their final scores are lower bounds, and a difference involving them says how far each "
        "got within the recipe's iterations, not where it ends."
    )


def teacher_checks(
    teacher: Mapping[str, Any],
    curve: pd.DataFrame,
    baseline_mean: float,
    *,
    gap: float = TEACHER_GAP,
    min_class_iou: float = TEACHER_MIN_CLASS_IOU,
    fraction: float = PLATEAU_FRACTION,
    tolerance: float = PLATEAU_TOLERANCE,
) -> pd.DataFrame:
    """Whether a teacher is worth distilling: its final val mIoU at least ``gap`` above the
    baseline student's seed mean, every class IoU at least ``min_class_iou``, and its own
    validation ``curve`` (:func:`skdlib.analysis.runs.teacher_curve`) rising less than
    ``tolerance`` between ``fraction`` of training and the end.

    Columns: ``criterion``, ``required``, ``measured``, ``holds`` (False where it cannot be
    measured: a missing teacher, baseline or curve).
    """
    miou = as_number(teacher.get("miou"))
    above = miou - baseline_mean
    classes = class_ious(teacher)
    worst = min(classes.items(), key=lambda kv: kv[1]) if classes else ("n/a", math.nan)
    rise, at, last = _curve_rise(curve, fraction)
    rows = [
        ("above the baseline's seed mean", f">= {POINTS * gap:g} points",
         f"{POINTS * above:.1f} points ({points(miou)} vs {points(baseline_mean)})", above >= gap),
        ("every class learnt", f"class IoU >= {min_class_iou:g}",
         f"lowest: {worst[0]} {worst[1]:.2f}", worst[1] >= min_class_iou),
        ("its own curve at a plateau", f"rise < {POINTS * tolerance:g} point over the last quarter",
         f"{POINTS * rise:+.2f} points ({at} -> {last})", rise < tolerance),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["criterion", "required", "measured", "holds"])


def network(name: str, options: Mapping[str, Any]) -> str:
    """A network as the tables name it: ``"pspnet_resnet18 width 0.25"`` (width 1 by default)."""
    return f"{name} width {dict(options).get('width', 1.0):g}"


def _dataset_sizes(cfg: ExperimentConfig, tree: RunsTree) -> tuple[int | str, int | str]:
    """Training images (``data.train_limit`` applied) and validation images of a run's data.

    A data set not on disk (e.g. the training set of a teacher kept in the repository, which is
    not generated while the teacher is reused) is counted from the embedded generator's options
    its config names; ``"n/a"`` where neither says."""
    from skdlib.data import build_dataset
    from skdlib.data.generate import read_manifest

    root = tree.resolve(cfg.data.root)
    n_train: int | str
    n_val: int | str
    if cfg.data.name == "embedded" and read_manifest(root) is None:  # never generate it here
        options = dict(cfg.data.options or {})
        n_train, n_val = options.get("num_train", "n/a"), options.get("num_val", "n/a")
    else:
        n_train = len(build_dataset(cfg.data.name, root, cfg.data.train_split))
        n_val = len(build_dataset(cfg.data.name, root, cfg.data.val_split))
    if cfg.data.train_limit is not None and isinstance(n_train, int):
        n_train = min(n_train, cfg.data.train_limit)
    return n_train, n_val


def _setup_rows(
    student: ExperimentConfig, teacher: ExperimentConfig, tree: RunsTree
) -> list[tuple[str, Any]]:
    d, data, m, t = student.distill, student.data, student.model, student.train
    sizes, teacher_sizes = _dataset_sizes(student, tree), _dataset_sizes(teacher, tree)
    init = "pretrained backbone" if m.student_pretrained else "random"
    return [
        ("teacher", network(teacher.model.student, teacher.model.student_options)),
        ("teacher data", f"{teacher.data.name}, {teacher_sizes[0]} train (labelled)"),
        ("teacher iterations", teacher.train.max_iters),
        ("student", f"{network(m.student, m.student_options)}, init {init}"),
        ("data", f"{data.name}, {sizes[0]} train / {sizes[1]} val"),
        ("crop", " x ".join(map(str, data.crop_size))),
        ("random scale", "-".join(f"{v:g}" for v in data.scale_range)),
        ("batch", data.batch_size),
        ("optimiser", f"{t.optimizer}, lr {t.lr:g}, weight decay {t.weight_decay:g}"),
        ("student iterations", t.max_iters),
        ("discriminator widths", "-".join(map(str, d.disc_widths))),
        ("node size beta", f"{d.node_size} x {d.node_size}"),
        ("lambda1 (PI, PA) / lambda2 (HO)", f"{d.lambda_pi:g}, {d.lambda_pa:g} / {d.lambda_ho:g}"),
    ]


def setup_table(
    student: ExperimentConfig,
    teacher: ExperimentConfig,
    *,
    tree: RunsTree,
    paper: Mapping[str, tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """The setup of a profile's runs from a student run's and the teacher run's configs:
    networks, iterations, data set and its sizes, crop, scale, batch, critic widths, node size and
    the loss weights, one ``setting`` per row with ``these runs``' value.

    ``paper`` maps a setting to ``(the paper's value, why these runs differ)``; with it the table
    has the columns ``setting, paper, these runs, why``. Data roots are resolved by ``tree``
    (:meth:`skdlib.analysis.runs.RunsTree.resolve`).
    """
    rows = _setup_rows(student, teacher, tree)
    if paper is None:
        return pd.DataFrame(rows, columns=["setting", "these runs"])
    full = []
    for setting, value in rows:
        theirs, why = paper.get(setting, ("", ""))
        full.append((setting, theirs, str(value), why))
    return pd.DataFrame(full, columns=["setting", "paper", "these runs", "why"])


def setting_value(cfg: ExperimentConfig | None, dotted: str) -> str:
    """One setting of a config as the tables print it: ``setting_value(cfg, "data.scale_range")
    == "0.75-1.5"``, floats with ``:g``; ``"n/a"`` without a config."""
    if cfg is None:
        return "n/a"
    section, key = dotted.split(".")
    value = getattr(getattr(cfg, section), key)
    if isinstance(value, tuple):
        return "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_table(configs: Mapping[str, ExperimentConfig], fields: Sequence[str]) -> pd.DataFrame:
    """``setting`` (a dotted field such as ``"distill.pool"``), one column of values per named
    config, and ``differs`` (True when the values are not all equal)."""
    rows = []
    for field in fields:
        values = [setting_value(cfg, field) for cfg in configs.values()]
        rows.append([field, *values, len(set(values)) > 1])
    return pd.DataFrame(rows, columns=["setting", *configs, "differs"])


def transfer(distill: DistillConfig) -> str:
    """What a student's extra term transfers, beside the pixel-wise one: ``"global pair-wise
    (lambda 10; avg pooling, 2x2 nodes)"``, ``"local pair-wise, 8 neighbours (lambda 1)"``, MIMIC,
    attention transfer or ``"none"``."""
    d = distill
    if d.pairwise:
        size = f"{d.node_size}x{d.node_size} nodes"
        kernel = f"kernel {d.node_fraction:g} of the map" if d.node_fraction else size
        return f"global pair-wise (lambda {d.lambda_pa:g}; {d.pool} pooling, {kernel})"
    if d.local_pairwise:
        return f"local pair-wise, 8 neighbours (lambda {d.lambda_local:g})"
    if d.mimic:
        return f"MIMIC, 1x1-conv regression (lambda {d.lambda_mimic:g})"
    if d.attention:
        return f"attention transfer (lambda {d.lambda_at:g})"
    return "none"
