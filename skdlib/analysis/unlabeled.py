"""The unlabeled-images experiment, read from a runs tree (the unlabeled-images chapter).

The group's experiments add a stream of unlabeled images (``data.unlabeled``) to students of the
ablation; the ablation's runs of the same terms are the same students without the stream.
:func:`unlabeled_table` adds to :func:`skdlib.analysis.runs.experiment_table` of both groups what
the chapter plots against: which distillation terms the run used, how many labelled images it had
and how many unlabeled ones. Both counts are read from the data sets the runs' own ``config.yaml``
name, not from experiment names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from skdlib.analysis.report import network, points
from skdlib.analysis.runs import RunsTree, experiment_table

if TYPE_CHECKING:
    from skdlib.train.config import ExperimentConfig

__all__ = [
    "stream_reuse",
    "terms_label",
    "unlabeled_grid",
    "unlabeled_pairs",
    "unlabeled_setup",
    "unlabeled_table",
]

_TERMS_ORDER = ("baseline", "+PI", "+PI+PA+HO")  # the chapter's rows, then any other terms


def terms_label(distill: Any) -> str:
    """``"baseline"`` or the terms a config switches on, in the paper's order (``"+PI+PA+HO"``);
    the variants (MIMIC, AT, local pair-wise) are named too."""
    parts = [
        (distill.pixelwise, "PI"),
        (distill.pairwise, "PA"),
        (distill.holistic, "HO"),
        (distill.mimic, "MIMIC"),
        (distill.attention, "AT"),
        (distill.local_pairwise, "local PA"),
    ]
    on = [name for flag, name in parts if flag]
    return "baseline" if not on else "+" + "+".join(on)


def unlabeled_table(
    tree: RunsTree,
    group: str = "unlabeled",
    *,
    references: str | None = "ablation",
) -> pd.DataFrame:
    """:func:`~skdlib.analysis.runs.experiment_table` of ``group``, and of the ``references``
    group's experiments with the same terms (and its baseline), plus, per experiment, ``terms``
    (:func:`terms_label`), ``labelled`` (training images with labels), ``unlabeled`` (images of the
    unlabeled stream, 0 without one) and ``ratio`` (``unlabeled / labelled``), read from the first
    run folder of the experiment that holds a ``config.yaml`` (NaN / ``""`` when none does yet).
    """
    table = _with_counts(tree, group)
    if references is None:
        return table
    known = _with_counts(tree, references)
    wanted = {"baseline", *table["terms"]} if len(table) else {"baseline"}
    keep = known[known["terms"].isin(wanted) & (known["unlabeled"] == 0)] if len(known) else known
    return pd.concat([keep, table[~table.index.isin(keep.index)]]) if len(keep) else table


def _with_counts(tree: RunsTree, group: str) -> pd.DataFrame:
    """``experiment_table`` of ``group`` with the ``terms``, ``labelled``, ``unlabeled`` and
    ``ratio`` columns of :func:`unlabeled_table`."""
    from skdlib.train.build import build_unlabeled_dataset

    table = experiment_table(tree, group)
    extra: dict[str, dict[str, Any]] = {}
    for exp in tree.experiments(group):
        if exp["name"] not in table.index:
            continue
        folders = tree.runs(exp["name"]).values()
        folder = next((f for f in folders if f.config.is_file()), None)
        if folder is None:
            extra[exp["name"]] = {
                "terms": "",
                "labelled": math.nan,
                "unlabeled": math.nan,
                "ratio": math.nan,
            }
            continue
        cfg = folder.read_config()
        # data.train_limit applied, as in the run
        labelled = len(tree.dataset(cfg, cfg.data.train_split))
        stream = build_unlabeled_dataset(cfg)  # None without a stream, as in the run
        unlabeled = 0 if stream is None else len(stream)
        extra[exp["name"]] = {
            "terms": terms_label(cfg.distill),
            "labelled": labelled,
            "unlabeled": unlabeled,
            "ratio": unlabeled / labelled,
        }
    for column in ("terms", "labelled", "unlabeled", "ratio"):
        table[column] = (
            [extra.get(name, {}).get(column, math.nan) for name in table.index]
            if len(table)
            else []
        )
    return table


def _finished(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["n_finished"] > 0]


def _terms_order(table: pd.DataFrame) -> list[str]:
    present = set(table["terms"])
    first = [t for t in _TERMS_ORDER if t in present]
    return first + sorted(present - set(first))


def unlabeled_grid(table: pd.DataFrame) -> pd.DataFrame:
    """The chapter's table from :func:`unlabeled_table`: one row per ``terms`` (baseline, +PI,
    +PI+PA+HO, then any other), one column per unlabeled-image count with the mIoU in points
    (mean ± std over the finished seeds, ``""`` where no such experiment finished), and ``seeds
    finished`` (``"n/m"`` per experiment of the row, by unlabeled count)."""
    done = _finished(table)
    order = _terms_order(done)
    cells = {(row["terms"], row["unlabeled"]): row for _, row in done.iterrows()}
    grid = pd.DataFrame(
        {
            f"{int(n)} unlabeled": [
                points(cells[t, n]["miou_mean"], cells[t, n]["miou_std"]) if (t, n) in cells else ""
                for t in order
            ]
            for n in sorted(done["unlabeled"].unique())
        },
        index=order,
    )
    grid["seeds finished"] = [
        ", ".join(
            f"{int(r.n_finished)}/{int(r.n_runs)}"
            for r in done[done["terms"] == t].sort_values("unlabeled").itertuples()
        )
        for t in order
    ]
    grid.index.name = "val mIoU % (mean ± std over seeds)"
    return grid


def unlabeled_pairs(table: pd.DataFrame, *, baseline: bool = True) -> list[tuple[str, str]]:
    """``(experiment, reference)`` pairs of :func:`unlabeled_table`'s finished experiments: every
    distilled experiment with unlabeled images against the same terms without, and (``baseline``)
    every distilled experiment against the baseline; by terms, then by unlabeled count."""
    done = _finished(table)
    base = list(done.index[done["terms"] == "baseline"])
    pairs = []
    for terms in _terms_order(done):
        if terms == "baseline":
            continue
        mine = done[done["terms"] == terms].sort_values("unlabeled", kind="stable")
        zero = list(mine.index[mine["unlabeled"] == 0])
        for name, row in mine.iterrows():
            if zero and row["unlabeled"] > 0:
                pairs.append((name, zero[0]))
            if baseline and base:
                pairs.append((name, base[0]))
    return pairs


def _configs(
    table: pd.DataFrame, tree: RunsTree
) -> tuple[ExperimentConfig, ExperimentConfig | None]:
    """The first finished run's config of the table's first experiment, and of its first
    experiment with a stream (``None`` without one)."""
    names = list(_finished(table).index)
    if not names:
        raise ValueError("table: no experiment with a finished run")
    cfg = tree.first_config(names[0])
    streaming = [n for n in names if table.loc[n, "unlabeled"] > 0]
    stream = tree.first_config(streaming[0]) if streaming else None
    return cfg, stream


def unlabeled_setup(
    table: pd.DataFrame,
    tree: RunsTree,
    *,
    teacher_miou: float = math.nan,
) -> pd.DataFrame:
    """``setting, value`` rows of the experiment, read from the first finished run of the first
    experiment of :func:`unlabeled_table` (and of the first one with a stream): student, teacher
    (with ``teacher_miou``, a fraction), labelled and unlabeled image counts, images per step,
    iterations, seeds per setting.

    Raises:
        ValueError: no experiment of the table has a finished run.
    """
    cfg, stream = _configs(table, tree)
    m = cfg.model
    per_step = stream.data.unlabeled.batch_size if stream is not None else 0
    labelled = int(table["labelled"].dropna().iloc[0])
    rows = [
        (
            "student",
            f"{network(m.student, m.student_options)}, init {_init(m.student_pretrained, tree)}",
        ),
        (
            "teacher",
            f"{network(m.teacher, m.teacher_options)} (the teacher run these students learn from, "
            f"val mIoU {points(teacher_miou)} %)",
        ),
        ("labelled images", f"{labelled} training images of {cfg.data.name}"),
        ("unlabeled images", ", ".join(str(n) for n in _counts(table))),
        ("labelled / unlabeled images per step", f"{cfg.data.batch_size} / {per_step}"),
        ("iterations", str(cfg.train.max_iters)),
        ("seeds per setting", str(int(table["n_runs"].max()))),
    ]
    return pd.DataFrame(rows, columns=["setting", "value"])


def _init(pretrained: str | None, tree: RunsTree) -> str:
    """A student's initialisation as the table shows it (a path relative to the project)."""
    if not pretrained:
        return "random"
    return f"the backbone of {tree.display(Path(pretrained).parents[1])}"


def _counts(table: pd.DataFrame) -> list[int]:
    return sorted(int(v) for v in table["unlabeled"].dropna().unique())


def stream_reuse(table: pd.DataFrame, tree: RunsTree) -> str:
    """How often a run with a stream sees each unlabeled image, as a sentence: ``iterations x
    unlabeled images per step`` draws over each pool size of :func:`unlabeled_table`.

    Raises:
        ValueError: no experiment of the table has a finished run.
    """
    stream = _configs(table, tree)[1]
    if stream is None:
        return "No run of this tree has an unlabeled stream."
    per_step = stream.data.unlabeled.batch_size
    draws = stream.train.max_iters * per_step
    pools = [n for n in _counts(table) if n > 0]
    return (
        f"Each run with a stream draws {stream.train.max_iters} x {per_step} = {draws} unlabeled "
        "images, so it sees each image of the pool of "
        + ", ".join(f"{n} about {draws / n:.2g} times" for n in pools)
        + "."
    )
