"""The unlabeled-images experiment, read from a runs tree (the unlabeled-images chapter).

The group's students learn from their own teacher, with or without a pool of unlabeled images
(``data.unlabeled``) beside their labelled scenes; the references group's baseline (labels only,
no teacher) is the same student without either. :func:`unlabeled_table` adds to
:func:`skdlib.analysis.runs.experiment_table` what the comparisons are built on: the distillation
terms a run used, its labelled and unlabeled image counts and its iterations, all read from the
runs' own ``config.yaml`` and the data sets they name, never from experiment names.
:func:`unlabeled_pairs` derives the chapter's questions from those columns; the tests of each
question are :mod:`skdlib.analysis.verdicts`'.

A ``<name>_2x`` experiment is ``<name>``'s convergence control (the same seeds trained twice as
long, the book's rule in :mod:`skdlib.analysis.verdicts`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from skdlib.analysis.regimes import CONVERGED_WITHIN
from skdlib.analysis.report import network, points
from skdlib.analysis.runs import RunsTree, collect_runs, experiment_table
from skdlib.analysis.verdicts import (
    TWICE_SUFFIX,
    compare,
    convergence_table,
    label_of,
    sentence,
)

if TYPE_CHECKING:
    from skdlib.train.config import ExperimentConfig

__all__ = [
    "PAPER_CAMVID",
    "paper_camvid_table",
    "stream_reuse",
    "terms_label",
    "unlabeled_pairs",
    "unlabeled_reading",
    "unlabeled_runs",
    "unlabeled_setup",
    "unlabeled_table",
]

_COUNTS = ("terms", "labelled", "unlabeled", "iterations")

#: The paper's CamVid results (test mIoU %, its CamVid table): student, baseline, with
#: distillation, with distillation and about 2 000 unlabeled images (``None``: not reported).
PAPER_CAMVID = (("ESPNet", 57.8, 61.4, 65.1), ("ESPNet-C", 56.7, 60.3, None))


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
    """:func:`~skdlib.analysis.runs.experiment_table` of the ``references`` group's baseline
    (no distillation term, no pool: labels only), then of ``group``, plus per experiment
    ``terms`` (:func:`terms_label`), ``labelled`` (training images with labels), ``unlabeled``
    (images of the unlabeled stream, 0 without one) and ``iterations``, read from the first run
    folder of the experiment that holds a ``config.yaml`` (``""`` / NaN when none does yet).

    The references' distilled settings are left out: they learn from another teacher.
    """
    table = _with_counts(tree, group)
    if references is None:
        return table
    known = _with_counts(tree, references)
    keep = (
        known[(known["terms"] == "baseline") & (known["unlabeled"] == 0)] if len(known) else known
    )
    return pd.concat([keep, table[~table.index.isin(keep.index)]]) if len(keep) else table


def _counts(tree: RunsTree, name: str) -> dict[str, Any]:
    """The :data:`_COUNTS` of experiment ``name`` from its first run folder with a config."""
    from skdlib.train.build import build_unlabeled_dataset

    folder = next((f for f in tree.runs(name).values() if f.config.is_file()), None)
    if folder is None:
        return {"terms": "", "labelled": math.nan, "unlabeled": math.nan, "iterations": math.nan}
    cfg = folder.read_config()
    stream = build_unlabeled_dataset(cfg)  # None without a stream, as in the run
    return {
        "terms": terms_label(cfg.distill),
        "labelled": len(tree.dataset(cfg, cfg.data.train_split)),  # train_limit applied
        "unlabeled": 0 if stream is None else len(stream),
        "iterations": cfg.train.max_iters,
    }


def _with_counts(tree: RunsTree, group: str) -> pd.DataFrame:
    """``experiment_table`` of ``group`` with the columns of :data:`_COUNTS`."""
    table = experiment_table(tree, group)
    counts = {name: _counts(tree, name) for name in table.index}
    for column in _COUNTS:
        table[column] = [counts[name][column] for name in table.index] if len(table) else []
    return table


def unlabeled_runs(tree: RunsTree, table: pd.DataFrame) -> pd.DataFrame:
    """:func:`~skdlib.analysis.runs.collect_runs`' rows (one per run) of the experiments of
    :func:`unlabeled_table`, in the table's order."""
    runs = collect_runs(tree)
    if not len(runs):
        return runs
    mine = runs[runs["experiment"].isin(table.index)]
    order = {name: i for i, name in enumerate(table.index)}
    return mine.sort_values("experiment", key=lambda s: s.map(order), kind="stable")


def unlabeled_pairs(table: pd.DataFrame) -> dict[str, list[tuple[str, str]]]:
    """The chapter's questions as ``(reference, setting)`` pairs of :func:`unlabeled_table`'s
    experiments with a finished run, in table order:

    * ``"pool"``: the same terms and iterations without and with a pool;
    * ``"terms"``: with a pool, ``+PI`` against more terms (same pool size and iterations);
    * ``"baseline"``: the baseline against each distilled setting of its iterations;
    * ``"convergence"``: each setting against its ``<name>_2x`` control.

    The first three pair a control only with a control (the baseline has none).
    """
    done = table[table["n_finished"] > 0]
    controls = {
        n
        for n in done.index
        if n.endswith(TWICE_SUFFIX) and n.removesuffix(TWICE_SUFFIX) in done.index
    }
    rows = [(name, row, name in controls) for name, row in done.iterrows()]
    out: dict[str, list[tuple[str, str]]] = {"pool": [], "terms": [], "baseline": []}
    for a, ra, ca in rows:
        for b, rb, cb in rows:
            same_run = ca == cb and ra["iterations"] == rb["iterations"]
            if same_run and ra["terms"] == rb["terms"] and ra["unlabeled"] == 0 < rb["unlabeled"]:
                out["pool"].append((a, b))
            pool = ra["unlabeled"] == rb["unlabeled"] > 0
            if same_run and pool and ra["terms"] == "+PI" != rb["terms"]:
                out["terms"].append((a, b))
            if same_run and ra["terms"] == "baseline" != rb["terms"]:
                out["baseline"].append((a, b))
    out["convergence"] = [
        (n, n + TWICE_SUFFIX) for n in done.index if n + TWICE_SUFFIX in done.index
    ]
    return out


def unlabeled_reading(
    runs: pd.DataFrame, table: pd.DataFrame, *, teacher_miou: float = math.nan
) -> str:
    """The chapter's reading as Markdown bullets: each pool and terms question
    (:func:`~skdlib.analysis.verdicts.sentence`), whether the settings with a pool converged and
    what that leaves open, each setting against the baseline, and the teacher (``teacher_miou``, a
    fraction). ``""`` when nothing can be compared."""
    pairs = unlabeled_pairs(table)
    lines = [sentence(compare(runs, r, s), question="The pool") for r, s in pairs["pool"]]
    lines += [sentence(compare(runs, r, s), question="More terms") for r, s in pairs["terms"]]
    lines += _convergence_lines(runs, pairs)
    lines += [sentence(compare(runs, r, s), question="Context") for r, s in pairs["baseline"]]
    if lines and not math.isnan(teacher_miou):
        lines.append(f"Ceiling: the teacher scores {points(teacher_miou)}.")
    return "\n".join(f"- {line}" for line in lines)


def _convergence_lines(runs: pd.DataFrame, pairs: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Per convergence pair: the change at twice the iterations and the verdict; per pool or
    terms pair without controls on its sides: which side is not shown converged, so that its
    difference is not read as a converged one."""
    table = convergence_table(runs, pairs["convergence"])
    controls = {control for _, control in pairs["convergence"]}
    converged = {
        name: bool(ok)
        for (name, _), ok in zip(pairs["convergence"], table.get("converged", []), strict=True)
    }
    lines = [
        f"Convergence: {row.setting} moved {row.change:+.2f} points at twice the iterations "
        f"(seeds {row.seeds}): {'converged' if row.converged else 'not converged'} "
        f"(the rule: less than {CONVERGED_WITHIN:g})."
        for row in table.itertuples()
    ]
    for reference, setting in pairs["pool"] + pairs["terms"]:
        if reference in controls or setting in controls:
            continue
        why = [
            f"{label_of(runs, n)} {'was still moving' if n in converged else 'has no 2x control'}"
            for n in (reference, setting)
            if not converged.get(n, False)
        ]
        if why:
            lines.append(
                f"So {label_of(runs, setting)} against {label_of(runs, reference)} is not a "
                f"converged comparison: {' and '.join(why)}."
            )
    return lines


def _configs(
    table: pd.DataFrame, tree: RunsTree
) -> tuple[ExperimentConfig, ExperimentConfig | None]:
    """The first finished run's config of the table's first experiment, and of its first
    experiment with a stream (``None`` without one).

    Raises:
        ValueError: no experiment of the table has a finished run.
    """
    names = list(table.index[table["n_finished"] > 0])
    if not names:
        raise ValueError("table: no experiment with a finished run")
    streaming = [n for n in names if table.loc[n, "unlabeled"] > 0]
    stream = tree.first_config(streaming[0]) if streaming else None
    return tree.first_config(names[0]), stream


def unlabeled_setup(
    table: pd.DataFrame, tree: RunsTree, *, teacher_miou: float = math.nan
) -> pd.DataFrame:
    """``setting, value`` rows of the experiment, read from the first finished run of the first
    experiment of :func:`unlabeled_table` (and of the first one with a stream): student, teacher
    (with ``teacher_miou``, a fraction), labelled and unlabeled image counts, images per step,
    iterations (the settings' and their controls'), seeds per setting.

    Raises:
        ValueError: no experiment of the table has a finished run.
    """
    cfg, stream = _configs(table, tree)
    m = stream.model if stream is not None else cfg.model
    per_step = stream.data.unlabeled.batch_size if stream is not None else 0
    pools = sorted(int(n) for n in table["unlabeled"].dropna().unique() if n > 0)
    rows = [
        (
            "student",
            f"{network(m.student, m.student_options)}, init {_init(m.student_pretrained, tree)}",
        ),
        ("teacher", f"{network(m.teacher, m.teacher_options)}, val mIoU {points(teacher_miou)} %"),
        (
            "labelled images",
            f"{int(table['labelled'].dropna().iloc[0])} training images of {cfg.data.name}",
        ),
        ("unlabeled images (pool)", ", ".join(str(n) for n in pools) or "none"),
        ("labelled / unlabeled images per step", f"{cfg.data.batch_size} / {per_step}"),
        (
            "iterations",
            " and ".join(str(int(n)) for n in sorted(table["iterations"].dropna().unique())),
        ),
        ("seeds per setting", ", ".join(str(int(n)) for n in sorted(table["n_runs"].unique()))),
    ]
    return pd.DataFrame(rows, columns=["setting", "value"])


def _init(pretrained: str | None, tree: RunsTree) -> str:
    """A student's initialisation as the table shows it (a path relative to the project)."""
    if not pretrained:
        return "random"
    return f"the backbone of {tree.display(Path(pretrained).parents[1])}"


def stream_reuse(table: pd.DataFrame, tree: RunsTree) -> str:
    """How often a run with a stream sees each unlabeled image, as a sentence: ``iterations x
    unlabeled images per step`` draws over the pool of the table's first experiment with one.

    Raises:
        ValueError: no experiment of the table has a finished run.
    """
    stream = _configs(table, tree)[1]
    if stream is None:
        return "No run of this tree has an unlabeled stream."
    per_step, iters = stream.data.unlabeled.batch_size, stream.train.max_iters
    pool = int(table.loc[table["unlabeled"] > 0, "unlabeled"].iloc[0])
    return (
        f"Each run with the pool draws {iters} x {per_step} = {iters * per_step} unlabeled images, "
        f"so it sees each of the {pool} images about {iters * per_step / pool:.3g} times "
        "(twice as often in a 2x control)."
    )


def paper_camvid_table() -> pd.DataFrame:
    """:data:`PAPER_CAMVID` as a table (test mIoU %)."""
    columns = ["student", "baseline", "+ distillation", "+ distillation + ~2 000 unlabeled images"]
    return pd.DataFrame(list(PAPER_CAMVID), columns=columns)
