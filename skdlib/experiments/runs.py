"""The runs of a profile: what each run gets, and what the pipeline does with its folder.

Paths: preset paths in the plan and ``runs_root`` are relative to the project root (the folder
``make`` runs in); the relative file paths inside each configuration (data roots, pretrained
weights) are pinned to ``data_base`` (default: the project root) with
:func:`skdlib.train.build.load_config_pinned`, so a run does not depend on the directory it
runs in. Layout under ``<runs_root>/<profile>/``: ``index.json``, ``teacher/``,
``<experiment>/seed<k>/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from skdlib.experiments.plan import PRETRAIN_DIR, TEACHER_DIR, Plan, PlanError, override_list
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

    key: str  #: "teacher" or "<experiment>/seed<k>" (also the folder under the profile's root)
    experiment: str | None  #: None for the teacher
    seed: int | None
    config_path: Path
    overrides: tuple[str, ...]  #: every override passed to the run, in order
    run_dir: Path
    config: ExperimentConfig = field(compare=False, repr=False)

    #: For a run folder kept in the repository: the project root its paths are relative to.
    kept_in: Path | None = None

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
) -> list[RunSpec]:
    """The teacher run, the pretraining run when the profile has one, and every student run of
    ``profile`` (``only``: these experiments), validated. The runs the students need (teacher,
    pretraining) come first and have no ``experiment``.

    Overrides, in order: the profile's, the experiment's, ``sets`` (the command line), then the
    pinned paths, ``model.teacher_checkpoint`` (the teacher run's ``final.pt``) and
    ``train.seed``. Every configuration is loaded here, so any error (a typo, a value out of
    range) surfaces before anything trains; the message names the run.
    """
    prof = plan.profile(profile)
    experiments = plan.select(only, prof)
    override_list("--set", list(sets))
    base = resolve(runs_root, project_root) / profile
    pin_base = resolve(data_base if data_base is not None else ".", project_root)

    def make(
        key: str,
        experiment: str | None,
        seed: int | None,
        preset: str,
        overrides: list[str],
        run_dir: Path | None = None,
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
            run_dir=run_dir or base / key,
            config=cfg,
            kept_in=Path(project_root).resolve() if run_dir is not None else None,
        )

    kept = resolve(prof.teacher_dir, project_root) if prof.teacher_dir else None
    teacher_overrides = [*prof.overrides, *sets]
    teacher = make(TEACHER_DIR, None, None, prof.teacher_config, teacher_overrides, kept)
    # Students follow the runs they need: their weights' files and those runs' config hashes
    # (quoted: a hash of digits and one "e" would read as a number).
    needs = [
        f"model.teacher_checkpoint={json.dumps(str(RunFolder(teacher.run_dir).final))}",
        f"model.teacher_source={json.dumps(teacher.reuse_hash)}",
    ]
    runs = [teacher]
    if prof.pretrain is not None:
        pre = prof.pretrain
        kept = resolve(pre.dir, project_root) if pre.dir else None
        runs.append(make(PRETRAIN_DIR, None, None, pre.config, list(pre.overrides), kept))
        needs += [
            f"model.student_pretrained={json.dumps(str(RunFolder(runs[-1].run_dir).final))}",
            f"model.student_pretrained_source={json.dumps(runs[-1].reuse_hash)}",
            "model.student_pretrained_prefix=backbone.",  # a whole network: take its backbone
        ]
    for exp in experiments:
        for seed in prof.seeds:
            overrides = [
                *prof.overrides,
                *plan.overrides(exp, prof),
                *sets,
                *needs,
                f"train.seed={seed}",
            ]
            runs.append(make(f"{exp.name}/seed{seed}", exp.name, seed, prof.config, overrides))
    return runs


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
