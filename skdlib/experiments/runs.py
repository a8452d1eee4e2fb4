"""The runs of a profile: what each run gets, and what the pipeline does with its folder.

Paths: preset paths in the plan and ``runs_root`` are relative to the project root (the folder
``make`` runs in); the relative file paths inside each configuration (data roots, pretrained
weights) are pinned to ``data_base`` (default: the project root) with
:func:`skdlib.train.build.load_config_pinned`, so a run does not depend on the directory it
runs in. Layout under ``<runs_root>/<profile>/``: ``index.json``, ``<teacher name>/`` for each
teacher (``teacher/`` for the default one of every profile in the plan), ``pretrain/``,
``<experiment>/seed<k>/``, ``teacher_outputs/`` (the teacher-output stores).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from skdlib.experiments.plan import PRETRAIN_DIR, Plan, PlanError, Pretraining, _override_list
from skdlib.train.build import load_config_pinned, portable_config_hash
from skdlib.train.config import ExperimentConfig, config_hash, load_config
from skdlib.train.runfolder import RunFolder, atomic_write_json

__all__ = [
    "PORTABLE_HASH",
    "Action",
    "RunSpec",
    "build_runs",
    "folder_action",
    "mark_portable",
    "resolve",
    "run_action",
]

Action = Literal["reuse", "train", "resume", "retrain"]

#: ``summary.json`` key of a kept run's portable config hash (written by the pipeline).
PORTABLE_HASH = "portable_config_hash"


@dataclass(frozen=True)
class RunSpec:
    """One run of the plan: what its executor gets (absolute paths) and the config it makes."""

    key: str  #: a teacher's name, "pretrain" or "<experiment>/seed<k>" (its folder's name)
    experiment: str | None  #: None for a teacher and the pretraining run
    seed: int | None
    config_path: Path
    overrides: tuple[str, ...]  #: every override passed to the run, in order
    run_dir: Path
    config: ExperimentConfig = field(compare=False, repr=False)

    #: For a run folder kept in the repository: the project root its paths are relative to.
    kept_in: Path | None = None
    #: The profile's teacher this run is (a teacher run) or learns from (a student run); None
    #: for the pretraining run.
    teacher: str | None = None

    @property
    def is_teacher(self) -> bool:
        """Whether this is a teacher run (trained before the students that name it)."""
        return self.experiment is None and self.teacher is not None

    @property
    def hash(self) -> str:
        """The config hash the finished run's ``summary.json`` holds (``config_hash``)."""
        return config_hash(self.config)

    @property
    def reuse_key(self) -> str:
        """The ``summary.json`` key holding the hash a finished run must match to be reused."""
        return "config_hash" if self.kept_in is None else PORTABLE_HASH

    @property
    def reuse_hash(self) -> str:
        """The hash that key must hold: the config hash, or for a kept run the hash with its
        paths relative to the project root (the same in every checkout)."""
        if self.kept_in is None:
            return self.hash
        return portable_config_hash(self.config, self.kept_in)


def resolve(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """``path`` if absolute, else relative to ``root`` (made absolute)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path(root).resolve() / p)


def build_runs(
    plan: Plan,
    profile: str,
    *,
    runs_root: str | os.PathLike[str] = "runs",
    project_root: str | os.PathLike[str] = ".",
    data_base: str | os.PathLike[str] | None = None,
    sets: Sequence[str] = (),
    only: Sequence[str] | None = None,
    all_teachers: bool = False,
) -> list[RunSpec]:
    """The teacher runs the selected experiments learn from (``all_teachers``: every teacher of
    the profile), the pretraining run when the profile has one, and every student run of
    ``profile`` (``only``: these experiments), validated. The runs the students need (teachers,
    pretraining) come first and have no ``experiment``.

    Overrides, in order: the profile's, the experiment's (a teacher's own), ``sets`` (the command
    line), then the pinned paths, ``model.teacher_checkpoint`` (the ``final.pt`` of the
    experiment's teacher run) and ``train.seed``. Every configuration is loaded here, so any
    error (a typo, a value out of range) surfaces before anything trains; the message names the
    run.
    """
    prof = plan.profile(profile)
    experiments = plan.select(only, prof)
    _override_list("--set", list(sets))
    base = resolve(runs_root, project_root) / profile
    pin_base = resolve(data_base if data_base is not None else ".", project_root)

    def make(
        key: str,
        preset: str,
        overrides: list[str],
        *,
        kept: str | None = None,
        experiment: str | None = None,
        seed: int | None = None,
        teacher: str | None = None,
    ) -> RunSpec:
        path = resolve(preset, project_root)
        try:
            overrides, cfg = load_config_pinned(path, overrides, pin_base)
        except (ValueError, FileNotFoundError) as error:
            raise PlanError(
                f"profile {profile!r}, run {key!r} ({path.name} + {overrides}): {error}"
            ) from error
        return RunSpec(
            key=key,
            experiment=experiment,
            seed=seed,
            config_path=path,
            overrides=tuple(overrides),
            run_dir=resolve(kept, project_root) if kept else base / key,
            config=cfg,
            kept_in=Path(project_root).resolve() if kept else None,
            teacher=teacher,
        )

    used = {prof.teacher_of(e.teacher).name for e in experiments}
    runs = []
    # Students follow the runs they need: their weights' files and those runs' config hashes
    # (quoted: a hash of digits and one "e" would read as a number).
    needs: dict[str, list[str]] = {}
    pretrainings: dict[Pretraining, RunSpec] = {}
    for name, teacher in prof.teachers.items():
        if not all_teachers and name not in used:
            continue
        start: list[str] = []
        if teacher.pretrain is not None:
            if teacher.pretrain not in pretrainings:
                pre = teacher.pretrain
                key = f"{PRETRAIN_DIR}_{name}"
                pretrainings[pre] = make(key, pre.config, list(pre.overrides), kept=pre.dir)
                runs.append(pretrainings[pre])
            start = _start_from(pretrainings[teacher.pretrain])
        overrides = [*prof.overrides, *teacher.overrides, *sets, *start]
        spec = make(name, teacher.config, overrides, kept=teacher.dir, teacher=name)
        runs.append(spec)
        needs[name] = [
            f"model.teacher_checkpoint={json.dumps(str(RunFolder(spec.run_dir).final))}",
            f"model.teacher_source={json.dumps(spec.reuse_hash)}",
        ]
    pretrained: list[str] = []
    if prof.pretrain is not None:
        pre = prof.pretrain
        runs.append(make(PRETRAIN_DIR, pre.config, list(pre.overrides), kept=pre.dir))
        pretrained = _start_from(runs[-1])
    for exp in experiments:
        teacher = prof.teacher_of(exp.teacher).name
        for seed in prof.seeds_of(exp):
            overrides = [
                *prof.overrides,
                *plan.overrides(exp, prof),
                *sets,
                *needs[teacher],
                *pretrained,
                f"train.seed={seed}",
            ]
            key = f"{exp.name}/seed{seed}"
            runs.append(
                make(key, prof.config, overrides, experiment=exp.name, seed=seed, teacher=teacher)
            )
    return runs


def _start_from(pretraining: RunSpec) -> list[str]:
    """Overrides that start a run's network from ``pretraining``'s backbone (its ``final.pt``,
    its identity recorded, the whole network's backbone keys)."""
    return [
        f"model.student_pretrained={json.dumps(str(RunFolder(pretraining.run_dir).final))}",
        f"model.student_pretrained_source={json.dumps(pretraining.reuse_hash)}",
        "model.student_pretrained_prefix=backbone.",  # a whole network: take its backbone
    ]


def run_action(spec: RunSpec, *, force: bool = False) -> tuple[Action, str]:
    """What the pipeline does with ``spec``'s folder, and why (one sentence for the log).

    * ``reuse``: ``summary.json`` says finished and its ``config_hash`` equals ``spec.hash``;
    * ``retrain``: the folder holds a run of another configuration (or ``force``): start over;
    * ``resume``: a partial run of this configuration (from ``checkpoints/last.pt``);
    * ``train``: nothing there yet.
    """
    return folder_action(spec.run_dir, spec.reuse_hash, force=force, kept_in=spec.kept_in)


def folder_action(
    run_dir: str | os.PathLike[str],
    wanted_hash: str,
    *,
    force: bool = False,
    kept_in: str | os.PathLike[str] | None = None,
) -> tuple[Action, str]:
    """:func:`run_action` from the folder and the config hash alone: what the process that
    executes a run decides again once it holds the run's lock (another process may have
    finished or started the run since the pipeline looked).

    ``kept_in``: the folder is a run kept in the repository, matched by its portable hash
    (:data:`PORTABLE_HASH`, paths relative to this project root) instead of the config hash.
    """
    folder = RunFolder(Path(run_dir))
    if force:
        return "retrain", "--force"
    key = "config_hash" if kept_in is None else PORTABLE_HASH
    summary = folder.read_summary() if folder.is_finished() else None
    if summary is not None:
        found = summary.get(key)
        if found == wanted_hash:
            return "reuse", f"finished with {key} {found}"
        return "retrain", f"finished run has {key} {found}, the plan now makes {wanted_hash}"
    if not folder.has_partial_run():
        return "train", "new run"
    if folder.config.is_file():
        try:
            saved = load_config(folder.config)
            found = config_hash(saved) if kept_in is None else portable_config_hash(saved, kept_in)
        except (ValueError, OSError) as error:
            return "retrain", f"unreadable config.yaml ({error})"
        if found != wanted_hash:
            return (
                "retrain",
                f"partial run has config hash {found}, the plan now makes {wanted_hash}",
            )
    if folder.last.is_file():
        return "resume", "interrupted run: resuming from checkpoints/last.pt"
    return "resume", "interrupted run without a checkpoint: starting it again"


def mark_portable(run_dir: str | os.PathLike[str], portable_hash: str) -> None:
    """Record in a finished run kept in the repository the hash that matches it in any checkout
    (:data:`PORTABLE_HASH`); nothing when the run has no summary."""
    folder = RunFolder(Path(run_dir))
    summary = folder.read_summary()
    if summary is not None and summary.get(PORTABLE_HASH) != portable_hash:
        atomic_write_json(folder.summary, {**summary, PORTABLE_HASH: portable_hash})
