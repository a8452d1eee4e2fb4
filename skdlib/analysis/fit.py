"""How well finished networks fit the students' labelled scenes, beside their validation scores.

A student distilled on its labelled scenes only learns from the teacher where the teacher's maps
of *those* scenes say more than their labels. :func:`labelled_fit` scores the teacher and the
students on the students' labelled training scenes (whole images, no augmentation) and on the
validation scenes, so a chapter can show whether the teacher's targets on the labelled scenes are
better or worse than the labels the baseline already fits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from skdlib.analysis.runs import FINISHED, RunsTree, collect_runs, run_status
from skdlib.train.build import torch_threads
from skdlib.train.runfolder import RunFolder

__all__ = ["labelled_fit"]


def _scores(tree: RunsTree, folder: RunFolder, datasets: Mapping[str, Any]) -> dict[str, float]:
    from skdlib.evaluate import evaluate

    net = tree.network(folder)
    num_classes = tree.classes_of(folder)
    row: dict[str, float] = {}
    for name, dataset in datasets.items():
        scores = evaluate(net, dataset, num_classes=num_classes, device="cpu", batch_size=20)
        row[f"{name}_miou"] = float(scores["miou"])
        row[f"{name}_pixel_acc"] = float(scores["pixel_acc"])
    return row


def labelled_fit(
    tree: RunsTree, experiments: Sequence[str], *, threads: int | None = 1
) -> pd.DataFrame:
    """mIoU and pixel accuracy of the teacher of the first experiment and of every finished run
    of ``experiments`` on the labelled training scenes of the first experiment's runs (its
    ``data.train_limit`` applied) and on their validation scenes.

    Returns one row per network (``teacher`` first, then each experiment, means over its finished
    seeds): ``network``, ``label``, ``n_seeds``, ``labelled_miou``, ``labelled_pixel_acc``,
    ``val_miou``, ``val_pixel_acc`` (fractions in [0, 1]). ``threads``: torch threads while
    scoring (restored after; None leaves them).

    Raises:
        ValueError: no finished run of the first experiment (the data sets come from its config).
    """
    runs = collect_runs(tree)
    runs = runs[(runs["status"] == FINISHED) & runs["experiment"].isin(list(experiments))]
    names = [e["name"] for e in tree.experiments()]
    first = tree.finished(experiments[0]) if experiments and experiments[0] in names else []
    if not first:
        raise ValueError(f"experiments: no finished run of {experiments[0]!r} to read data from")
    cfg = first[0].read_config()
    datasets = {
        "labelled": tree.dataset(cfg, cfg.data.train_split),
        "val": tree.dataset(cfg, cfg.data.val_split),
    }
    with torch_threads(threads):
        rows = []
        teacher = tree.teacher(experiments[0])
        if run_status(teacher.root) == FINISHED:
            scored = _scores(tree, teacher, datasets)
            rows.append({"network": "teacher", "label": "teacher", "n_seeds": 1, **scored})
        for name in experiments:
            mine = runs[runs["experiment"] == name]
            scored = [
                _scores(tree, RunFolder(tree.profile_dir / d), datasets) for d in mine["run_dir"]
            ]
            if scored:
                means = pd.DataFrame(scored).mean().to_dict()
                label = mine.iloc[0]["label"]
                rows.append({"network": name, "label": label, "n_seeds": len(scored), **means})
    return pd.DataFrame(rows)
