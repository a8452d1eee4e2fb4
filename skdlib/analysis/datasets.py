"""What the data chapter shows: the data sets a profile's runs use, read from the profile's
configurations (never typed), their class shares, and the pixel-vs-context probe as a table."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from skdlib.train.config import ExperimentConfig

__all__ = ["ProfileData", "class_shares", "probe_table", "profile_data"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ProfileData:
    """The data sets of a profile's runs.

    Attributes:
        profile: the plan's profile.
        student: the configuration of the profile's first student run (as the pipeline builds
            it: the profile's overrides applied, paths absolute).
        teacher: the configuration of the teacher run that student learns from.
        project_root: the project the paths are shown relative to.
    """

    profile: str
    student: ExperimentConfig
    teacher: ExperimentConfig
    project_root: Path

    @property
    def root(self) -> Path:
        """The students' data set folder."""
        return Path(self.student.data.root)

    @property
    def generator_options(self) -> dict[str, Any]:
        """The embedded generator's options of the students' data set (for
        :func:`skdlib.data.ensure_embedded`)."""
        from skdlib.train.build import embedded_data_sets

        return dict(embedded_data_sets(self.student)[0][1])

    def dataset(self, split: str) -> Any:
        """A split of the students' data set (``data.train_limit`` applied to the training
        split, as in the runs)."""
        from skdlib.train.build import build_dataset_for

        return build_dataset_for(self.student, split)

    def shown(self, path: PathLike) -> str:
        """``path`` relative to the project root when inside it."""
        where = Path(path).resolve()
        root = self.project_root.resolve()
        return str(where.relative_to(root)) if where.is_relative_to(root) else where.name

    def table(self) -> pd.DataFrame:
        """``what, students, teacher``: data set, folder, image size, labelled training scenes,
        validation scenes and the small objects' scale of each run's data, from the configs."""

        def column(cfg: ExperimentConfig) -> list[str]:
            options = dict(cfg.data.options or {})
            train = options.get("num_train", "n/a")
            if cfg.data.train_limit is not None and isinstance(train, int):
                train = min(train, cfg.data.train_limit)
            size = f"{options['height']} x {options['width']}" if "height" in options else "n/a"
            return [
                cfg.data.name,
                self.shown(cfg.data.root),
                size,
                str(train),
                str(options.get("num_val", "n/a")),
                f"{options.get('small_object_scale', 1.0):g}",
            ]

        rows = [
            "data set",
            "folder",
            "image size (pixels)",
            "labelled training scenes",
            "validation scenes",
            "small objects' scale",
        ]
        return pd.DataFrame(
            {"what": rows, "students": column(self.student), "teacher": column(self.teacher)}
        )


def profile_data(profile: str, *, repo: PathLike) -> ProfileData:
    """The data of ``profile``'s runs, from the plan (``configs/experiments.yaml`` of ``repo``)
    as the pipeline builds them (:func:`skdlib.experiments.build_runs`; nothing is trained or
    generated).

    Raises:
        skdlib.experiments.PlanError: an unknown profile.
    """
    from skdlib.experiments import DEFAULT_PLAN, build_runs, load_plan

    root = Path(repo).resolve()
    plan = load_plan(root / DEFAULT_PLAN)
    first = plan.select(None, plan.profile(profile))[0].name
    runs = build_runs(plan, profile, project_root=root, only=[first])
    student = runs[-1]
    teacher = next(spec for spec in runs if spec.is_teacher and spec.key == student.teacher)
    return ProfileData(profile, student.config, teacher.config, root)


def class_shares(datasets: Mapping[str, Any]) -> pd.DataFrame:
    """Percent of the labelled pixels of each class, one column per data set (``{split:
    dataset}``), one row per class (the first data set's class names)."""
    columns = {}
    names: list[str] = []
    for split, dataset in datasets.items():
        names = names or list(dataset.class_names)
        counts = np.zeros(dataset.num_classes, dtype=np.int64)
        for index in range(len(dataset)):
            label = dataset[index]["label"].numpy()
            counts += np.bincount(label[label != dataset.ignore_index], minlength=len(counts))
        columns[split] = 100 * counts / max(1, counts.sum())
    return pd.DataFrame(columns, index=pd.Index(names, name="class"))


def probe_table(probe: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`skdlib.analysis.context.pixel_vs_context_probe`'s scores: one row per model, its
    val mIoU and each class's IoU, in percent with one decimal."""
    models = [
        ("per-pixel logistic regression", "pixel_linear"),
        ("per-pixel MLP", "pixel_mlp"),
        ("dilated conv net (context)", "context"),
    ]
    rows = []
    for title, key in models:
        if probe.get(f"{key}_miou") is None:
            continue
        ious = dict(zip(probe["class_names"], probe["class_iou"][key], strict=True))
        rows.append({"model": title, "val mIoU": probe[f"{key}_miou"], **ious})
    return pd.DataFrame(rows).round(1)
