"""Helpers of the chapter "Distill your own network": the profile's teacher, the overrides that
make it the teacher of a run, and the validation curves of a few run folders.

The profile's teacher is found as the pipeline names it: the teacher run of the profile's index
(``<runs_root>/<profile>/index.json``), else the run folder the plan keeps for it (the ``dir``
of the profile's default teacher, ``profiles.<name>.teachers``); in smoke mode the smoke
profile's teacher, from its runs tree or a demo tree built on the spot
(:func:`skdlib.analysis.runs.open_runs`). No path of a teacher is written anywhere else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from skdlib.analysis.runs import RunsTree, open_runs, teacher_summary
from skdlib.experiments.index import INDEX_NAME
from skdlib.train.runfolder import RunFolder

__all__ = ["ProfileTeacher", "profile_teacher", "run_curves", "teacher_overrides"]

PathLike = str | os.PathLike[str]
_SMOKE = "smoke"
_DEMO_EXPERIMENTS = ("baseline",)  # the smallest demo tree that has a teacher


@dataclass(frozen=True)
class ProfileTeacher:
    """A profile's teacher run and the students' preset of that profile."""

    run_dir: Path  #: the finished teacher run folder
    preset: Path  #: the profile's student preset (``profiles.<name>.config``)
    note: str  #: one Markdown sentence saying where the teacher comes from


def _plan(repo: Path):
    from skdlib.experiments import load_plan

    return load_plan(repo / "configs" / "experiments.yaml")


def profile_teacher(
    repo: PathLike, runs_root: PathLike, profile: str, *, smoke: bool
) -> ProfileTeacher:
    """The teacher a chapter distils from: ``profile``'s (``smoke``: the smoke profile's).

    Raises:
        FileNotFoundError: no finished teacher run in the profile's index nor in the folder the
            plan keeps for it (the message says how to train one).
    """
    repo = Path(repo)
    wanted = _SMOKE if smoke else profile
    plan = _plan(repo)
    prof = plan.profile(wanted)
    preset = repo / prof.config
    if smoke:
        tree = open_runs(
            wanted, runs_root=runs_root, smoke=True, demo_experiments=_DEMO_EXPERIMENTS, repo=repo
        )
        entry = teacher_summary(tree) or {}
        if entry.get("status") == "finished":
            return ProfileTeacher(Path(entry["run_dir"]), preset, tree.note)
    profile_dir = Path(repo) / runs_root / wanted
    if (profile_dir / INDEX_NAME).is_file():
        entry = teacher_summary(RunsTree.read(profile_dir, project_root=repo)) or {}
        if entry.get("status") == "finished":
            note = f"The teacher is the profile `{wanted}`'s, read from its runs tree."
            return ProfileTeacher(Path(entry["run_dir"]), preset, note)
    kept = prof.teacher_of(None).dir
    if kept and RunFolder(repo / kept).is_finished():
        note = f"The teacher is the profile `{wanted}`'s, kept in the repository."
        return ProfileTeacher(repo / kept, preset, note)
    raise FileNotFoundError(
        f"profile {wanted!r}: no finished teacher run in {profile_dir} nor kept for it; train it "
        f"with `make teacher PROFILE={wanted}` (or `make experiments PROFILE={wanted}`)"
    )


def teacher_overrides(run_dir: PathLike) -> list[str]:
    """Overrides making the network a finished run trained (its ``model.student``, options and
    taps) the teacher of another run, with the run's ``final.pt``.

    Raises:
        FileNotFoundError: the folder holds no finished run.
    """
    folder = RunFolder(Path(run_dir))
    if not folder.is_finished():
        raise FileNotFoundError(f"run_dir: {folder.root} holds no finished run")
    model = folder.read_config().model

    def text(value: object) -> str:  # JSON is YAML: the override reads it back as it was
        return json.dumps(_plain(value), sort_keys=True)

    return [
        f"model.teacher={json.dumps(model.student)}",
        f"model.teacher_options={text(model.student_options)}",
        f"model.teacher_taps={text(model.student_taps)}",
        f"model.teacher_checkpoint={json.dumps(str(folder.final))}",
    ]


def _plain(value: object) -> object:
    """Frozen config values (FrozenDict, tuples) as JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def run_curves(runs: Mapping[str, PathLike]) -> pd.DataFrame:
    """Validation records of the run folders ``{label: run_dir}``, long format: columns
    ``label, iter, miou, pixel_acc`` (a run without records contributes nothing)."""
    rows = [
        {
            "label": label,
            "iter": int(record["iter"]),
            "miou": float(record["miou"]),
            "pixel_acc": float(record.get("pixel_acc", float("nan"))),
        }
        for label, run_dir in runs.items()
        for record in RunFolder(Path(run_dir)).read_metrics()
        if record.get("split") == "val"
    ]
    return pd.DataFrame(rows, columns=["label", "iter", "miou", "pixel_acc"])
