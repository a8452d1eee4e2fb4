"""``<runs_root>/<profile>/index.json``: the profile's runs and their status, for the readers.

Layout: ``profile``, ``data`` (name, root), ``num_classes``, ``teachers`` (by name: config,
overrides, run_dir, config_hash, status), ``teacher`` (the default teacher's entry, as in
``teachers``), ``pretrain``, ``experiments`` (name, groups, label, description, teacher (its
name), teacher_dir, config, overrides, runs: seed, run_dir, config_hash, status, error,
elapsed_s). Every ``run_dir`` and ``teacher_dir`` is relative to the profile folder. Paths
inside the project are written relative to it.

Several pipelines may write one index (runs trees shared between processes, see
:mod:`skdlib.experiments.pipeline`): each write reads the index and merges into it under a lock
(``.index.json.lock`` beside it), then replaces it atomically, so no writer loses another's
entries. A run's status is, in order: ``finished`` when its folder holds a finished summary of
its config hash (the truth, whoever trained it); the writer's own state of the run (what this
process executed, or ``pending`` for a run it is to execute); the previous index's entry of the
same config hash. Experiments and teachers the writer does not run (``--only``) keep their
previous entries.
So concurrent writers converge: the last index lists every run another process finished.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skdlib.experiments.plan import PRETRAIN_DIR, Experiment, Plan, Profile
from skdlib.experiments.runs import RunSpec
from skdlib.filelock import FileLock
from skdlib.train.runfolder import RunFolder, atomic_write_json

__all__ = [
    "EXPERIMENTS_KEY",
    "FAILED",
    "FINISHED",
    "INDEX_LOCK_NAME",
    "INDEX_NAME",
    "NUM_CLASSES_KEY",
    "PENDING",
    "PRETRAIN_KEY",
    "PROFILE_KEY",
    "RUNS_KEY",
    "RUN_DIR_KEY",
    "SEED_KEY",
    "STATUS_KEY",
    "TEACHERS_KEY",
    "TEACHER_DIR_KEY",
    "TEACHER_KEY",
    "write_index",
]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
#: The lock file of the index's read-merge-write, beside it.
INDEX_LOCK_NAME = ".index.json.lock"

# The keys of index.json that its reader (:class:`skdlib.analysis.runs.RunsTree`) relies on.
PROFILE_KEY = "profile"
EXPERIMENTS_KEY = "experiments"
#: At the top: the profile's default teacher run (an entry with ``run_dir``, ``status``, ...,
#: as in ``teachers``); in an experiment's entry: the name of the teacher it learns from.
TEACHER_KEY = "teacher"
#: Every teacher of the profile the pipeline ran: ``{name: entry}``.
TEACHERS_KEY = "teachers"
#: An experiment's own teacher: its run folder relative to the profile folder (an index from
#: before several teachers lacks it: the experiment's ``teacher`` names one of ``teachers``,
#: else the profile's teacher).
TEACHER_DIR_KEY = "teacher_dir"
#: The students' class count (``None`` before any data set was generated).
NUM_CLASSES_KEY = "num_classes"
PRETRAIN_KEY = "pretrain"
RUNS_KEY = "runs"
SEED_KEY = "seed"
#: A run's folder, relative to the profile folder (a kept run lies outside it).
RUN_DIR_KEY = "run_dir"
STATUS_KEY = "status"
# A run's status in the index.
FINISHED = "finished"
FAILED = "failed"
PENDING = "pending"


def _entry_dir(spec: RunSpec, profile_dir: Path) -> str:
    """The run's folder relative to the profile folder (a kept teacher lies outside it)."""
    return os.path.relpath(spec.run_dir, profile_dir)


def _run_entry(
    spec: RunSpec,
    state: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None,
    profile_dir: Path,
) -> dict[str, Any]:
    """The run's entry: its folder's truth, else this writer's state, else the previous entry
    (of the same config hash)."""
    old = previous if previous and previous.get("config_hash") == spec.hash else {}
    summary = RunFolder(spec.run_dir).read_summary()
    done = summary is not None and summary.get("finished") and summary.get(spec.reuse_key)
    mine = dict(state or {})
    if done == spec.reuse_hash:
        mine = {STATUS_KEY: FINISHED, "elapsed_s": mine.get("elapsed_s", old.get("elapsed_s"))}
    elif not mine:
        mine = dict(old) or {STATUS_KEY: PENDING}
    entry: dict[str, Any] = {
        RUN_DIR_KEY: _entry_dir(spec, profile_dir),
        "config_hash": spec.hash,
        STATUS_KEY: mine[STATUS_KEY],
    }
    if mine.get("error") and mine[STATUS_KEY] != FINISHED:
        entry["error"] = mine["error"]
    if mine.get("elapsed_s") is not None:
        entry["elapsed_s"] = round(float(mine["elapsed_s"]), 2)
    return entry


def _previous_runs(previous: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The previous index's run entries by ``run_dir`` (the teacher's and the pretraining
    run's too)."""
    runs: dict[str, Mapping[str, Any]] = {}
    teachers = previous.get(TEACHERS_KEY)
    entries = list(teachers.values()) if isinstance(teachers, dict) else []
    for entry in [previous.get(TEACHER_KEY), previous.get(PRETRAIN_KEY), *entries]:
        if isinstance(entry, dict) and isinstance(entry.get(RUN_DIR_KEY), str):
            runs[entry[RUN_DIR_KEY]] = entry
    for exp in previous.get(EXPERIMENTS_KEY, []):
        for run in exp.get(RUNS_KEY, []) if isinstance(exp, dict) else []:
            if isinstance(run, dict) and isinstance(run.get(RUN_DIR_KEY), str):
                runs[run[RUN_DIR_KEY]] = run
    return runs


def _display(path: Path, project_root: Path) -> str:
    """``path`` relative to the project root when it lies inside it."""
    try:
        return str(path.relative_to(project_root))
    except ValueError:
        return str(path)


def _read_previous(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("%s is unreadable; writing a new one", path)
        return {}
    return previous if isinstance(previous, dict) else {}


def write_index(
    path: Path,
    plan: Plan,
    profile: Profile,
    runs: Sequence[RunSpec],
    states: Mapping[str, Mapping[str, Any]],
    *,
    num_classes: int | None,
    project_root: Path,
) -> None:
    """Merge ``runs`` (the teacher first) and this process's ``states`` of them into
    ``index.json``, under the index's lock, and replace it atomically; experiments absent from
    this invocation (``--only``) are kept from the previous index."""
    with FileLock(path.parent / INDEX_LOCK_NAME):
        previous = _read_previous(path)
        index = _build_index(
            plan, profile, runs, states, previous, num_classes, project_root, path.parent
        )
        atomic_write_json(path, index)


def _teacher_entries(
    profile: Profile,
    runs: Sequence[RunSpec],
    states: Mapping[str, Mapping[str, Any]],
    previous: Mapping[str, Any],
    project_root: Path,
    profile_dir: Path,
) -> dict[str, Any]:
    """Every teacher of the profile this writer runs, else its previous entry, by name."""
    old_runs = _previous_runs(previous)
    old = previous.get(TEACHERS_KEY) if isinstance(previous.get(TEACHERS_KEY), dict) else {}
    specs = {spec.key: spec for spec in runs if spec.is_teacher}
    entries: dict[str, Any] = {}
    for name, teacher in profile.teachers.items():
        spec = specs.get(name)
        if spec is None:
            if isinstance(old.get(name), dict):
                entries[name] = old[name]
            continue
        old_entry = old_runs.get(_entry_dir(spec, profile_dir))
        entries[name] = {
            "config": _display(spec.config_path, project_root),
            "overrides": [*profile.overrides, *teacher.overrides],
            **_run_entry(spec, states.get(spec.key), old_entry, profile_dir),
        }
    return entries


def _build_index(
    plan: Plan,
    profile: Profile,
    runs: Sequence[RunSpec],
    states: Mapping[str, Mapping[str, Any]],
    previous: Mapping[str, Any],
    num_classes: int | None,
    project_root: Path,
    profile_dir: Path,
) -> dict[str, Any]:
    old_runs = _previous_runs(previous)
    # the students' data set (a pretraining run's is its own source task's), else a teacher's
    cfg = next((s for s in runs if s.experiment is not None or s.is_teacher), runs[0]).config
    teachers = _teacher_entries(profile, runs, states, previous, project_root, profile_dir)
    index: dict[str, Any] = {
        PROFILE_KEY: profile.name,
        "data": {"name": cfg.data.name, "root": _display(Path(cfg.data.root), project_root)},
        NUM_CLASSES_KEY: (
            num_classes if num_classes is not None else previous.get(NUM_CLASSES_KEY)
        ),
    }
    if profile.default_teacher in teachers:
        index[TEACHER_KEY] = teachers[profile.default_teacher]
    index[TEACHERS_KEY] = teachers
    index[EXPERIMENTS_KEY] = []
    for spec in runs:
        if spec.key == PRETRAIN_DIR:  # the run the students' backbones start from
            old_entry = old_runs.get(_entry_dir(spec, profile_dir))
            index[PRETRAIN_KEY] = {
                "config": _display(spec.config_path, project_root),
                **_run_entry(spec, states.get(spec.key), old_entry, profile_dir),
            }
    old = {e.get("name"): e for e in previous.get(EXPERIMENTS_KEY, []) if isinstance(e, dict)}
    by_experiment: dict[str, list[RunSpec]] = {}
    for spec in runs:
        if spec.experiment is not None:
            by_experiment.setdefault(spec.experiment, []).append(spec)
    teacher_runs = {spec.key: spec for spec in runs if spec.is_teacher}
    for exp in plan.experiments:
        if exp.name in by_experiment:
            specs = by_experiment[exp.name]
            entry = _experiment_entry(plan, profile, exp, specs, project_root)
            entry[TEACHER_DIR_KEY] = _entry_dir(teacher_runs[specs[0].teacher], profile_dir)
            entry[RUNS_KEY] = [
                {
                    SEED_KEY: s.seed,
                    **_run_entry(s, states.get(s.key), old_runs.get(s.key), profile_dir),
                }
                for s in specs
            ]
            index[EXPERIMENTS_KEY].append(entry)
        elif exp.name in old:
            index[EXPERIMENTS_KEY].append(old[exp.name])
    return index


def _experiment_entry(
    plan: Plan, profile: Profile, exp: Experiment, specs: Sequence[RunSpec], project_root: Path
) -> dict[str, Any]:
    """What an experiment is and the teacher it learns from (its ``teacher_dir`` and ``runs``
    follow)."""
    return {
        "name": exp.name,
        "groups": list(exp.groups),
        "label": exp.label,
        "description": exp.description,
        TEACHER_KEY: specs[0].teacher,
        TEACHER_DIR_KEY: None,
        "config": _display(specs[0].config_path, project_root),
        "overrides": list(plan.overrides(exp, profile)),
        RUNS_KEY: [],
    }
