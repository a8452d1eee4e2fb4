"""The experiment pipeline: every run of a profile, each one a papermill execution of
``book/training.md``.

``python -m skdlib.experiments run --profile quick`` (what ``make book`` calls first):

1. reads and validates the plan ``configs/experiments.yaml`` (profiles and experiments) and builds
   the configuration of every run with :func:`skdlib.train.config.load_config`, so a typo fails in
   seconds, before the teacher trains;
2. generates the embedded data set when the profile uses it and it is missing;
3. runs the teacher, then every student run (``--jobs`` at a time, each in its own process), each as
   a papermill execution of ``book/training.md`` whose executed copy is kept as
   ``<run_dir>/notebook.ipynb``;
4. after every run, rewrites ``runs/<profile>/index.json`` atomically.

Which runs train (see :func:`run_action`): a finished run whose ``config_hash`` equals the hash of
the configuration the plan makes now is reused; a folder written for another configuration is
trained again from scratch (``FORCE``); an interrupted run is resumed from ``checkpoints/last.pt``
(``RESUME``); ``--force`` trains everything again. A failed run is recorded as failed and the
pipeline goes on; the command exits non-zero at the end, naming the failures.

Layout under ``<runs-root>/<profile>/``: ``index.json``, ``teacher/``, ``<experiment>/seed<k>/``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from skdlib.train.config import ExperimentConfig, config_hash, load_config
from skdlib.train.runfolder import RunFolder, atomic_write_json

__all__ = [
    "DEFAULT_PLAN",
    "REPO_ROOT",
    "TRAINING_NOTEBOOK",
    "Experiment",
    "Plan",
    "PlanError",
    "Profile",
    "RunSpec",
    "build_runs",
    "default_jobs",
    "execute_run",
    "free_cores",
    "load_config_pinned",
    "load_plan",
    "main",
    "run_action",
    "run_pipeline",
]

logger = logging.getLogger(__name__)

#: The repository holding ``configs/`` and ``book/`` (this file is
#: ``<repo>/skdlib/experiments.py``).
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PLAN = REPO_ROOT / "configs" / "experiments.yaml"
TRAINING_NOTEBOOK = REPO_ROOT / "book" / "training.md"
#: The folder of the teacher run inside ``<runs-root>/<profile>/``.
TEACHER_DIR = "teacher"
INDEX_NAME = "index.json"
NOTEBOOK_NAME = "notebook.ipynb"

_PROFILE_KEYS = {
    "description",
    "config",
    "teacher_config",
    "seeds",
    "overrides",
    "settings",
    "groups",
}
_EXPERIMENT_KEYS = {"name", "groups", "label", "description", "settings", "overrides"}
_PLAN_KEYS = {"profiles", "settings", "experiments"}
_EMBEDDED_OPTIONS = ("seed", "height", "width", "num_train", "num_val")

Action = Literal["reuse", "train", "resume", "retrain"]


class PlanError(ValueError):
    """The plan file (``configs/experiments.yaml``) or a request against it is invalid."""


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """One profile: the students' base preset, the teacher's preset, seeds and shared overrides."""

    name: str
    description: str
    config: str
    teacher_config: str
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]
    #: The profile's own values of named settings (replacing the plan's list of the same name).
    settings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The experiment groups this profile runs; empty: every group.
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment:
    """One experiment of the plan: named settings and its own overrides on the profile's base
    preset."""

    name: str
    groups: tuple[str, ...]
    label: str
    description: str
    #: names of setting lists, expanded per profile (:meth:`Plan.overrides`)
    settings: tuple[str, ...]
    overrides: tuple[str, ...]  #: its own overrides, applied after the settings


@dataclass(frozen=True)
class Plan:
    """The validated plan: profiles, named settings and experiments."""

    profiles: Mapping[str, Profile]
    experiments: tuple[Experiment, ...]
    source: Path
    settings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def profile(self, name: str) -> Profile:
        """The profile ``name``; :class:`PlanError` lists the known ones otherwise."""
        if name not in self.profiles:
            raise PlanError(
                f"profile: unknown profile {name!r} in {self.source}; known: "
                f"{', '.join(self.profiles)}"
            )
        return self.profiles[name]

    def overrides(self, experiment: Experiment, profile: str | Profile) -> tuple[str, ...]:
        """``experiment``'s overrides under ``profile``: its settings expanded (the profile's own
        list of a setting when it has one, else the plan's), then its own overrides."""
        prof = self.profile(profile) if isinstance(profile, str) else profile
        expanded: list[str] = []
        for name in experiment.settings:
            expanded.extend(prof.settings.get(name, self.settings[name]))
        return (*expanded, *experiment.overrides)

    def select(
        self, only: Sequence[str] | None, profile: str | Profile | None = None
    ) -> tuple[Experiment, ...]:
        """The experiments named in ``only`` (all when empty/None), in plan order; with ``profile``,
        only those in the profile's groups (an ``only`` name outside them is an error)."""
        prof = self.profile(profile) if isinstance(profile, str) else profile
        ran = tuple(
            e
            for e in self.experiments
            if prof is None or not prof.groups or set(e.groups) & set(prof.groups)
        )
        if not only:
            return ran
        known = [e.name for e in self.experiments]
        unknown = [n for n in only if n not in known]
        if unknown:
            raise PlanError(f"--only: unknown experiment(s) {unknown}; known: {', '.join(known)}")
        outside = [n for n in only if n not in {e.name for e in ran}]
        if outside:
            raise PlanError(
                f"--only: experiment(s) {outside} are not in the groups {list(prof.groups)} "
                f"of profile {prof.name!r}"
            )
        return tuple(e for e in ran if e.name in set(only))


def _check_keys(where: str, data: Any, allowed: set[str], required: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise PlanError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(data))
    if missing:
        raise PlanError(f"{where}: missing key(s) {missing}")


def _str_list(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PlanError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def _override_list(where: str, value: Any) -> tuple[str, ...]:
    items = _str_list(where, value)
    bad = [item for item in items if "=" not in item or not item.partition("=")[0].strip()]
    if bad:
        raise PlanError(f"{where}: overrides must look like key=value, got {bad}")
    return items


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value or not all(c.isalnum() or c in "_-" for c in value):
        raise PlanError(
            f"{where}: expected a folder-safe name (letters, digits, '_', '-'), got {value!r}"
        )
    if value == TEACHER_DIR:
        raise PlanError(
            f"{where}: {TEACHER_DIR!r} is the teacher's run folder and cannot name an experiment"
        )
    return value


def load_plan(path: str | os.PathLike[str] = DEFAULT_PLAN) -> Plan:
    """Read and validate the plan file; unknown keys, bad names and duplicates raise
    :class:`PlanError`."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"plan file not found: {source}")
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    _check_keys(str(source), data, _PLAN_KEYS, {"profiles", "experiments"})
    settings_raw = data.get("settings") or {}
    if not isinstance(settings_raw, Mapping):
        raise PlanError(
            f"settings: expected a mapping of named override lists, got {settings_raw!r}"
        )
    settings = {str(k): _override_list(f"settings.{k}", v) for k, v in settings_raw.items()}

    profiles_raw = data["profiles"]
    if not isinstance(profiles_raw, Mapping) or not profiles_raw:
        raise PlanError(f"profiles: expected a non-empty mapping, got {profiles_raw!r}")
    profiles: dict[str, Profile] = {}
    for pname, raw in profiles_raw.items():
        where = f"profiles.{pname}"
        _check_keys(where, raw, _PROFILE_KEYS, {"config", "teacher_config", "seeds"})
        seeds = raw["seeds"]
        if (
            not isinstance(seeds, list)
            or not seeds
            or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        ):
            raise PlanError(
                f"{where}.seeds: expected a non-empty list of distinct ints >= 0, got {seeds!r}"
            )
        for key in ("config", "teacher_config"):
            if not isinstance(raw[key], str) or not raw[key]:
                raise PlanError(f"{where}.{key}: expected a preset path, got {raw[key]!r}")
        own = raw.get("settings") or {}
        if not isinstance(own, Mapping):
            raise PlanError(
                f"{where}.settings: expected a mapping of named override lists, got {own!r}"
            )
        unknown = sorted(set(map(str, own)) - set(settings))
        if unknown:
            raise PlanError(
                f"{where}.settings: {unknown} name no setting of the plan; known: "
                f"{sorted(settings)}"
            )
        profiles[_name("profiles", pname)] = Profile(
            name=pname,
            description=str(raw.get("description", "")),
            config=raw["config"],
            teacher_config=raw["teacher_config"],
            seeds=tuple(seeds),
            overrides=_override_list(f"{where}.overrides", raw.get("overrides")),
            settings={str(k): _override_list(f"{where}.settings.{k}", v) for k, v in own.items()},
            groups=_str_list(f"{where}.groups", raw.get("groups")),
        )

    experiments_raw = data["experiments"]
    if not isinstance(experiments_raw, list) or not experiments_raw:
        raise PlanError(f"experiments: expected a non-empty list, got {experiments_raw!r}")
    experiments: list[Experiment] = []
    for i, raw in enumerate(experiments_raw):
        where = f"experiments[{i}]"
        _check_keys(where, raw, _EXPERIMENT_KEYS, {"name", "groups", "label"})
        name = _name(f"{where}.name", raw["name"])
        if any(e.name == name for e in experiments):
            raise PlanError(f"{where}.name: duplicate experiment name {name!r}")
        groups = _str_list(f"{where}.groups", raw["groups"])
        if not groups:
            raise PlanError(f"{where}.groups: expected at least one group, got {raw['groups']!r}")
        if not isinstance(raw["label"], str) or not raw["label"]:
            raise PlanError(f"{where}.label: expected a non-empty string, got {raw['label']!r}")
        names = _str_list(f"{where}.settings", raw.get("settings"))
        for setting in names:
            if setting not in settings:
                raise PlanError(
                    f"{where}.settings: unknown setting {setting!r}; known: {sorted(settings)}"
                )
        experiments.append(
            Experiment(
                name=name,
                groups=groups,
                label=raw["label"],
                description=str(raw.get("description", "")),
                settings=names,
                overrides=_override_list(f"{where}.overrides", raw.get("overrides")),
            )
        )
    for prof in profiles.values():
        empty = [g for g in prof.groups if not any(g in e.groups for e in experiments)]
        if empty:
            raise PlanError(f"profiles.{prof.name}.groups: no experiment is in group(s) {empty}")
    return Plan(profiles=profiles, experiments=tuple(experiments), source=source, settings=settings)


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One run of the plan: what the notebook gets (absolute paths) and the config it will make."""

    key: str  #: "teacher" or "<experiment>/seed<k>" (also the folder under the profile's root)
    experiment: str | None  #: None for the teacher
    seed: int | None
    config_path: Path
    overrides: tuple[str, ...]  #: every override passed to the notebook, in order
    run_dir: Path
    config: ExperimentConfig = field(compare=False, repr=False)

    @property
    def hash(self) -> str:
        """The config hash the finished run's ``summary.json`` must hold to be reused."""
        return config_hash(self.config)


def _absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` if absolute, else relative to the repository root (never the caller's cwd)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p)


def _absolute_paths(
    overrides: Sequence[str], cfg: ExperimentConfig, base: str | os.PathLike[str]
) -> list[str]:
    """``overrides`` plus overrides that pin the config's relative file paths (the data roots, the
    unlabeled stream's root, the student's pretrained weights) to ``base``."""
    extra = []
    for key, value in (
        ("data.root", cfg.data.root),
        ("data.unlabeled.root", cfg.data.unlabeled.root),
        ("model.student_pretrained", cfg.model.student_pretrained),
    ):
        if value is not None and not Path(value).expanduser().is_absolute():
            extra.append(f"{key}={json.dumps(str(Path(base) / Path(value).expanduser()))}")
    return [*overrides, *extra]


def load_config_pinned(
    preset: str | os.PathLike[str],
    overrides: Sequence[str],
    base: str | os.PathLike[str] = REPO_ROOT,
) -> tuple[list[str], ExperimentConfig]:
    """:func:`load_config` of ``preset`` + ``overrides`` with the config's relative file paths (data
    roots, the unlabeled stream's root, pretrained weights) pinned to ``base`` (default: the
    repository), so the run does not depend on its working directory. Returns the overrides with
    the pins appended, and the config they make."""
    pinned = _absolute_paths(overrides, load_config(preset, overrides), base)
    return pinned, load_config(preset, pinned)


def build_runs(
    plan: Plan,
    profile: str,
    *,
    runs_root: str | os.PathLike[str] = "runs",
    sets: Sequence[str] = (),
    only: Sequence[str] | None = None,
) -> list[RunSpec]:
    """The teacher run and every student run of ``profile`` (``only``: these experiments),
    validated.

    Overrides, in order: the profile's, the experiment's, ``sets`` (the command line), then the
    absolute data root, ``model.teacher_checkpoint`` (the teacher run's ``final.pt``) and
    ``train.seed``. Every configuration is loaded with :func:`load_config` here, so any error
    (a typo, a value out of range) surfaces before anything trains; the message names the run.
    """
    prof = plan.profile(profile)
    experiments = plan.select(only, prof)
    _override_list("--set", list(sets))
    base = _absolute(runs_root) / profile

    def make(
        key: str, experiment: str | None, seed: int | None, preset: str, overrides: list[str]
    ) -> RunSpec:
        path = _absolute(preset)
        try:
            overrides, cfg = load_config_pinned(path, overrides)
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
            run_dir=base / key,
            config=cfg,
        )

    teacher = make(TEACHER_DIR, None, None, prof.teacher_config, [*prof.overrides, *sets])
    checkpoint = teacher.run_dir / "checkpoints" / "final.pt"
    runs = [teacher]
    for exp in experiments:
        for seed in prof.seeds:
            runs.append(
                make(
                    f"{exp.name}/seed{seed}",
                    exp.name,
                    seed,
                    prof.config,
                    [
                        *prof.overrides,
                        *plan.overrides(exp, prof),
                        *sets,
                        f"model.teacher_checkpoint={json.dumps(str(checkpoint))}",
                        f"train.seed={seed}",
                    ],
                )
            )
    return runs


def run_action(spec: RunSpec, *, force: bool = False) -> tuple[Action, str]:
    """What the pipeline does with ``spec``'s folder, and why (one sentence for the log).

    * ``reuse``: ``summary.json`` says finished and its ``config_hash`` equals ``spec.hash``;
    * ``retrain``: the folder holds a run of another configuration (or ``force``): start over;
    * ``resume``: a partial run of this configuration (``RESUME``: from ``checkpoints/last.pt``);
    * ``train``: nothing there yet.
    """
    folder = RunFolder(spec.run_dir)
    if force:
        return "retrain", "--force"
    if folder.is_finished():
        found = json.loads(folder.summary.read_text()).get("config_hash")
        if found == spec.hash:
            return "reuse", f"finished with config hash {found}"
        return "retrain", f"finished run has config hash {found}, the plan now makes {spec.hash}"
    if not folder.has_partial_run():
        return "train", "new run"
    if folder.config.is_file():
        try:
            found = config_hash(load_config(folder.config))
        except (ValueError, OSError) as error:
            return "retrain", f"unreadable config.yaml ({error})"
        if found != spec.hash:
            return "retrain", f"partial run has config hash {found}, the plan now makes {spec.hash}"
    if folder.last.is_file():
        return "resume", "interrupted run: resuming from checkpoints/last.pt"
    return "resume", "interrupted run without a checkpoint: starting it again"


# --------------------------------------------------------------------------------------------------
# Executing one run (the training notebook under papermill)
# --------------------------------------------------------------------------------------------------
def _notebook_ipynb(source: Path, folder: Path) -> Path:
    """Convert the MyST notebook to an ``.ipynb`` in ``folder`` (jupytext) and return its path."""
    import jupytext

    if not source.is_file():
        raise FileNotFoundError(f"training notebook not found: {source}")
    target = folder / f"{source.stem}.ipynb"
    jupytext.write(jupytext.read(source), target)
    return target


def execute_run(notebook: str | os.PathLike[str], spec: Mapping[str, Any]) -> dict[str, Any]:
    """Execute ``notebook`` (an ``.ipynb``) with papermill for one run; never raises.

    ``spec``: ``run_dir``, ``config``, ``overrides`` (list), ``resume``, ``force``, ``threads``,
    ``progress``. The executed copy goes to ``<run_dir>/notebook.ipynb`` (also when the run fails).
    Returns ``{"status": "finished" | "failed", "error": str | None, "elapsed_s": float}``.
    A picklable top-level function: the pipeline calls it in worker processes.
    """
    import papermill

    start = time.perf_counter()
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    parameters = {
        "MODE": "train",
        "CONFIG": str(spec["config"]),
        "RUN_DIR": str(run_dir),
        "OVERRIDES": json.dumps(list(spec["overrides"])),
        "RESUME": bool(spec["resume"]),
        "FORCE": bool(spec["force"]),
        "PROGRESS": bool(spec.get("progress", False)),
        "THREADS": int(spec.get("threads", 1)),
    }
    error: str | None = None
    with tempfile.TemporaryDirectory(prefix=".notebook-", dir=run_dir) as tmp:
        executed = Path(tmp) / NOTEBOOK_NAME
        try:
            papermill.execute_notebook(
                str(notebook),
                str(executed),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(REPO_ROOT),
                log_output=False,
                progress_bar=False,
            )
        except Exception as exc:  # the run failed: recorded, the pipeline goes on
            error = _short_error(exc)
        if executed.is_file():
            shutil.move(str(executed), run_dir / NOTEBOOK_NAME)
    if error is None and not RunFolder(run_dir).is_finished():
        error = "the notebook finished but summary.json does not say finished"
    return {
        "status": "failed" if error else "finished",
        "error": error,
        "elapsed_s": time.perf_counter() - start,
    }


def _short_error(exc: BaseException) -> str:
    """The exception's last meaningful line (papermill's errors carry the cell's traceback)."""
    name = getattr(exc, "ename", None)
    value = getattr(exc, "evalue", None)
    if name:
        return f"{name}: {value}"
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _cpu_times() -> tuple[int, int] | None:
    """``(busy, total)`` CPU time in ticks since boot from ``/proc/stat``, or None where it is
    absent."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def free_cores(sample_s: float = 1.0) -> int:
    """CPU cores not busy with other processes (>= 1): the CPU count minus the busy cores measured
    over the next ``sample_s`` seconds (``/proc/stat``), or minus the 1-minute load average where
    ``/proc/stat`` is absent.

    Measured on the shared 2-core machine: a 2-thread run sharing the cores with other busy
    processes took 2-6 s per teacher iteration, a 1-thread run 0.6 s (idle: 0.36 s with 2 threads),
    so a run never asks for more threads than there are free cores. The 1-minute load average is
    a poor measure just after the pipeline's own work (generating the data sets kept it near 1
    while the machine was idle: the teacher then trained with 1 thread, 0.55 s per iteration), so
    the busy cores are sampled now.
    """
    cpus = os.cpu_count() or 1
    before = _cpu_times()
    if before is not None and sample_s > 0:
        time.sleep(sample_s)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            busy = cpus * (after[0] - before[0]) / (after[1] - before[1])
            return max(1, min(cpus, cpus - round(busy)))
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cpus
    return max(1, min(cpus, cpus - round(load)))


def default_jobs() -> int:
    """Concurrent student runs: one per CPU core (each with one thread), measured faster than one
    process using every core on the 2-core machine (see ``book/training.md``)."""
    return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------------
def _run_entry(spec: RunSpec, state: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "run_dir": spec.key,
        "config_hash": spec.hash,
        "status": state["status"],
    }
    if state.get("error"):
        entry["error"] = state["error"]
    if state.get("elapsed_s") is not None:
        entry["elapsed_s"] = round(float(state["elapsed_s"]), 2)
    return entry


def _write_index(
    path: Path,
    plan: Plan,
    profile: Profile,
    runs: Sequence[RunSpec],
    states: Mapping[str, Mapping[str, Any]],
    num_classes: int | None,
) -> None:
    """Rewrite ``index.json`` atomically; experiments absent from this invocation (``--only``) are
    kept."""
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            logger.warning("%s is unreadable; writing a new one", path)
    teacher = runs[0]
    cfg = teacher.config
    index: dict[str, Any] = {
        "profile": profile.name,
        "data": {"name": cfg.data.name, "root": _display(Path(cfg.data.root))},
        "num_classes": num_classes if num_classes is not None else previous.get("num_classes"),
        "teacher": {
            "config": _display(teacher.config_path),
            "overrides": list(profile.overrides),
            **_run_entry(teacher, states[teacher.key]),
        },
        "experiments": [],
    }
    old = {e.get("name"): e for e in previous.get("experiments", []) if isinstance(e, dict)}
    by_experiment: dict[str, list[RunSpec]] = {}
    for spec in runs[1:]:
        by_experiment.setdefault(spec.experiment or "", []).append(spec)
    for exp in plan.experiments:
        if exp.name in by_experiment:
            specs = by_experiment[exp.name]
            index["experiments"].append(
                {
                    "name": exp.name,
                    "groups": list(exp.groups),
                    "label": exp.label,
                    "description": exp.description,
                    "config": _display(specs[0].config_path),
                    "overrides": list(plan.overrides(exp, profile)),
                    "runs": [{"seed": s.seed, **_run_entry(s, states[s.key])} for s in specs],
                }
            )
        elif exp.name in old:
            index["experiments"].append(old[exp.name])
    atomic_write_json(path, index)


def _display(path: Path) -> str:
    """A path relative to the repository root when it lies inside it."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------
def _embedded_sets(cfg: ExperimentConfig) -> list[tuple[Path, dict[str, Any]]]:
    """The embedded data sets ``cfg`` reads: ``(root, generator options)`` for its labelled data and
    for its unlabeled stream, when they are the embedded data set."""
    found = []
    if cfg.data.name == "embedded":
        found.append((Path(cfg.data.root), dict(cfg.data.options)))
    unlabeled = cfg.data.unlabeled
    if unlabeled.enabled and unlabeled.name == "embedded" and unlabeled.root is not None:
        found.append((Path(unlabeled.root), dict(unlabeled.options)))
    return [
        (root, {k: v for k, v in options.items() if k in _EMBEDDED_OPTIONS})
        for root, options in found
    ]


def _ensure_data(runs: Sequence[RunSpec]) -> int | None:
    """Generate every embedded data set the runs read (labelled sets and unlabeled pools) that is
    missing, one after the other before any run starts; the teacher's class count (else None)."""
    from skdlib.data.generate import ensure_embedded, read_manifest

    done: set[str] = set()
    for spec in runs:
        for root, options in _embedded_sets(spec.config):
            key = json.dumps([str(root), options], sort_keys=True, default=str)
            if key in done:
                continue
            done.add(key)
            if options or read_manifest(root) is None:
                logger.info(
                    "embedded data set: ensuring %s %s", root, options or "(default options)"
                )
                ensure_embedded(root, **options)
    teacher = runs[0].config
    if teacher.data.name != "embedded":
        return None
    classes = json.loads((Path(teacher.data.root) / "classes.json").read_text())
    return len(classes["names"])


def _fmt(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def run_pipeline(
    profile: str,
    *,
    runs_root: str | os.PathLike[str] = "runs",
    force: bool = False,
    only: Sequence[str] | None = None,
    jobs: int | None = None,
    threads: int | None = None,
    sets: Sequence[str] = (),
    plan_path: str | os.PathLike[str] = DEFAULT_PLAN,
    notebook: str | os.PathLike[str] = TRAINING_NOTEBOOK,
    progress: bool = False,
    teacher_threads: int | None = None,
) -> dict[str, Any]:
    """Run every run of ``profile`` (see the module docstring) and return
    ``{"index", "failed", "actions"}``.

    ``jobs``: student runs at a time (default :func:`default_jobs`); ``threads``: torch threads of
    each student run (default: the CPU count divided by ``jobs``); the teacher runs alone, with
    ``teacher_threads`` (default: :func:`free_cores` when it starts).
    """
    plan = load_plan(plan_path)
    prof = plan.profile(profile)
    runs = build_runs(plan, profile, runs_root=runs_root, sets=sets, only=only)
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise PlanError(f"--jobs: must be >= 1, got {jobs}")
    cpus = os.cpu_count() or 1
    threads = max(1, cpus // jobs) if threads is None else threads
    if threads < 1:
        raise PlanError(f"--threads: must be >= 1, got {threads}")
    if teacher_threads is not None and teacher_threads < 1:
        raise PlanError(f"--teacher-threads: must be >= 1, got {teacher_threads}")
    logger.info(
        "profile %s: %d runs (teacher + %d student runs), plan %s, %d job(s) x %d thread(s)",
        profile,
        len(runs),
        len(runs) - 1,
        plan.source,
        jobs,
        threads,
    )
    t0 = time.perf_counter()
    num_classes = _ensure_data(runs)
    index_path = _absolute(runs_root) / profile / INDEX_NAME
    actions = {spec.key: run_action(spec, force=force) for spec in runs}
    states: dict[str, dict[str, Any]] = {
        spec.key: {"status": "finished" if actions[spec.key][0] == "reuse" else "pending"}
        for spec in runs
    }
    _write_index(index_path, plan, prof, runs, states, num_classes)
    todo = [spec for spec in runs if actions[spec.key][0] != "reuse"]
    for spec in runs:
        if actions[spec.key][0] == "reuse":
            logger.info("reuse %s (%s)", spec.key, actions[spec.key][1])
    durations: list[float] = []
    total = len(todo)
    done = started = 0

    with tempfile.TemporaryDirectory(prefix="skd-experiments-") as tmp:
        ipynb = _notebook_ipynb(_absolute(notebook), Path(tmp)) if todo else None

        def payload(spec: RunSpec, run_threads: int) -> dict[str, Any]:
            nonlocal started
            started += 1
            action, why = actions[spec.key]
            logger.info("[%d/%d] start %s: %s (%s)", started, total, spec.key, action, why)
            return {
                "run_dir": str(spec.run_dir),
                "config": str(spec.config_path),
                "overrides": list(spec.overrides),
                "resume": action == "resume",
                "force": action == "retrain",
                "threads": run_threads,
                "progress": progress,
            }

        def finish(spec: RunSpec, result: Mapping[str, Any]) -> None:
            nonlocal done
            done += 1
            states[spec.key] = dict(result)
            _write_index(index_path, plan, prof, runs, states, num_classes)
            if spec.key != TEACHER_DIR:
                durations.append(float(result["elapsed_s"]))
            remaining = total - done
            # ETA: the mean student run so far, `jobs` at a time (unknown before the first student
            # ends).
            eta = "?"
            if durations or not remaining:
                mean = sum(durations) / len(durations) if durations else 0.0
                eta = _fmt(mean * -(-remaining // jobs))
            extra = f": {result['error']}" if result.get("error") else ""
            summary = RunFolder(spec.run_dir).summary
            score = ""
            if result["status"] == "finished" and summary.is_file():
                score = (
                    f", val mIoU {json.loads(summary.read_text()).get('miou', float('nan')):.4f}"
                )
            logger.info(
                "[%d/%d] %s %s in %s%s%s; elapsed %s, ETA %s",
                done,
                total,
                result["status"],
                spec.key,
                _fmt(result["elapsed_s"]),
                score,
                extra,
                _fmt(time.perf_counter() - t0),
                eta,
            )

        if todo and todo[0].key == TEACHER_DIR:
            teacher = todo.pop(0)
            finish(teacher, execute_run(ipynb, payload(teacher, teacher_threads or free_cores())))
            if states[TEACHER_DIR]["status"] == "failed":
                logger.error(
                    "the teacher failed: the student runs need its final.pt and are not started"
                )
                for spec in todo:
                    finish(
                        spec,
                        {"status": "failed", "error": "the teacher run failed", "elapsed_s": 0.0},
                    )
                todo = []
        if todo and jobs == 1:
            for spec in todo:
                finish(spec, execute_run(ipynb, payload(spec, threads)))
        elif todo:
            context = multiprocessing.get_context("spawn")
            queue = list(todo)
            running: dict[concurrent.futures.Future[dict[str, Any]], RunSpec] = {}
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=jobs, mp_context=context
            ) as pool:
                while queue or running:
                    # Submit only as many as run at once, so that "start" lines tell the truth.
                    while queue and len(running) < jobs:
                        spec = queue.pop(0)
                        running[pool.submit(execute_run, str(ipynb), payload(spec, threads))] = spec
                    ended, _ = concurrent.futures.wait(
                        running, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in ended:
                        spec = running.pop(future)
                        try:
                            result = future.result()
                        except Exception as exc:  # a worker process died
                            result = {
                                "status": "failed",
                                "error": _short_error(exc),
                                "elapsed_s": 0.0,
                            }
                        finish(spec, result)

    failed = [key for key, state in states.items() if state["status"] == "failed"]
    logger.info(
        "profile %s: %d run(s) trained, %d reused, %d failed, in %s; index %s",
        profile,
        total,
        len(runs) - total,
        len(failed),
        _fmt(time.perf_counter() - t0),
        index_path,
    )
    return {
        "index": index_path,
        "failed": failed,
        "actions": {k: a for k, (a, _) in actions.items()},
    }


def _status(
    profile: str, *, runs_root: str, sets: Sequence[str], only: Sequence[str] | None, plan_path: str
) -> list[tuple[str, str, str]]:
    """Rows ``(run, action the next ``run`` would take, why)``."""
    plan = load_plan(plan_path)
    return [
        (spec.key, *run_action(spec))
        for spec in build_runs(plan, profile, runs_root=runs_root, sets=sets, only=only)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m skdlib.experiments {run,status} --profile NAME ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m skdlib.experiments", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "train every missing run of a profile"),
        ("status", "what `run` would do"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--profile", default="quick", help="profile of the plan (quick, smoke, paper)"
        )
        p.add_argument(
            "--runs-root", default="runs", help="runs go to <runs-root>/<profile>/ (default: runs)"
        )
        p.add_argument(
            "--only", nargs="+", metavar="NAME", help="only these experiments (the teacher always)"
        )
        p.add_argument(
            "--set",
            dest="sets",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override for every run, repeatable (e.g. --set data.root=/data/cityscapes)",
        )
        p.add_argument(
            "--plan",
            default=str(DEFAULT_PLAN),
            help="the plan file (default: configs/experiments.yaml)",
        )
        if name == "run":
            p.add_argument(
                "--force", action="store_true", help="train every run again from scratch"
            )
            p.add_argument(
                "--jobs",
                type=int,
                default=None,
                help=f"student runs at a time, each its own process (default: {default_jobs()})",
            )
            p.add_argument(
                "--threads",
                type=int,
                default=None,
                help="torch threads per student run (default: CPU count / jobs)",
            )
            p.add_argument(
                "--teacher-threads",
                type=int,
                default=None,
                help=(
                    "torch threads of the teacher run (default: the cores not busy when it starts)"
                ),
            )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        if args.command == "status":
            for key, action, why in _status(
                args.profile,
                runs_root=args.runs_root,
                sets=args.sets,
                only=args.only,
                plan_path=args.plan,
            ):
                sys.stdout.write(f"{key:32s} {action:8s} {why}\n")
            return 0
        result = run_pipeline(
            args.profile,
            runs_root=args.runs_root,
            force=args.force,
            only=args.only,
            jobs=args.jobs,
            threads=args.threads,
            sets=args.sets,
            plan_path=args.plan,
            teacher_threads=args.teacher_threads,
        )
    except (PlanError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    if result["failed"]:
        logger.error("failed runs (see their notebook.ipynb): %s", ", ".join(result["failed"]))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
