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
from collections.abc import Mapping, Sequence
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
    "hash_roots",
    "mark_portable",
    "portable_hash",
    "resolve",
    "run_action",
]

Action = Literal["reuse", "train", "resume", "retrain"]

#: ``summary.json`` key of a run's identity, its config hash with paths relative to the project
#: root, the runs root and the data base (written by the pipeline when the run finishes).
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
    #: The folders the run's identity writes its paths relative to (:func:`hash_roots`).
    roots: tuple[tuple[str, str], ...] = ()
    #: A run folder kept in the repository (``teacher_dir``, ``pretrain.dir``), not in the tree.
    kept: bool = False

    @property
    def hash(self) -> str:
        """The config hash the run's ``summary.json`` holds (``config_hash``, absolute paths)."""
        return config_hash(self.config)

    @property
    def reuse_key(self) -> str:
        """The ``summary.json`` key holding the hash a finished run must match to be reused."""
        return PORTABLE_HASH

    @property
    def reuse_hash(self) -> str:
        """The run's identity: the config hash with its paths relative to the project root, the
        runs root and the data base (:func:`portable_hash`): the same wherever the checkout or
        the runs tree lies."""
        return portable_hash(self.config, dict(self.roots))


def hash_roots(
    project_root: str | os.PathLike[str],
    runs_root: str | os.PathLike[str],
    data_base: str | os.PathLike[str],
) -> tuple[tuple[str, str], ...]:
    """The folders a run's identity is relative to, as ``(name, absolute path)`` pairs: ``""``
    the project root, ``"runs"`` the runs root, ``"data"`` the data base."""
    return (
        ("", str(Path(project_root).resolve())),
        ("runs", str(Path(runs_root).resolve())),
        ("data", str(Path(data_base).resolve())),
    )


def portable_hash(cfg: ExperimentConfig, roots: Mapping[str, str]) -> str:
    """:func:`skdlib.train.build.portable_config_hash` of ``cfg`` against ``roots`` (as
    :func:`hash_roots` makes them)."""
    named = {name: folder for name, folder in roots.items() if name}
    return portable_config_hash(cfg, roots[""], named=named)


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
    roots = hash_roots(project_root, base.parent, pin_base)

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
            roots=roots,
            kept=run_dir is not None,
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

    * ``reuse``: ``summary.json`` says finished and its identity (:data:`PORTABLE_HASH`) equals
      ``spec.reuse_hash``;
    * ``retrain``: the folder holds a run of another configuration (or ``force``): start over;
    * ``resume``: a partial run of this configuration (from ``checkpoints/last.pt``);
    * ``train``: nothing there yet.
    """
    return folder_action(spec.run_dir, spec.reuse_hash, force=force, roots=dict(spec.roots))


def folder_action(
    run_dir: str | os.PathLike[str],
    wanted_hash: str,
    *,
    force: bool = False,
    roots: Mapping[str, str],
) -> tuple[Action, str]:
    """:func:`run_action` from the folder, the run's identity and the folders it is relative to
    (:func:`hash_roots`): what the process that executes a run decides again once it holds the
    run's lock (another process may have finished or started the run since the pipeline looked).

    A finished run is matched by the identity its summary records (:data:`PORTABLE_HASH`); a run
    finished before the summaries recorded one, by the identity of its ``config.yaml`` read here.
    """
    folder = RunFolder(Path(run_dir))
    if force:
        return "retrain", "--force"
    summary = folder.read_summary() if folder.is_finished() else None
    if summary is not None:
        found = summary.get(PORTABLE_HASH)
        if found is None and folder.config.is_file():  # a summary from before the identity
            try:
                saved = load_config(folder.config)
            except (ValueError, OSError) as error:
                return "retrain", f"unreadable config.yaml ({error})"
            if summary.get("config_hash") == config_hash(saved):
                found = portable_hash(saved, roots)
        if found == wanted_hash:
            return "reuse", f"finished with {PORTABLE_HASH} {found}"
        return "retrain", (
            f"finished run has {PORTABLE_HASH} {found}, the plan now makes {wanted_hash}"
        )
    if not folder.has_partial_run():
        return "train", "new run"
    if folder.config.is_file():
        try:
            found = portable_hash(load_config(folder.config), roots)
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
    """Record in a finished run the identity that matches it wherever the checkout or the runs
    tree lies (:data:`PORTABLE_HASH`); nothing when the run has no summary."""
    folder = RunFolder(Path(run_dir))
    summary = folder.read_summary()
    if summary is not None and summary.get(PORTABLE_HASH) != portable_hash:
        atomic_write_json(folder.summary, {**summary, PORTABLE_HASH: portable_hash})
