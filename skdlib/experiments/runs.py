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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from skdlib.experiments.plan import (
    PRETRAIN_DIR,
    Plan,
    PlanError,
    Pretraining,
    Profile,
    override_list,
)
from skdlib.train.build import load_config_pinned, portable_config_hash
from skdlib.train.config import ExperimentConfig, config_hash, load_config
from skdlib.train.runfolder import RunFolder, atomic_write_json
from skdlib.train.terms import needs_critic

__all__ = [
    "PORTABLE_HASH",
    "Action",
    "RunSpec",
    "build_runs",
    "expected_cost",
    "folder_action",
    "hash_roots",
    "longest_first",
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

    key: str  #: a teacher's name, "pretrain" or "<experiment>/seed<k>" (its folder's name)
    experiment: str | None  #: None for a teacher and the pretraining run
    seed: int | None
    config_path: Path
    overrides: tuple[str, ...]  #: every override passed to the run, in order
    run_dir: Path
    config: ExperimentConfig = field(compare=False, repr=False)
    #: The folders the run's identity writes its paths relative to (:func:`hash_roots`).
    roots: tuple[tuple[str, str], ...] = ()
    #: A run folder kept in the repository (a teacher's ``dir``, ``pretrain.dir``), not in the
    #: tree.
    kept: bool = False
    #: The profile's teacher this run is (a teacher run) or learns from (a student run); None
    #: for the pretraining runs.
    teacher: str | None = None

    @property
    def is_teacher(self) -> bool:
        """Whether this is a teacher run (trained before the students that name it)."""
        return self.experiment is None and self.teacher is not None

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
    override_list("--set", list(sets))
    base = resolve(runs_root, project_root) / profile
    pin_base = resolve(data_base if data_base is not None else ".", project_root)
    roots = hash_roots(project_root, base.parent, pin_base)

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
            roots=roots,
            kept=bool(kept),
            teacher=teacher,
        )

    used = None if all_teachers else {prof.teacher_of(e.teacher).name for e in experiments}
    runs, needs = _teacher_runs(prof, make, list(sets), used)
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


def _teacher_runs(
    prof: Profile, make: Callable[..., RunSpec], sets: list[str], used: set[str] | None
) -> tuple[list[RunSpec], dict[str, list[str]]]:
    """The teacher runs of ``prof`` that ``used`` names (None: all), each after its pretraining
    run (one per distinct pretraining), and what their students need of each, by name: its
    weights' file and its identity (quoted: a hash of digits and one "e" would read as a
    number)."""
    runs: list[RunSpec] = []
    needs: dict[str, list[str]] = {}
    pretrainings: dict[Pretraining, RunSpec] = {}
    # A shared pretraining is named after the profile's first teacher that uses it, whichever
    # teachers a selection needs: one folder for it in every pipeline.
    first_user: dict[Pretraining, str] = {}
    for name, teacher in prof.teachers.items():
        if teacher.pretrain is not None:
            first_user.setdefault(teacher.pretrain, name)
    for name, teacher in prof.teachers.items():
        if used is not None and name not in used:
            continue
        start: list[str] = []
        if teacher.pretrain is not None:
            if teacher.pretrain not in pretrainings:
                pre = teacher.pretrain
                key = f"{PRETRAIN_DIR}_{first_user[pre]}"
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
    return runs, needs


def _start_from(pretraining: RunSpec) -> list[str]:
    """Overrides that start a run's network from ``pretraining``'s backbone (its ``final.pt``,
    its identity recorded, the whole network's backbone keys)."""
    return [
        f"model.student_pretrained={json.dumps(str(RunFolder(pretraining.run_dir).final))}",
        f"model.student_pretrained_source={json.dumps(pretraining.reuse_hash)}",
        "model.student_pretrained_prefix=backbone.",  # a whole network: take its backbone
    ]


#: How much a critic step adds to a student step, as a multiple of it (quick profile, measured:
#: +PI+PA+HO 60 s against +PI+PA 34 s for the same 1000 iterations).
CRITIC_STEP_COST = 0.8


def expected_cost(spec: RunSpec) -> float:
    """A run's relative cost: ``max_iters`` x images per step (labelled and unlabeled) x
    ``1 + CRITIC_STEP_COST`` when a term trains the critic. Only its order matters: the
    pipeline starts the costliest student runs first (:func:`longest_first`)."""
    cfg = spec.config
    images = cfg.data.batch_size + (cfg.data.unlabeled.batch_size or 0)
    critic = 1.0 + CRITIC_STEP_COST if needs_critic(cfg.distill) else 1.0
    return float(cfg.train.max_iters * images * critic)


def longest_first(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """``specs`` by decreasing :func:`expected_cost`, the plan's order among equals: with
    ``jobs`` runs at a time, the long runs do not end the pipeline alone on one job while the
    others sit idle (longest processing time first)."""
    return sorted(specs, key=lambda spec: -expected_cost(spec))


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
