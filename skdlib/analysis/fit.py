"""How well finished networks fit the students' labelled scenes, beside their validation scores.

A student distilled on its labelled scenes only learns from the teacher where the teacher's maps
of *those* scenes say more than their labels. :func:`labelled_fit` scores the teacher and the
students on the students' labelled training scenes (whole images, no augmentation) and on the
validation scenes, so a chapter can show whether the teacher's targets on the labelled scenes are
better or worse than the labels the baseline already fits.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skdlib.analysis.embedding import _resolve
from skdlib.analysis.runs import FINISHED, collect_runs, load_run_config, teacher_summary
from skdlib.train.build import torch_threads
from skdlib.train.config import ExperimentConfig

__all__ = ["labelled_fit"]

PathLike = str | os.PathLike[str]


def _split(cfg: ExperimentConfig, split: str, base_dir: Path) -> Any:
    """``split`` of the run's data set (its ``data.train_limit`` applied to the training split),
    a relative ``data.root`` resolved against ``base_dir``."""
    from skdlib.train.build import build_dataset_for

    data = dataclasses.replace(cfg.data, root=str(_resolve(cfg.data.root, (base_dir,))))
    return build_dataset_for(dataclasses.replace(cfg, data=data), split)


def _scores(run_dir: Path, datasets: Mapping[str, Any], num_classes: int) -> dict[str, float]:
    from skdlib.evaluate import evaluate
    from skdlib.train.build import load_run_network

    net = load_run_network(run_dir, num_classes)
    row: dict[str, float] = {}
    for name, dataset in datasets.items():
        scores = evaluate(net, dataset, num_classes=num_classes, device="cpu", batch_size=20)
        row[f"{name}_miou"] = float(scores["miou"])
        row[f"{name}_pixel_acc"] = float(scores["pixel_acc"])
    return row


def labelled_fit(
    profile_dir: PathLike,
    index: Mapping[str, Any],
    experiments: Sequence[str],
    *,
    base_dir: PathLike = ".",
    threads: int | None = 1,
) -> pd.DataFrame:
    """mIoU and pixel accuracy of the teacher and of every finished run of ``experiments`` on
    the labelled training scenes of the first experiment's runs and on their validation scenes.

    Returns one row per network (``teacher`` first, then each experiment, means over its finished
    seeds): ``network``, ``label``, ``n_seeds``, ``labelled_miou``, ``labelled_pixel_acc``,
    ``val_miou``, ``val_pixel_acc`` (fractions in [0, 1]). ``threads``: torch threads while
    scoring (restored after; None leaves them).

    Raises:
        ValueError: no finished run of the first experiment (the data sets come from its config).
    """
    profile_dir = Path(profile_dir)
    runs = collect_runs(index, None, profile_dir=profile_dir)
    runs = runs[(runs["status"] == FINISHED) & runs["experiment"].isin(list(experiments))]
    first = runs[runs["experiment"] == experiments[0]]
    if not len(first):
        raise ValueError(f"experiments: no finished run of {experiments[0]!r} to read data from")
    cfg = load_run_config(first.iloc[0]["run_dir"])
    datasets = {"labelled": _split(cfg, cfg.data.train_split, Path(base_dir))}
    datasets["val"] = _split(cfg, cfg.data.val_split, Path(base_dir))
    num_classes = int(cfg.model.num_classes or datasets["val"].num_classes)
    with torch_threads(threads):
        rows = []
        teacher = teacher_summary(index, profile_dir=profile_dir)
        if teacher is not None and teacher["status"] == FINISHED:
            scored = _scores(Path(teacher["run_dir"]), datasets, num_classes)
            rows.append({"network": "teacher", "label": "teacher", "n_seeds": 1, **scored})
        for name in experiments:
            mine = runs[runs["experiment"] == name]
            scored = [_scores(Path(d), datasets, num_classes) for d in mine["run_dir"]]
            if scored:
                means = pd.DataFrame(scored).mean().to_dict()
                label = mine.iloc[0]["label"]
                rows.append({"network": name, "label": label, "n_seeds": len(scored), **means})
    return pd.DataFrame(rows)
