"""The search for a profile's recipe, read back from its record folders.

A recipe is chosen on the teacher's and the baseline's curves alone. The runs of that search are
kept as record folders (``config.yaml``, ``summary.json``, ``metrics.jsonl``; no weights), e.g.
``kept/quick/regime_search``: teachers, pretraining runs and students trained without any
distillation term. :func:`regime_table` groups the students into regimes (width, initialisation,
labelled scenes, learning rate) and puts each regime's seed mean at ``T`` iterations beside its
seed mean at ``2T`` (the book's convergence rule: twice the iterations move the seed mean by less
than :data:`CONVERGED_WITHIN` points) and beside the teacher trained on the same labelled scenes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

__all__ = ["CONVERGED_WITHIN", "read_search", "regime_table", "teacher_table"]

PathLike = str | os.PathLike[str]

#: Twice the iterations must move a converged setting's seed mean by less than this (points).
CONVERGED_WITHIN = 0.5
_KEY = ["width", "init", "scenes", "lr"]


def _record(folder: Path) -> dict[str, Any] | None:
    """One finished record folder as a flat row (None without a summary)."""
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        return None
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    summary = json.loads(summary_path.read_text())
    model, data, train = cfg["model"], cfg["data"], cfg["train"]
    options = data.get("options") or {}
    kind = "student"
    if "class_groups" in options:
        kind = "pretrain"
    elif model.get("teacher") is None and cfg["name"].startswith("teacher"):
        kind = "teacher"
    curve = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("split") == "val" and record.get("miou") is not None:
            curve[int(record["iter"])] = 100 * float(record["miou"])
    return {
        "folder": folder.name,
        "kind": kind,
        "network": model["student"],
        "width": float((model.get("student_options") or {}).get("width", 1.0)),
        "init": "pretrained" if model.get("student_pretrained") else "random",
        "scenes": int(data.get("train_limit") or options.get("num_train")),
        "lr": float(train["lr"]),
        "iters": int(train["max_iters"]),
        "seed": int(train["seed"]),
        "miou": 100 * float(summary["miou"]),
        "min_class_iou": min(summary.get("class_iou") or [math.nan]),
        "curve": curve,
    }


def read_search(folder: PathLike) -> pd.DataFrame:
    """Every finished record under ``folder``, one row each (see :func:`_record`'s keys).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no record folder at {root}")
    rows = [r for d in sorted(root.iterdir()) if d.is_dir() and (r := _record(d)) is not None]
    return pd.DataFrame(rows)


def teacher_table(records: pd.DataFrame) -> pd.DataFrame:
    """The teachers of the search: network, initialisation, labelled scenes, iterations, mIoU
    (%), lowest class IoU; one row per teacher record."""
    teachers = records[records["kind"] == "teacher"]
    table = teachers[["width", "init", "scenes", "iters", "miou", "min_class_iou"]].copy()
    table.insert(0, "network", [_network(w) for w in teachers["width"]])
    return table.rename(
        columns={
            "init": "initialisation",
            "scenes": "labelled scenes",
            "iters": "iterations",
            "miou": "val mIoU (%)",
            "min_class_iou": "lowest class IoU",
        }
    ).drop(columns="width")


def _network(width: float) -> str:
    return f"PSPNet-ResNet18 x{width:g}"


def _pairs(runs: pd.DataFrame) -> list[tuple[int, float, float, int]]:
    """``(T, mean at T, mean at 2T, seeds at T)`` for every length ``T`` whose double was run too;
    a regime run at one length only gives ``(T, mean, NaN, seeds)`` for its longest."""
    by_length = {t: g["miou"] for t, g in runs.groupby("iters")}
    pairs = [
        (t, float(by_length[t].mean()), float(by_length[2 * t].mean()), len(by_length[t]))
        for t in sorted(by_length)
        if 2 * t in by_length
    ]
    if pairs:
        return pairs
    t = max(by_length)
    return [(t, float(by_length[t].mean()), math.nan, len(by_length[t]))]


def regime_table(records: pd.DataFrame, *, chosen: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per regime tried and iteration length ``T`` with a ``2T`` beside it.

    Columns: student, initialisation, labelled scenes, AdamW lr, ``T``, seeds, baseline mIoU at
    ``T`` and at ``2T`` (seed means, %), their change, ``converged`` (the change under
    :data:`CONVERGED_WITHIN`), the teacher trained on the same labelled scenes (its mIoU; the
    pretrained one where there are two) and the gap (teacher minus the baseline at ``2T``, or at
    ``T`` for a regime run at one length only: ``2T`` NaN), and
    ``chosen`` (the row that matches ``chosen``: ``width``, ``init``, ``scenes``, ``lr``,
    ``iters``).
    """
    students = records[records["kind"] == "student"]
    teachers = records[records["kind"] == "teacher"].sort_values("init")  # pretrained first
    teacher_of = teachers.groupby("scenes")["miou"].first().to_dict()
    rows = []
    for key, runs in students.groupby(_KEY, sort=True):
        width, init, scenes, lr = key
        for t, at_t, at_2t, seeds in _pairs(runs):
            teacher = teacher_of.get(scenes, math.nan)
            change = at_2t - at_t
            last = at_t if math.isnan(at_2t) else at_2t
            is_chosen = chosen is not None and (width, init, scenes, lr, t) == tuple(
                chosen[k] for k in (*_KEY, "iters")
            )
            rows.append(
                {
                    "student": _network(width),
                    "initialisation": init,
                    "labelled scenes": scenes,
                    "AdamW lr": lr,
                    "T": t,
                    "seeds": seeds,
                    "at T": at_t,
                    "at 2T": at_2t,
                    "change": change,
                    "converged": bool(abs(change) < CONVERGED_WITHIN)
                    if not math.isnan(change)
                    else False,
                    "teacher (same scenes)": teacher,
                    "gap": teacher - last,
                    "chosen": is_chosen,
                }
            )
    return pd.DataFrame(rows)
