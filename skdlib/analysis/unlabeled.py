"""The unlabeled-images experiment, read from a runs tree (``book/unlabeled.md``).

Each experiment of the group trains a student on a small labelled subset, with or without a
stream of unlabeled images (``data.unlabeled``). :func:`unlabeled_table` adds to
:func:`skdlib.analysis.runs.experiment_table` what the chapter plots against: which distillation
terms the run used, how many labelled images it had and how many unlabeled ones. Both counts are
read from the data sets the runs' own ``config.yaml`` name, not from experiment names.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from skdlib.analysis.runs import experiment_table
from skdlib.train.runfolder import RunFolder

__all__ = ["terms_label", "unlabeled_table"]

PathLike = str | os.PathLike[str]


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
    index: Mapping[str, Any], group: str = "unlabeled", *, profile_dir: PathLike
) -> pd.DataFrame:
    """:func:`~skdlib.analysis.runs.experiment_table` of ``group`` plus, per experiment, ``terms``
    (:func:`terms_label`), ``labelled`` (training images with labels), ``unlabeled`` (images of the
    unlabeled stream, 0 without one) and ``ratio`` (``unlabeled / labelled``), read from the first
    run folder of the experiment that holds a ``config.yaml`` (NaN / ``""`` when none does yet).
    """
    from skdlib.train.loop import build_dataset_for, build_unlabeled_dataset

    table = experiment_table(index, group, profile_dir=profile_dir)
    extra: dict[str, dict[str, Any]] = {}
    for exp in index.get("experiments", []):
        if group not in exp.get("groups", []) or exp["name"] not in table.index:
            continue
        folders = [RunFolder(Path(profile_dir) / run["run_dir"]) for run in exp.get("runs", [])]
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
        labelled = len(build_dataset_for(cfg, cfg.data.train_split))
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
