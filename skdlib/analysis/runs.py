"""Reading a profile's runs tree: :class:`RunsTree`, the one reader of what the pipeline wrote.

Layout (the pipeline's contract, :mod:`skdlib.experiments.index`)::

    runs/<profile>/index.json              # profile, data, num_classes, teachers, experiments
    runs/<profile>/<teacher name>/         # each teacher's run folder (or one kept in the project)
    runs/<profile>/<experiment>/seed<k>/   # one run folder per experiment and seed

Every ``run_dir`` in the index is relative to the profile folder; the index's file name and keys
come from :mod:`skdlib.experiments.index`, which writes it. A run counts as **finished** only
when its folder holds a ``summary.json`` with ``"finished": true``; an index entry marked
``failed`` stays failed; anything else (pending, interrupted, summary missing) is
**unfinished**. Missing and failed runs are reported in the tables (counts per experiment),
never raised.

A tree knows its project root: relative paths in the runs' configs (``data.root``) are resolved
against it in one place (:meth:`RunsTree.resolve`), and paths are shown relative to it
(:meth:`RunsTree.display`), never as the build machine's absolute folders.

Chapters open a tree with :func:`open_runs`, which falls back to a tiny demo tree
(:mod:`skdlib.analysis.demo`) when the profile has no index yet. The tables here aggregate seeds
(mean, sample standard deviation with ``ddof=1``, min, max of the finished seeds); the tests on
them (seed noise, plateau) are in :mod:`skdlib.analysis.stats`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from skdlib.experiments.index import (
    EXPERIMENTS_KEY,
    FAILED,
    FINISHED,
    INDEX_NAME,
    NUM_CLASSES_KEY,
    PRETRAIN_KEY,
    PROFILE_KEY,
    RUN_DIR_KEY,
    RUNS_KEY,
    SEED_KEY,
    STATUS_KEY,
    TEACHER_DIR_KEY,
    TEACHER_KEY,
    TEACHERS_KEY,
)
from skdlib.train.runfolder import RunFolder

if TYPE_CHECKING:
    from torch import nn

    from skdlib.train.config import ExperimentConfig

__all__ = [
    "FAILED",
    "FINISHED",
    "UNFINISHED",
    "RunsTree",
    "as_number",
    "class_ious",
    "collect_runs",
    "experiment_table",
    "find_repo_root",
    "load_index",
    "open_runs",
    "run_status",
    "teacher_curve",
    "teacher_summary",
    "val_curves",
]

logger = logging.getLogger(__name__)

#: A run listed in the index whose folder holds no finished summary (and not listed failed).
UNFINISHED = "unfinished"
#: The name of a profile's teacher when the index lists one teacher only (its ``teacher`` key).
DEFAULT_TEACHER = TEACHER_KEY

_INDEX_KEYS = (PROFILE_KEY, EXPERIMENTS_KEY)
_RUN_KEYS = (SEED_KEY, RUN_DIR_KEY)

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
    path = Path(profile_dir) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"profile_dir: no {INDEX_NAME} in {Path(profile_dir)}; the pipeline writes it "
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
    for exp in index[EXPERIMENTS_KEY]:
        if "name" not in exp:
            raise ValueError(f"profile_dir: {path} has an experiment without a name: {exp!r}")
        for run in exp.get(RUNS_KEY, []):
            lacking = [key for key in _RUN_KEYS if key not in run]
            if lacking:
                raise ValueError(
                    f"profile_dir: {path}, experiment {exp['name']!r}: a run lacks {lacking}: "
                    f"{run!r}"
                )
    return index


def run_status(run_dir: PathLike, listed: str | None = None) -> str:
    """``finished`` when ``summary.json`` says so; else ``failed`` if the index lists it failed;
    else ``unfinished``."""
    summary = RunFolder(Path(run_dir)).read_summary()
    if summary is not None and summary.get("finished") is True:
        return FINISHED
    if listed == FAILED:
        return FAILED
    if listed == FINISHED:
        logger.warning(
            "%s is listed finished but has no finished summary.json: counted as unfinished", run_dir
        )
    return UNFINISHED


def class_ious(summary: Mapping[str, Any]) -> dict[str, float]:
    """``{class name: IoU}`` from a run's summary (``None`` entries -> NaN)."""
    values = summary.get("class_iou") or []
    if isinstance(values, Mapping):
        items = list(values.items())
    else:
        names = summary.get("class_names") or [f"class{k}" for k in range(len(values))]
        items = list(zip(names, values, strict=False))
    return {str(name): (math.nan if v is None else float(v)) for name, v in items}


def as_number(value: Any) -> float:
    """A summary's or record's number as a float (``None`` -> NaN)."""
    return math.nan if value is None else float(value)


# --------------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunsTree:
    """A profile's runs tree as the pipeline wrote it (read only).

    Attributes:
        profile_dir: the folder of ``index.json``.
        index: the index (:func:`load_index`).
        project_root: the project the runs belong to: relative paths of their configs are taken
            relative to it, and paths are shown relative to it.
        name: how the text names the tree (e.g. ``"runs/quick"``), for paths outside the
            project (a demo tree in a temporary folder).
        note: one Markdown sentence saying which tree was read (chapters display it).
    """

    profile_dir: Path
    index: Mapping[str, Any] = field(repr=False)
    project_root: Path
    name: str = ""
    note: str = ""

    @classmethod
    def read(
        cls,
        profile_dir: PathLike,
        *,
        project_root: PathLike | None = None,
        name: str = "",
        note: str = "",
    ) -> RunsTree:
        """The tree of ``profile_dir`` (its ``index.json`` read and checked); ``project_root``
        defaults to the repository holding the tree (or the installed package's).

        Raises:
            FileNotFoundError, ValueError: as :func:`load_index`.
        """
        folder = Path(profile_dir).resolve()
        root = Path(project_root).resolve() if project_root is not None else None
        return cls(
            profile_dir=folder,
            index=load_index(folder),
            project_root=root or find_repo_root(folder),
            name=name or folder.name,
            note=note,
        )

    # Where things are ------------------------------------------------------------------------
    @property
    def profile(self) -> str:
        """The profile the pipeline ran (the index's ``profile``)."""
        return str(self.index[PROFILE_KEY])

    def folder(self, run_dir: str) -> RunFolder:
        """The run folder of an index ``run_dir`` (relative to the profile folder)."""
        return RunFolder(self.profile_dir / run_dir)

    def resolve(self, path: PathLike) -> Path:
        """A path of a run's config (``data.root``, ...): as it is when absolute, else relative
        to the project root. The one place where the analysis resolves a data set's root."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.project_root / candidate

    def display(self, path: PathLike) -> str:
        """``path`` as the book shows it: relative to the project root when inside it, else
        inside the tree (``"<tree name>/pi/seed0"``), else its last two parts."""
        where = Path(path).resolve()
        if where.is_relative_to(self.project_root):
            return str(where.relative_to(self.project_root))
        if where.is_relative_to(self.profile_dir):
            return str(Path(self.name or self.profile) / where.relative_to(self.profile_dir))
        return str(Path(*where.parts[-2:]))

    # Teachers and runs ---------------------------------------------------------------------
    def _teacher_entries(self) -> dict[str, Mapping[str, Any]]:
        several = self.index.get(TEACHERS_KEY)
        if isinstance(several, Mapping) and several:
            return {str(k): v for k, v in several.items() if isinstance(v, Mapping)}
        one = self.index.get(TEACHER_KEY)
        return {DEFAULT_TEACHER: one} if isinstance(one, Mapping) else {}

    def _default_teacher(self, entries: Mapping[str, Mapping[str, Any]]) -> str:
        """The name of the profile's default teacher: the one the index's ``teacher`` entry is
        (same run folder), else the first listed."""
        default = self.index.get(TEACHER_KEY)
        if isinstance(default, Mapping):
            for name, entry in entries.items():
                if entry.get(RUN_DIR_KEY) == default.get(RUN_DIR_KEY):
                    return name
        return next(iter(entries))

    @property
    def teachers(self) -> dict[str, RunFolder]:
        """Every teacher of the profile, ``name -> run folder`` (the index's ``teachers``; an
        index from before several teachers: ``{"teacher": <its folder>}``)."""
        return {
            name: self.folder(entry[RUN_DIR_KEY])
            for name, entry in self._teacher_entries().items()
            if RUN_DIR_KEY in entry
        }

    def teacher_entry(
        self, name: str | None = None, *, experiment: str | None = None
    ) -> Mapping[str, Any]:
        """The index entry (``run_dir``, ``status``, ...) of teacher ``name``, or of the teacher
        ``experiment`` learns from (its ``run_dir`` the experiment's ``teacher_dir``, else the
        teacher its ``teacher`` key names), else of the profile's default teacher.

        Raises:
            ValueError: both ``name`` and ``experiment`` given, an unknown experiment, no such
                teacher (the known ones named).
        """
        if name is not None and experiment is not None:
            raise ValueError(
                f"name a teacher ({name!r}) or an experiment ({experiment!r}), not both"
            )
        entries = self._teacher_entries()
        own_dir = None
        if experiment is not None:
            exp = self.experiment(experiment)
            name = exp.get(TEACHER_KEY) if isinstance(exp.get(TEACHER_KEY), str) else None
            own_dir = exp.get(TEACHER_DIR_KEY)
        if isinstance(own_dir, str):  # the run the experiment's students learned from
            return {**entries.get(name or "", {}), RUN_DIR_KEY: own_dir}
        if not entries:
            raise ValueError(f"index of {self.display(self.profile_dir)}: no teacher run listed")
        key = name if name is not None else self._default_teacher(entries)
        if key not in entries:
            raise ValueError(f"teacher: {key!r} is not a teacher of the index ({list(entries)})")
        return entries[key]

    def teacher(self, experiment: str | None = None) -> RunFolder:
        """The teacher run folder ``experiment`` learns from (its ``teacher_dir``, else the
        teacher its ``teacher`` key names), else the profile's default teacher's.

        Raises:
            ValueError: no teacher in the index, an unknown experiment, or a teacher entry
                without a run folder.
        """
        entry = self.teacher_entry(experiment=experiment)
        if RUN_DIR_KEY not in entry:
            where = self.display(self.profile_dir)
            raise ValueError(f"index of {where}: a teacher entry without {RUN_DIR_KEY}")
        return self.folder(entry[RUN_DIR_KEY])

    @property
    def pretrain(self) -> RunFolder | None:
        """The students' pretraining run folder, or ``None`` when the profile has none."""
        entry = self.index.get(PRETRAIN_KEY)
        return self.folder(entry[RUN_DIR_KEY]) if isinstance(entry, Mapping) else None

    def experiments(self, group: str | None = None) -> list[Mapping[str, Any]]:
        """The index entries of the experiments in ``group`` (``None``: all), in index order."""
        return [
            exp
            for exp in self.index[EXPERIMENTS_KEY]
            if group is None or group in exp.get("groups", [])
        ]

    def experiment(self, name: str) -> Mapping[str, Any]:
        """The index entry of experiment ``name``.

        Raises:
            ValueError: ``name`` is not in the index (the listed ones named).
        """
        for exp in self.index[EXPERIMENTS_KEY]:
            if exp["name"] == name:
                return exp
        known = [e["name"] for e in self.index[EXPERIMENTS_KEY]]
        raise ValueError(f"experiment: {name!r} is not in the index ({known})")

    def runs(self, experiment: str) -> dict[int, RunFolder]:
        """``seed -> run folder`` of every listed run of ``experiment``."""
        return {
            int(run[SEED_KEY]): self.folder(run[RUN_DIR_KEY])
            for run in self.experiment(experiment).get(RUNS_KEY, [])
        }

    def run(self, experiment: str, seed: int = 0) -> RunFolder:
        """The run folder of ``experiment`` and ``seed``.

        Raises:
            ValueError: an experiment not in the index, or no run with that seed.
        """
        runs = self.runs(experiment)
        if seed not in runs:
            raise ValueError(f"seed: experiment {experiment!r} lists no run with seed {seed}")
        return runs[seed]

    def status(self, experiment: str, seed: int) -> str:
        """``finished``, ``failed`` or ``unfinished`` (:func:`run_status`) of one run."""
        entry = next(
            r for r in self.experiment(experiment).get(RUNS_KEY, []) if int(r[SEED_KEY]) == seed
        )
        return run_status(self.folder(entry[RUN_DIR_KEY]).root, entry.get(STATUS_KEY))

    def finished(self, experiment: str) -> list[RunFolder]:
        """The finished run folders of ``experiment``, in index order."""
        return [
            self.folder(run[RUN_DIR_KEY])
            for run in self.experiment(experiment).get(RUNS_KEY, [])
            if run_status(self.profile_dir / run[RUN_DIR_KEY], run.get(STATUS_KEY)) == FINISHED
        ]

    def first_config(self, experiment: str) -> ExperimentConfig | None:
        """The ``config.yaml`` of the experiment's first finished run, or ``None`` when the index
        lacks the experiment or none of its runs has finished."""
        try:
            done = self.finished(experiment)
        except ValueError:
            return None
        return done[0].read_config() if done else None

    # Data and networks -----------------------------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        """The students' class count the index records (``None`` when it records none)."""
        value = self.index.get(NUM_CLASSES_KEY)
        return int(value) if value else None

    def dataset(self, cfg: ExperimentConfig, split: str | None = None) -> Any:
        """``split`` (default: the validation split) of a run config's data set, its
        ``data.root`` resolved by :meth:`resolve` and its ``data.train_limit`` applied to the
        training split (:func:`skdlib.train.build.build_dataset_for`)."""
        import dataclasses

        from skdlib.train.build import build_dataset_for

        data = dataclasses.replace(cfg.data, root=str(self.resolve(cfg.data.root)))
        return build_dataset_for(dataclasses.replace(cfg, data=data), split or cfg.data.val_split)

    def classes_of(self, folder: RunFolder) -> int:
        """The class count of a run's network: its config's, else its summary's, else the
        index's.

        Raises:
            ValueError: none of them gives it.
        """
        cfg = folder.read_config()
        summary = folder.read_summary() or {}
        for value in (
            cfg.model.num_classes,
            len(summary.get("class_names") or []),
            self.num_classes,
        ):
            if value:
                return int(value)
        raise ValueError(f"{self.display(folder.root)}: no class count in its config or summary")

    def network(self, folder: RunFolder, *, device: str = "cpu") -> nn.Module:
        """The network a run trained, with its final weights, in eval mode
        (:func:`skdlib.train.build.load_run_network`)."""
        from skdlib.train.build import load_run_network

        return load_run_network(folder.root, self.classes_of(folder), device=device)

    def critic(self, folder: RunFolder, *, device: str = "cpu") -> tuple[nn.Module, int]:
        """The critic a holistic run saved and the iteration it was saved at
        (:func:`skdlib.train.build.load_run_critic`).

        Raises:
            ValueError: the run saved no critic (the holistic term was off).
        """
        from skdlib.train.build import load_run_critic

        return load_run_critic(folder.root, self.classes_of(folder), device=device)


# --------------------------------------------------------------------------------------------------
# Opening a chapter's tree
# --------------------------------------------------------------------------------------------------
def open_runs(
    profile: str,
    *,
    runs_root: PathLike = "runs",
    smoke: bool = False,
    demo_experiments: Sequence[str] = (),
    repo: PathLike | None = None,
    demo_dir: PathLike | None = None,
) -> RunsTree:
    """The runs tree a chapter reads, with a ``note`` saying which one it is.

    * normal mode: ``<repo>/<runs_root>/<profile>`` when its ``index.json`` exists;
    * smoke mode (``smoke=True``): ``<repo>/<runs_root>/smoke`` when its ``index.json`` exists;
    * otherwise a demo tree of ``demo_experiments`` (one seed, one iteration per run,
      :func:`skdlib.analysis.demo.demo_tree`), built in ``demo_dir`` or a cached folder.

    ``runs_root`` is relative to ``repo`` (default: the repository holding the working
    directory, else the installed package's) or absolute.
    """
    root = Path(repo) if repo is not None else find_repo_root(Path.cwd())
    wanted = "smoke" if smoke else profile
    profile_dir = root / runs_root / wanted
    shown = f"{runs_root}/{wanted}" if not Path(runs_root).is_absolute() else wanted
    if (profile_dir / INDEX_NAME).is_file():
        tree = RunsTree.read(profile_dir, project_root=root, name=shown)
        note = f"Runs read from `{shown}/` (profile `{tree.profile}`)."
        return RunsTree(tree.profile_dir, tree.index, tree.project_root, tree.name, note)
    from skdlib.analysis.demo import demo_tree

    logger.warning("no %s in %s: using a one-iteration demo tree", INDEX_NAME, profile_dir)
    folder = demo_tree(demo_experiments, repo=root, folder=demo_dir)
    note = (
        f"**No runs found under `{shown}/`**: everything below comes from a demo tree (one seed, "
        "one training iteration per run, eight 128x128 training images) built on the spot. Its "
        "numbers only show that the chapter's code runs; they say nothing about the method. Run "
        f"`make experiments PROFILE={profile}` for real results."
    )
    return RunsTree.read(folder, project_root=root, name="demo tree", note=note)


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------
_RUN_COLUMNS = [
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


def collect_runs(tree: RunsTree, group: str | None = None) -> pd.DataFrame:
    """One row per listed run:
    ``experiment, label, seed, run_dir, status, miou, pixel_acc, iterations, wall_time_s`` and
    ``iou/<class>`` columns (NaN where the run is not finished). ``run_dir`` is the absolute
    folder (for reading; :meth:`RunsTree.display` shows it).

    ``group`` keeps the experiments whose ``groups`` contain it (``None``: all).
    """
    rows = []
    for exp in tree.experiments(group):
        for run in exp.get(RUNS_KEY, []):
            folder = tree.folder(run[RUN_DIR_KEY])
            status = run_status(folder.root, run.get(STATUS_KEY))
            row: dict[str, Any] = {
                "experiment": exp["name"],
                "label": exp.get("label", exp["name"]),
                "seed": int(run[SEED_KEY]),
                "run_dir": str(folder.root),
                "status": status,
                "miou": math.nan,
                "pixel_acc": math.nan,
                "iterations": math.nan,
                "wall_time_s": math.nan,
            }
            if status == FINISHED:
                summary = folder.read_summary() or {}
                row.update(
                    miou=as_number(summary.get("miou")),
                    pixel_acc=as_number(summary.get("pixel_acc")),
                    iterations=as_number(summary.get("iterations")),
                    wall_time_s=as_number(summary.get("wall_time_s")),
                )
                row.update({f"iou/{name}": v for name, v in class_ious(summary).items()})
            rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else _RUN_COLUMNS)


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


def experiment_table(tree: RunsTree, group: str | None = None) -> pd.DataFrame:
    """Per experiment of ``group`` (index order), aggregated over its finished seeds.

    Columns: ``label``, ``n_runs`` (listed), ``n_finished``, ``n_failed``, ``n_unfinished``,
    ``miou_mean/std/min/max``, ``pixel_acc_mean/std``, ``iou/<class>`` (means over seeds), and
    ``missing`` (a short text naming the seeds not finished, ``""`` when none). The index of the
    frame is the experiment name. Values are fractions in [0, 1] as the summaries store them.
    """
    runs = collect_runs(tree, group)
    rows = []
    for exp in tree.experiments(group):
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


def teacher_summary(
    tree: RunsTree, name: str | None = None, *, experiment: str | None = None
) -> dict[str, Any] | None:
    """The summary of teacher ``name``, or of the teacher ``experiment`` learns from, else of the
    profile's default teacher (:meth:`RunsTree.teacher_entry`), with ``status`` and ``run_dir``
    added; ``None`` when the index lists no such teacher or experiment."""
    try:
        entry = tree.teacher_entry(name, experiment=experiment)
    except ValueError:
        return None
    if RUN_DIR_KEY not in entry:
        return None
    folder = tree.folder(entry[RUN_DIR_KEY])
    status = run_status(folder.root, entry.get(STATUS_KEY))
    summary = folder.read_summary() if status == FINISHED else None
    return {**(summary or {}), "status": status, "run_dir": str(folder.root)}


def _val_records(folder: RunFolder) -> list[dict[str, Any]]:
    return [
        {
            "iter": int(record["iter"]),
            "miou": as_number(record.get("miou")),
            "pixel_acc": as_number(record.get("pixel_acc")),
        }
        for record in folder.read_metrics()
        if record.get("split") == "val"
    ]


def val_curves(tree: RunsTree, group: str | None = None) -> pd.DataFrame:
    """Validation records of every listed run (finished or not), long format.

    Columns: ``experiment, label, seed, status, iter, miou, pixel_acc``; one row per
    ``"split": "val"`` record of ``metrics.jsonl`` (a run without records contributes nothing).
    """
    rows = []
    for exp in tree.experiments(group):
        for run in exp.get(RUNS_KEY, []):
            folder = tree.folder(run[RUN_DIR_KEY])
            status = run_status(folder.root, run.get(STATUS_KEY))
            head = {
                "experiment": exp["name"],
                "label": exp.get("label", exp["name"]),
                "seed": int(run[SEED_KEY]),
                "status": status,
            }
            rows += [{**head, **record} for record in _val_records(folder)]
    return pd.DataFrame(
        rows, columns=["experiment", "label", "seed", "status", "iter", "miou", "pixel_acc"]
    )


def teacher_curve(
    tree: RunsTree, name: str | None = None, *, experiment: str | None = None
) -> pd.DataFrame:
    """The validation records of teacher ``name``, or of the teacher ``experiment`` learns from,
    else of the profile's default teacher: columns ``iter, miou, pixel_acc`` (empty without such
    a teacher or records)."""
    try:
        entry = tree.teacher_entry(name, experiment=experiment)
    except ValueError:
        entry = {}
    rows = _val_records(tree.folder(entry[RUN_DIR_KEY])) if RUN_DIR_KEY in entry else []
    return pd.DataFrame(rows, columns=["iter", "miou", "pixel_acc"])
