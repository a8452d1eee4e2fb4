"""The experiment plan (``configs/experiments.yaml``): profiles, named settings, experiments.

A profile names the students' base preset, its teachers (``teachers``: a name for each, the
first the default; each experiment may name the one it learns from), the seeds, overrides shared
by every run, and how its runs use the machine: ``jobs`` student runs at a time, each with
``threads`` torch threads, the teachers alone with ``teacher_threads``; ``nproc_per_run``
processes per run (torch's elastic launcher, one per GPU); and what a SLURM job of a run asks for
(``slurm``: :class:`SlurmOptions`). Thread counts come from the profile (never from the
machine's load or core count), so the same commit on the same machine gives the same numbers.
:func:`load_plan` validates the file; every error names the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_PLAN",
    "PRETRAIN_DIR",
    "STORE_DIR",
    "Experiment",
    "Plan",
    "PlanError",
    "Pretraining",
    "Profile",
    "SlurmOptions",
    "Teacher",
    "load_plan",
    "override_list",
]

#: The plan ``make book`` runs, relative to the project's root (the current directory).
DEFAULT_PLAN = Path("configs") / "experiments.yaml"
#: The folder of the students' pretraining run (profiles with ``pretrain``), inside
#: ``<runs-root>/<profile>/``; each teacher's is its name.
PRETRAIN_DIR = "pretrain"
#: The folder of the profile's teacher-output stores (:mod:`skdlib.experiments.stores`).
STORE_DIR = "teacher_outputs"
#: Keys that replaced the one-teacher profile keys, for the error message of an older plan.
_OLD_TEACHER_KEYS = {"teacher_config", "teacher_dir"}

_PROFILE_KEYS = {
    "description",
    "config",
    "teachers",
    "seeds",
    "default_seeds",
    "overrides",
    "settings",
    "groups",
    "jobs",
    "threads",
    "teacher_threads",
    "nproc_per_run",
    "pretrain",
    "slurm",
}
_EXPERIMENT_KEYS = {
    "name",
    "groups",
    "label",
    "description",
    "teacher",
    "seeds",
    "settings",
    "overrides",
}
_PLAN_KEYS = {"notebook", "profiles", "settings", "experiments"}


class PlanError(ValueError):
    """The plan file (``configs/experiments.yaml``) or a request against it is invalid."""


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlurmOptions:
    """What each run's SLURM job asks for (``--executor slurm``): the profile's ``slurm`` keys,
    each replaceable on the command line (``--partition``, ``--gpus-per-run``, ...)."""

    #: Partition (``sbatch --partition``); None: the cluster's default partition.
    partition: str | None = None
    #: GPUs of one run (``--gpus-per-node``); set it to the run's processes on a GPU cluster.
    gpus_per_run: int = 0
    #: CPUs of one run (``--cpus-per-task``); None: threads x processes of the run.
    cpus_per_run: int | None = None
    #: Memory of one run in GB (``--mem``); None: the cluster's default.
    mem_gb: float | None = None
    #: Time limit of one run in minutes (``--time``); a run cut by it resumes when the pipeline
    #: runs again.
    time_min: int = 60


_SLURM_KEYS = {f.name for f in fields(SlurmOptions)}


@dataclass(frozen=True)
class Pretraining:
    """A run the students start from (their backbone), trained before them like the teacher:
    the profile's ``pretrain`` keys. Its own preset and overrides (its data is its own source
    task, so the profile's overrides and the command line's ``--set`` do not apply to it)."""

    #: The preset of the pretraining run.
    config: str
    #: A folder kept in the repository (relative to the project root), reused while its
    #: configuration matches; None: ``<runs_root>/<profile>/pretrain``.
    dir: str | None = None
    #: Overrides of the pretraining run.
    overrides: tuple[str, ...] = ()


_PRETRAIN_KEYS = {"config", "dir", "overrides"}


@dataclass(frozen=True)
class Teacher:
    """One teacher of a profile (``teachers.<name>``): a run trained before the students that
    learn from it, into ``<runs_root>/<profile>/<name>`` (or its kept ``dir``). The profile's
    overrides and the command line's ``--set`` apply to it, then its own ``overrides``."""

    #: The teacher's name: its run folder under the profile's, what an experiment names.
    name: str
    #: The preset of the teacher run.
    config: str
    #: A folder kept in the repository (relative to the project root), reused while its
    #: configuration matches; None: ``<runs_root>/<profile>/<name>``.
    dir: str | None = None
    #: Overrides of this teacher, after the profile's.
    overrides: tuple[str, ...] = ()
    #: The run this teacher's backbone starts from, trained before it (as the students'
    #: ``pretrain``); teachers with the same pretraining share its run.
    pretrain: Pretraining | None = None


_TEACHER_KEYS = {"config", "dir", "overrides", "pretrain"}


@dataclass(frozen=True)
class Profile:
    """One profile: the students' base preset, the teachers, seeds and shared overrides."""

    name: str
    description: str
    config: str
    #: The teachers trained for this profile, by name, the default first.
    teachers: Mapping[str, Teacher]
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]
    #: The profile's own values of named settings (replacing the plan's list of the same name).
    settings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The experiment groups this profile runs; empty: every group.
    groups: tuple[str, ...] = ()
    #: Student runs at a time, each in its own process.
    jobs: int = 1
    #: Torch threads of each student run.
    threads: int = 1
    #: Torch threads of a teacher run (each trains alone, before the students).
    teacher_threads: int = 1
    #: Processes of each run (torch's elastic launcher; one per GPU); 1: one process.
    nproc_per_run: int = 1
    #: What each run's SLURM job asks for (``--executor slurm``).
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    #: The run the students' backbones start from; None: the students' preset decides.
    pretrain: Pretraining | None = None
    #: Other names of teachers (``teachers.<alias>: <name>``): an experiment naming the alias
    #: learns from that teacher's run (one run, one folder).
    teacher_aliases: Mapping[str, str] = field(default_factory=dict)
    #: How many of ``seeds`` an experiment runs unless it says (its ``seeds``); None: all.
    default_seeds: int | None = None

    def seeds_of(self, experiment: Experiment) -> tuple[int, ...]:
        """The seeds ``experiment`` runs under this profile: the first ``experiment.seeds`` of
        the profile's (else its ``default_seeds``, else all), never more than it lists."""
        count = experiment.seeds if experiment.seeds is not None else self.default_seeds
        return self.seeds if count is None else self.seeds[:count]

    @property
    def default_teacher(self) -> str:
        """The name of the teacher of experiments that name none: the first of ``teachers``."""
        return next(iter(self.teachers))

    def teacher_of(self, name: str | None) -> Teacher:
        """The teacher ``name`` (an alias resolved; None: the default); :class:`PlanError`
        lists the valid names otherwise."""
        name = self.default_teacher if name is None else self.teacher_aliases.get(name, name)
        if name not in self.teachers:
            known = [*self.teachers, *self.teacher_aliases]
            raise PlanError(
                f"teacher: unknown teacher {name!r} for profile {self.name!r}; its teachers: "
                f"{', '.join(known)}"
            )
        return self.teachers[name]


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
    #: the name of the profile's teacher it learns from; None: the profile's default teacher
    teacher: str | None = None
    #: how many of the profile's seeds it runs (the first ones); None: the profile's default
    seeds: int | None = None


@dataclass(frozen=True)
class Plan:
    """The validated plan: profiles, named settings and experiments."""

    profiles: Mapping[str, Profile]
    experiments: tuple[Experiment, ...]
    source: Path
    settings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The training notebook each run executes (``--executor local``, and ``slurm`` when set),
    #: relative to the project root; ``--notebook`` replaces it. None: the plan names none.
    notebook: str | None = None

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


def override_list(where: str, value: Any) -> tuple[str, ...]:
    """``value`` as a tuple of ``key=value`` strings (a list in the plan, or ``--set``).

    Raises:
        PlanError: not a list of strings, or an item without ``=`` or without a key (named by
            ``where``).
    """
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
    if value in (PRETRAIN_DIR, STORE_DIR):
        raise PlanError(f"{where}: {value!r} is a folder of the profile's and cannot name a run")
    return value


def _positive_int(where: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PlanError(f"{where}: expected an int >= 1, got {value!r}")
    return value


def _load_slurm(where: str, raw: Any) -> SlurmOptions:
    if raw is None:
        return SlurmOptions()
    _check_keys(where, raw, _SLURM_KEYS, set())
    partition = raw.get("partition")
    if partition is not None and (not isinstance(partition, str) or not partition):
        raise PlanError(f"{where}.partition: expected a partition name, got {partition!r}")
    gpus = raw.get("gpus_per_run", 0)
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
        raise PlanError(f"{where}.gpus_per_run: expected an int >= 0, got {gpus!r}")
    cpus = raw.get("cpus_per_run")
    mem = raw.get("mem_gb")
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem <= 0):
        raise PlanError(f"{where}.mem_gb: expected a number > 0, got {mem!r}")
    return SlurmOptions(
        partition=partition,
        gpus_per_run=gpus,
        cpus_per_run=None if cpus is None else _positive_int(f"{where}.cpus_per_run", cpus),
        mem_gb=None if mem is None else float(mem),
        time_min=_positive_int(f"{where}.time_min", raw.get("time_min", SlurmOptions.time_min)),
    )


def _load_pretrain(where: str, raw: Any) -> Pretraining | None:
    if raw is None:
        return None
    _check_keys(where, raw, _PRETRAIN_KEYS, {"config"})
    for key in ("config", "dir"):
        value = raw.get(key)
        if (key == "config" or value is not None) and (not isinstance(value, str) or not value):
            raise PlanError(f"{where}.{key}: expected a path, got {value!r}")
    overrides = override_list(f"{where}.overrides", raw.get("overrides"))
    return Pretraining(config=raw["config"], dir=raw.get("dir"), overrides=overrides)


def _load_teachers(where: str, raw: Any) -> tuple[dict[str, Teacher], dict[str, str]]:
    """``teachers``: ``{name: {config, dir, overrides}}`` (the first the default), or
    ``{alias: name}`` for another name of a teacher; the teachers and the aliases."""
    if not isinstance(raw, Mapping) or not raw:
        raise PlanError(
            f"{where}: expected a mapping of teacher names to {{config, dir, overrides}}, the "
            f"first the default, got {raw!r}"
        )
    teachers: dict[str, Teacher] = {}
    aliases: dict[str, str] = {}
    for key, entry in raw.items():
        name = _name(f"{where}", str(key))
        if isinstance(entry, str):
            aliases[name] = entry
            continue
        _check_keys(f"{where}.{name}", entry, _TEACHER_KEYS, {"config"})
        for field_name in ("config", "dir"):
            value = entry.get(field_name)
            if (field_name == "config" or value is not None) and (
                not isinstance(value, str) or not value
            ):
                raise PlanError(f"{where}.{name}.{field_name}: expected a path, got {value!r}")
        overrides = override_list(f"{where}.{name}.overrides", entry.get("overrides"))
        pretrain = _load_pretrain(f"{where}.{name}.pretrain", entry.get("pretrain"))
        teachers[name] = Teacher(name, entry["config"], entry.get("dir"), overrides, pretrain)
    if next(iter(raw)) in aliases:
        raise PlanError(f"{where}: the first teacher is the default and must be a teacher run")
    for alias, target in aliases.items():
        if target not in teachers:
            raise PlanError(
                f"{where}.{alias}: {target!r} names no teacher run of the profile; its teacher "
                f"runs: {', '.join(teachers)}"
            )
    return teachers, aliases


def _load_profile(name: str, raw: Any, settings: Mapping[str, tuple[str, ...]]) -> Profile:
    where = f"profiles.{name}"
    old = sorted(_OLD_TEACHER_KEYS & set(raw) if isinstance(raw, Mapping) else ())
    if old:
        raise PlanError(
            f"{where}: {old} are replaced by teachers: {{teacher: {{config: <preset>, dir: "
            "<kept run folder>}} (a name for each teacher, the first the default)"
        )
    _check_keys(where, raw, _PROFILE_KEYS, {"config", "teachers", "seeds"})
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
    if not isinstance(raw["config"], str) or not raw["config"]:
        raise PlanError(f"{where}.config: expected a preset path, got {raw['config']!r}")
    teachers, aliases = _load_teachers(f"{where}.teachers", raw["teachers"])
    own = raw.get("settings") or {}
    if not isinstance(own, Mapping):
        raise PlanError(
            f"{where}.settings: expected a mapping of named override lists, got {own!r}"
        )
    unknown = sorted(set(map(str, own)) - set(settings))
    if unknown:
        raise PlanError(
            f"{where}.settings: {unknown} name no setting of the plan; known: {sorted(settings)}"
        )
    threads = _positive_int(f"{where}.threads", raw.get("threads", 1))
    return Profile(
        name=_name("profiles", name),
        description=str(raw.get("description", "")),
        config=raw["config"],
        teachers=teachers,
        seeds=tuple(seeds),
        overrides=override_list(f"{where}.overrides", raw.get("overrides")),
        settings={str(k): override_list(f"{where}.settings.{k}", v) for k, v in own.items()},
        groups=_str_list(f"{where}.groups", raw.get("groups")),
        jobs=_positive_int(f"{where}.jobs", raw.get("jobs", 1)),
        threads=threads,
        teacher_threads=_positive_int(
            f"{where}.teacher_threads", raw.get("teacher_threads", threads)
        ),
        nproc_per_run=_positive_int(f"{where}.nproc_per_run", raw.get("nproc_per_run", 1)),
        slurm=_load_slurm(f"{where}.slurm", raw.get("slurm")),
        pretrain=_load_pretrain(f"{where}.pretrain", raw.get("pretrain")),
        teacher_aliases=aliases,
        default_seeds=(
            None
            if raw.get("default_seeds") is None
            else _positive_int(f"{where}.default_seeds", raw["default_seeds"])
        ),
    )


def _load_experiment(
    where: str, raw: Any, settings: Mapping[str, tuple[str, ...]], taken: set[str]
) -> Experiment:
    _check_keys(where, raw, _EXPERIMENT_KEYS, {"name", "groups", "label"})
    name = _name(f"{where}.name", raw["name"])
    if name in taken:
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
    teacher = raw.get("teacher")
    return Experiment(
        name=name,
        groups=groups,
        label=raw["label"],
        description=str(raw.get("description", "")),
        settings=names,
        overrides=override_list(f"{where}.overrides", raw.get("overrides")),
        teacher=None if teacher is None else _name(f"{where}.teacher", teacher),
        seeds=None if raw.get("seeds") is None else _positive_int(f"{where}.seeds", raw["seeds"]),
    )


def _check_teachers(profiles: Mapping[str, Profile], experiments: Sequence[Experiment]) -> None:
    """Every experiment a profile runs names one of its teachers, and no teacher's folder is an
    experiment's."""
    names = {e.name for e in experiments}
    for prof in profiles.values():
        clash = sorted(names & {*prof.teachers, *prof.teacher_aliases})
        if clash:
            raise PlanError(
                f"profiles.{prof.name}.teachers: {clash} also name experiments (a teacher's "
                "run folder is its name)"
            )
        for i, exp in enumerate(experiments):
            ran = not prof.groups or set(exp.groups) & set(prof.groups)
            if ran and exp.teacher is not None:
                try:
                    prof.teacher_of(exp.teacher)
                except PlanError as error:
                    raise PlanError(f"experiments[{i}].{error}") from None


def load_plan(path: str | os.PathLike[str] = DEFAULT_PLAN) -> Plan:
    """Read and validate the plan file; unknown keys, bad names and duplicates raise
    :class:`PlanError` naming the key. ``path`` is relative to the current directory."""
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
    settings = {str(k): override_list(f"settings.{k}", v) for k, v in settings_raw.items()}
    profiles_raw = data["profiles"]
    if not isinstance(profiles_raw, Mapping) or not profiles_raw:
        raise PlanError(f"profiles: expected a non-empty mapping, got {profiles_raw!r}")
    profiles = {str(k): _load_profile(str(k), raw, settings) for k, raw in profiles_raw.items()}
    experiments_raw = data["experiments"]
    if not isinstance(experiments_raw, list) or not experiments_raw:
        raise PlanError(f"experiments: expected a non-empty list, got {experiments_raw!r}")
    experiments: list[Experiment] = []
    for i, raw in enumerate(experiments_raw):
        taken = {e.name for e in experiments}
        experiments.append(_load_experiment(f"experiments[{i}]", raw, settings, taken))
    for prof in profiles.values():
        empty = [g for g in prof.groups if not any(g in e.groups for e in experiments)]
        if empty:
            raise PlanError(f"profiles.{prof.name}.groups: no experiment is in group(s) {empty}")
    _check_teachers(profiles, experiments)
    notebook = data.get("notebook")
    if notebook is not None and (not isinstance(notebook, str) or not notebook.strip()):
        raise PlanError(f"notebook: expected the training notebook's path, got {notebook!r}")
    return Plan(
        profiles=profiles,
        experiments=tuple(experiments),
        source=source,
        settings=settings,
        notebook=notebook,
    )
