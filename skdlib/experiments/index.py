"""``<runs_root>/<profile>/index.json``: the profile's runs and their status, for the readers.

Layout: ``profile``, ``data`` (name, root), ``num_classes``, ``teacher`` (config, overrides,
run_dir, config_hash, status), ``experiments`` (name, groups, label, description, config,
overrides, runs: seed, run_dir, config_hash, status, error, elapsed_s). Every ``run_dir`` is
relative to the profile folder. Paths inside the project are written relative to it.

Several pipelines may write one index (runs trees shared between processes, see
:mod:`skdlib.experiments.pipeline`): each write reads the index and merges into it under a lock
(``.index.json.lock`` beside it), then replaces it atomically, so no writer loses another's
entries. A run's status is, in order: ``finished`` when its folder holds a finished summary of
its config hash (the truth, whoever trained it); the writer's own state of the run (what this
process executed, or ``pending`` for a run it is to execute); the previous index's entry of the
same config hash. Experiments the writer does not run (``--only``) keep their previous entries.
So concurrent writers converge: the last index lists every run another process finished.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skdlib.experiments.plan import PRETRAIN_DIR, Plan, Profile
from skdlib.experiments.runs import RunSpec
from skdlib.filelock import FileLock
from skdlib.train.runfolder import RunFolder, atomic_write_json

__all__ = [
    "EXPERIMENTS_KEY",
    "FAILED",
    "FINISHED",
    "INDEX_LOCK_NAME",
    "INDEX_NAME",
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
#: The profile's teacher run (an entry with ``run_dir``, ``status``, ...).
TEACHER_KEY = "teacher"
#: Several teachers: ``{name: entry}`` (a profile with one teacher writes ``teacher`` only).
TEACHERS_KEY = "teachers"
#: An experiment's own teacher: its run folder relative to the profile folder (else the
#: experiment's ``teacher`` names one of ``teachers``; else the profile's teacher).
TEACHER_DIR_KEY = "teacher_dir"
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
    for key in (TEACHER_KEY, PRETRAIN_KEY):
        entry = previous.get(key)
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
    teacher = runs[0]
    cfg = teacher.config
    index: dict[str, Any] = {
        PROFILE_KEY: profile.name,
        "data": {"name": cfg.data.name, "root": _display(Path(cfg.data.root), project_root)},
        "num_classes": num_classes if num_classes is not None else previous.get("num_classes"),
        TEACHER_KEY: {
            "config": _display(teacher.config_path, project_root),
            "overrides": list(profile.overrides),
            **_run_entry(
                teacher,
                states.get(teacher.key),
                old_runs.get(_entry_dir(teacher, profile_dir)),
                profile_dir,
            ),
        },
        EXPERIMENTS_KEY: [],
    }
    for spec in runs[1:]:
        if spec.key == PRETRAIN_DIR:  # the run the students' backbones start from
            old_entry = old_runs.get(_entry_dir(spec, profile_dir))
            index[PRETRAIN_KEY] = {
                "config": _display(spec.config_path, project_root),
                **_run_entry(spec, states.get(spec.key), old_entry, profile_dir),
            }
    old = {e.get("name"): e for e in previous.get(EXPERIMENTS_KEY, []) if isinstance(e, dict)}
    by_experiment: dict[str, list[RunSpec]] = {}
    for spec in runs[1:]:
        if spec.experiment is not None:
            by_experiment.setdefault(spec.experiment, []).append(spec)
    for exp in plan.experiments:
        if exp.name in by_experiment:
            specs = by_experiment[exp.name]
            entries = [
                {
                    SEED_KEY: s.seed,
                    **_run_entry(s, states.get(s.key), old_runs.get(s.key), profile_dir),
                }
                for s in specs
            ]
            index[EXPERIMENTS_KEY].append(
                {
                    "name": exp.name,
                    "groups": list(exp.groups),
                    "label": exp.label,
                    "description": exp.description,
                    "config": _display(specs[0].config_path, project_root),
                    "overrides": list(plan.overrides(exp, profile)),
                    RUNS_KEY: entries,
                }
            )
        elif exp.name in old:
            index[EXPERIMENTS_KEY].append(old[exp.name])
    return index
