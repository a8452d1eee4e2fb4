"""The pipeline: every run of a profile, reused, resumed or trained, and ``index.json``.

``run_pipeline("quick")`` (what ``make book`` calls first; each run executes the training
notebook the plan names, or ``notebook``):

1. reads and validates the plan and builds the configuration of every run, so a typo fails in
   seconds, before the teacher trains;
2. generates the embedded data sets the runs read (labelled sets, unlabeled pools) when missing;
3. runs the teachers the selected experiments learn from and the pretraining run, then builds
   the teacher-output stores the students read (:mod:`skdlib.experiments.stores`: each fixed
   teacher's outputs for every scene and flip of a data set, computed once, not once per run),
   then every student run (``jobs`` at a time) through an executor
   (:mod:`skdlib.experiments.executors`: papermill or in-process on this machine, one run per
   free GPU group with ``gpus``; :mod:`skdlib.experiments.slurm`: one SLURM job per run), each
   run in ``nproc_per_run`` processes (torch's elastic launcher);
4. after every run, merges the run's status into ``<runs_root>/<profile>/index.json``.

Which runs train (see :func:`skdlib.experiments.runs.run_action`): a finished run whose identity
(its config hash with the paths written relative to the project root, the runs root and the data
base) equals the one the plan makes now is reused, wherever the checkout or the runs tree lies;
a folder written for another configuration is trained again from scratch; an interrupted run is
resumed; ``force`` trains everything again. A failed run is recorded as failed and the pipeline
goes on.

Several pipelines (on one machine, or cluster jobs on one shared file system) can share a runs
tree: a run is trained by the process holding its lock (:mod:`skdlib.experiments.locks`), which
decides again under the lock; a pipeline skips a run another live process holds, does the
others, then comes back to it (reused when the other finished it, taken over when the other
died); the students wait for a teacher another process is training (they need its final.pt);
a teacher-output store is checked and built under its own lock; ``index.json`` is merged under
a lock (:mod:`skdlib.experiments.index`). So each run trains once, and every pipeline ends with
the whole profile done.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from skdlib.experiments.executors import BUSY, LocalExecutor
from skdlib.experiments.index import INDEX_NAME, write_index
from skdlib.experiments.locks import holder_of, run_lock, wait_until_free
from skdlib.experiments.plan import (
    DEFAULT_PLAN,
    STORE_DIR,
    Plan,
    PlanError,
    Profile,
    SlurmOptions,
    load_plan,
)
from skdlib.experiments.runs import (
    Action,
    RunSpec,
    build_runs,
    longest_first,
    mark_portable,
    resolve,
    run_action,
)
from skdlib.experiments.stores import ensure_stores
from skdlib.train.build import embedded_data_sets
from skdlib.train.runfolder import RunFolder

__all__ = ["DEFAULT_POLL_S", "EXECUTORS", "run_pipeline"]

logger = logging.getLogger(__name__)

#: ``local``: papermill executions of the training notebook; ``inprocess``: ``train()``
#: directly; ``slurm``: one SLURM job per run (submitit), the notebook or ``train()`` inside.
EXECUTORS = ("local", "inprocess", "slurm")
Executor = Literal["local", "inprocess", "slurm"]
#: Seconds between two looks at a run another process holds, and at SLURM jobs (``--poll-s``).
DEFAULT_POLL_S = 10.0


def _ensure_data(runs: Sequence[RunSpec], actions: dict[str, tuple[Action, str]]) -> int | None:
    """Generate every embedded data set the runs read that is missing, one after the other
    before any run starts; the runs' class count (else None).

    A run kept in the repository that is reused needs no data (its results are in its folder):
    a fresh checkout does not generate the kept teacher's large training set.
    """
    from skdlib.data.generate import ensure_embedded, read_manifest

    done: set[str] = set()
    needed = [s for s in runs if not s.kept or actions[s.key][0] != "reuse"]
    for spec in needed:
        for root, options in embedded_data_sets(spec.config):
            key = json.dumps([str(root), options], sort_keys=True, default=str)
            if key in done:
                continue
            done.add(key)
            if options or read_manifest(root) is None:
                logger.info(
                    "embedded data set: ensuring %s %s", root, options or "(default options)"
                )
                ensure_embedded(root, **options)
    # The students' label set (a pretraining run's is its own source task's), else a teacher's.
    for spec in runs[::-1]:  # students last in the list, the teachers first
        table = Path(spec.config.data.root) / "classes.json"
        pretraining = spec.experiment is None and not spec.is_teacher
        if not pretraining and spec.config.data.name == "embedded" and table.is_file():
            return len(json.loads(table.read_text())["names"])
    return None


def _fmt(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass
class _Progress:
    """Run states, ``index.json`` after every change, and the progress lines (with an ETA from
    the student runs that ended so far)."""

    plan: Plan
    profile: Profile
    runs: Sequence[RunSpec]
    index_path: Path
    project_root: Path
    num_classes: int | None
    jobs: int
    total: int
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    started_count: int = 0
    done_count: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def write(self) -> None:
        write_index(
            self.index_path,
            self.plan,
            self.profile,
            self.runs,
            self.states,
            num_classes=self.num_classes,
            project_root=self.project_root,
        )

    def started(self, key: str, action: str, why: str) -> None:
        self.started_count += 1
        logger.info("[%d/%d] start %s: %s (%s)", self.started_count, self.total, key, action, why)

    def busy(self, key: str, holder: str) -> None:
        """A run found locked by another process when it was to start: not started after all."""
        self.started_count -= 1
        logger.info("%s: being trained by %s; later", key, holder)

    def reused(self, spec: RunSpec, why: str) -> None:
        """A run another process finished while this one waited for it."""
        self.done_count += 1
        self.states[spec.key] = {"status": "finished"}
        self.write()
        logger.info("[%d/%d] reuse %s (%s)", self.done_count, self.total, spec.key, why)

    def finished(self, spec: RunSpec, result: Mapping[str, Any]) -> None:
        if result.get("reused"):
            self.started_count -= 1
            self.reused(spec, f"finished by another process: {result['reused']}")
            return
        if result["status"] == "finished":
            mark_portable(spec.run_dir, spec.reuse_hash)
        self.done_count += 1
        self.states[spec.key] = {k: v for k, v in result.items() if k != "holder"}
        self.write()
        if spec.experiment is not None:  # the ETA counts the students
            self.durations.append(float(result["elapsed_s"]))
        self._log_end(spec, result)

    def _log_end(self, spec: RunSpec, result: Mapping[str, Any]) -> None:
        remaining = self.total - self.done_count
        eta = "?"
        if self.durations or not remaining:
            mean = sum(self.durations) / len(self.durations) if self.durations else 0.0
            eta = _fmt(mean * -(-remaining // self.jobs))
        extra = f": {result['error']}" if result.get("error") else ""
        score = ""
        summary = RunFolder(spec.run_dir).read_summary()
        if result["status"] == "finished" and summary is not None:
            score = f", val mIoU {summary.get('miou', float('nan')):.4f}"
        logger.info(
            "[%d/%d] %s %s in %s%s%s; elapsed %s, ETA %s",
            self.done_count,
            self.total,
            result["status"],
            spec.key,
            _fmt(result["elapsed_s"]),
            score,
            extra,
            _fmt(time.perf_counter() - self.t0),
            eta,
        )


@dataclass(frozen=True)
class _Resources:
    """How the runs use the machine(s): resolved from the profile and the caller's options."""

    jobs: int  #: runs at a time on this machine (local executors)
    slurm_jobs: int | None  #: jobs in flight (slurm executor): the caller's jobs, else no limit
    threads: int
    teacher_threads: int
    nproc: int
    gpus: tuple[str, ...] | None
    slurm: SlurmOptions


def _resources(
    prof: Profile,
    executor: str,
    *,
    jobs: int | None,
    threads: int | None,
    teacher_threads: int | None,
    nproc_per_run: int | None,
    gpus: Sequence[str | int] | None,
    slurm: Mapping[str, Any] | None,
) -> _Resources:
    """The profile's values replaced by the caller's; every count checked (``PlanError``)."""
    res = _Resources(
        jobs=prof.jobs if jobs is None else jobs,
        slurm_jobs=jobs,
        threads=prof.threads if threads is None else threads,
        teacher_threads=prof.teacher_threads if teacher_threads is None else teacher_threads,
        nproc=prof.nproc_per_run if nproc_per_run is None else nproc_per_run,
        gpus=None if gpus is None else tuple(str(g).strip() for g in gpus),
        slurm=_slurm_options(prof.slurm, slurm or {}),
    )
    counts = {
        "jobs": res.jobs,
        "threads": res.threads,
        "teacher-threads": res.teacher_threads,
        "nproc-per-run": res.nproc,
    }
    for name, value in counts.items():
        if value < 1:
            raise PlanError(f"--{name}: must be >= 1, got {value}")
    if res.gpus is None:
        return res
    if executor == "slurm":
        raise PlanError("--gpus: for the local executors; SLURM gives each job its GPUs")
    if jobs is not None:
        raise PlanError("--jobs and --gpus exclude each other: --gpus runs one run per group")
    if not res.gpus or not all(g.isdigit() for g in res.gpus) or len(res.gpus) < res.nproc:
        raise PlanError(
            f"--gpus: expected at least --nproc-per-run={res.nproc} GPU ids like 0,1, got "
            f"{','.join(res.gpus)!r}"
        )
    return replace(res, jobs=len(res.gpus) // res.nproc)


def _slurm_options(base: SlurmOptions, given: Mapping[str, Any]) -> SlurmOptions:
    known = set(SlurmOptions.__dataclass_fields__)
    unknown = sorted(set(given) - known)
    if unknown:
        raise PlanError(f"slurm options: unknown {unknown}; known: {sorted(known)}")
    options = replace(base, **{k: v for k, v in given.items() if v is not None})
    for name in ("cpus_per_run", "time_min"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise PlanError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
    if options.gpus_per_run < 0 or (options.mem_gb is not None and options.mem_gb <= 0):
        raise PlanError(f"--gpus-per-run must be >= 0 and --mem-gb > 0, got {options}")
    return options


def _payload(
    spec: RunSpec,
    action: str,
    threads: int,
    res: _Resources,
    *,
    forced: bool,
    progress: bool,
    store: Path | None,
) -> dict[str, Any]:
    return {
        "run_dir": str(spec.run_dir),
        "config": str(spec.config_path),
        "overrides": list(spec.overrides),
        "config_hash": spec.reuse_hash,
        "roots": dict(spec.roots),
        "resume": action == "resume",
        "force": action == "retrain",
        "forced": forced,
        "threads": threads,
        "nproc": res.nproc,
        "devices": None,
        "progress": progress,
        "teacher_store": str(store) if store is not None and spec.experiment else None,
    }


def _make_runner(
    executor: str,
    notebook: Path | None,
    root: Path,
    res: _Resources,
    poll_s: float,
    *,
    fresh_kernels: bool,
) -> Any:
    """The executor object of ``executor`` (a context manager with ``run_one``/``run_many``)."""
    if executor == "slurm":
        from skdlib.experiments.slurm import SlurmExecutor

        return SlurmExecutor(
            notebook=notebook, cwd=root, options=res.slurm, jobs=res.slurm_jobs, poll_s=poll_s
        )
    return LocalExecutor(
        notebook=notebook,
        cwd=root,
        jobs=res.jobs,
        gpus=res.gpus,
        nproc=res.nproc,
        warm=not fresh_kernels,
    )


def run_pipeline(
    profile: str,
    *,
    plan_path: str | os.PathLike[str] = DEFAULT_PLAN,
    runs_root: str | os.PathLike[str] = "runs",
    project_root: str | os.PathLike[str] = ".",
    data_base: str | os.PathLike[str] | None = None,
    notebook: str | os.PathLike[str] | None = None,
    executor: Executor = "local",
    force: bool = False,
    only: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    jobs: int | None = None,
    threads: int | None = None,
    teacher_threads: int | None = None,
    nproc_per_run: int | None = None,
    gpus: Sequence[str | int] | None = None,
    slurm: Mapping[str, Any] | None = None,
    progress: bool = False,
    poll_s: float = DEFAULT_POLL_S,
    runner: Any = None,
    teacher_only: bool = False,
    fresh_kernels: bool = False,
    teacher_store: bool = True,
) -> dict[str, Any]:
    """Run every run of ``profile`` and return ``{"index", "failed", "actions"}``.

    ``plan_path`` and ``runs_root`` are relative to ``project_root`` (also the notebooks' working
    directory); relative data paths inside the configs are pinned to ``data_base`` (default:
    ``project_root``). ``notebook`` (MyST ``.md`` or ``.ipynb``; default: the plan's
    ``notebook``) is what each run executes (``executor="local"`` needs one; ``"slurm"`` runs it
    in the job when there is one);
    ``"inprocess"`` calls ``train()``. ``jobs``, ``threads``, ``teacher_threads`` and
    ``nproc_per_run`` default to the profile's; ``gpus`` (local executors) runs one run per
    ``nproc_per_run`` of them; ``slurm`` replaces fields of the profile's :class:`SlurmOptions`;
    ``jobs`` caps the SLURM jobs in flight (default: none). ``poll_s``: seconds between two
    looks at runs other processes hold and at SLURM jobs. ``runner``: an executor object to use
    instead of building one (tests). ``teacher_only``: train (or reuse) every teacher of the
    profile and the pretraining run, and stop. ``fresh_kernels``: each local notebook run in a
    kernel of its own (papermill) instead of the executor's warm kernels
    (:mod:`skdlib.experiments.kernels`). ``teacher_store``: build the teacher-output stores and
    let the students read them (local executors; off: each run computes its teacher's outputs,
    the same values).

    Raises:
        PlanError: a bad plan, profile, experiment name, override or count (before any run).
    """
    root = Path(project_root).resolve()
    plan = load_plan(resolve(plan_path, root))
    prof = plan.profile(profile)
    notebook = notebook if notebook is not None else plan.notebook
    _check_executor(executor, notebook)
    runs = build_runs(
        plan,
        profile,
        runs_root=runs_root,
        project_root=root,
        data_base=resolve(data_base, root) if data_base is not None else root,
        sets=sets,
        only=only,
        all_teachers=teacher_only,
    )
    if teacher_only:  # every teacher and the other runs the students need
        runs = [spec for spec in runs if spec.experiment is None]
    res = _resources(
        prof,
        executor,
        jobs=jobs,
        threads=threads,
        teacher_threads=teacher_threads,
        nproc_per_run=nproc_per_run,
        gpus=gpus,
        slurm=slurm,
    )
    _log_start(profile, plan, runs, res, executor)
    actions = {spec.key: run_action(spec, force=force) for spec in runs}
    for spec in runs:  # a run finished before summaries recorded its identity gets it now
        if actions[spec.key][0] == "reuse":
            mark_portable(spec.run_dir, spec.reuse_hash)
    num_classes = _ensure_data(runs, actions)
    todo = [spec for spec in runs if actions[spec.key][0] != "reuse"]
    track = _start_progress(plan, prof, runs, actions, todo, root, runs_root, num_classes, res)
    use = None if notebook is None or executor == "inprocess" else resolve(notebook, root)
    store = _store_root(runs_root, root, prof, executor, enabled=teacher_store)

    def payload(spec: RunSpec, threads: int) -> dict[str, Any]:
        action = actions[spec.key][0]
        return _payload(spec, action, threads, res, forced=force, progress=progress, store=store)

    def prepare(students: Sequence[RunSpec]) -> None:
        if store is not None and students:
            ensure_stores(students, store, threads=res.threads)

    made = runner or _make_runner(executor, use, root, res, poll_s, fresh_kernels=fresh_kernels)
    with made as active:
        _execute(active, list(todo), actions, track, payload, res, poll_s, prepare)
    return _summary(profile, runs, todo, actions, track)


def _store_root(
    runs_root: str | os.PathLike[str], root: Path, prof: Profile, executor: str, *, enabled: bool
) -> Path | None:
    """The profile's folder of teacher-output stores, or None: off, or SLURM jobs (they run on
    other machines, whose device and threads the pipeline's machine cannot stand in for)."""
    if not enabled:
        return None
    if executor == "slurm":
        logger.info("teacher-output stores: not built for SLURM jobs (each run computes its own)")
        return None
    return resolve(runs_root, root) / prof.name / STORE_DIR


def _check_executor(executor: str, notebook: str | os.PathLike[str] | None) -> None:
    if executor not in EXECUTORS:
        raise PlanError(f"--executor: expected one of {EXECUTORS}, got {executor!r}")
    if executor == "local" and notebook is None:
        raise PlanError(
            "--executor local runs the training notebook: the plan names none (its `notebook` "
            "key); pass --notebook FILE"
        )


def _summary(
    profile: str,
    runs: Sequence[RunSpec],
    todo: Sequence[RunSpec],
    actions: Mapping[str, tuple[str, str]],
    track: _Progress,
) -> dict[str, Any]:
    """The last log line and what :func:`run_pipeline` returns."""
    failed = [key for key, state in track.states.items() if state["status"] == "failed"]
    logger.info(
        "profile %s: %d run(s) to do, %d reused, %d failed, in %s; index %s",
        profile,
        len(todo),
        len(runs) - len(todo),
        len(failed),
        _fmt(time.perf_counter() - track.t0),
        track.index_path,
    )
    actions_only = {k: a for k, (a, _) in actions.items()}
    return {"index": track.index_path, "failed": failed, "actions": actions_only}


def _log_start(
    profile: str, plan: Plan, runs: Sequence[RunSpec], res: _Resources, executor: str
) -> None:
    where = f"{res.jobs} job(s)" if executor != "slurm" else "SLURM jobs"
    if res.gpus is not None:
        where += f" on GPUs {','.join(res.gpus)}"
    prerequisites = [spec.key for spec in runs if spec.experiment is None]  # teachers, pretrain
    logger.info(
        "profile %s: %d runs (%s + %d student runs), plan %s, %s x %d thread(s) x %d "
        "process(es), teachers %d thread(s), executor %s",
        profile,
        len(runs),
        " + ".join(prerequisites),
        len(runs) - len(prerequisites),
        plan.source,
        where,
        res.threads,
        res.nproc,
        res.teacher_threads,
        executor,
    )


def _start_progress(
    plan: Plan,
    prof: Profile,
    runs: Sequence[RunSpec],
    actions: Mapping[str, tuple[str, str]],
    todo: Sequence[RunSpec],
    root: Path,
    runs_root: str | os.PathLike[str],
    num_classes: int | None,
    res: _Resources,
) -> _Progress:
    """The progress tracker, every run's first state, and the first ``index.json``."""
    track = _Progress(
        plan=plan,
        profile=prof,
        runs=runs,
        index_path=resolve(runs_root, root) / prof.name / INDEX_NAME,
        project_root=root,
        num_classes=num_classes,
        jobs=res.jobs,
        total=len(todo),
    )
    for spec in runs:
        reused = actions[spec.key][0] == "reuse"
        track.states[spec.key] = {"status": "finished" if reused else "pending"}
        if reused:
            logger.info("reuse %s (%s)", spec.key, actions[spec.key][1])
    track.write()
    return track


Payloads = Callable[[RunSpec, int], dict[str, Any]]


def _execute(
    runner: Any,
    todo: list[RunSpec],
    actions: Mapping[str, tuple[str, str]],
    track: _Progress,
    payload: Payloads,
    res: _Resources,
    poll_s: float,
    prepare: Callable[[Sequence[RunSpec]], None] = lambda students: None,
) -> None:
    """The runs the students need alone first (the teachers, a pretraining run: the students
    read their final.pt), then ``prepare(students)`` (the teacher-output stores), then the
    students, the costliest first (:func:`~skdlib.experiments.runs.longest_first`); a run that
    needs a failed run (its teacher, its pretraining run, or theirs: a teacher's own
    pretraining) is recorded failed."""
    failed: list[str] = []
    upstream = _upstream(todo)

    def blocked(spec: RunSpec) -> list[str]:
        return [key for key in failed if key in upstream(spec)]

    while todo and todo[0].experiment is None:
        needed = todo.pop(0)
        waiting = [s for s in todo if s.experiment is not None]
        if blocked(needed) or (
            failed and waiting and all(blocked(s) or needed.key not in upstream(s) for s in waiting)
        ):
            # Not run: it needs a failed run, or every student to train that needs it does.
            error = {
                "status": "failed",
                "error": f"the {(blocked(needed) or failed)[0]} run failed",
            }
            track.finished(needed, {**error, "elapsed_s": 0.0})
            continue
        _run_teacher(runner, needed, actions, track, payload(needed, res.teacher_threads), poll_s)
        if track.states[needed.key]["status"] == "failed":
            logger.error("the %s run failed: its student runs need its final.pt", needed.key)
            failed.append(needed.key)
    students = []
    for spec in todo:
        missing = blocked(spec)
        if missing:
            error = {"status": "failed", "error": f"the {missing[0]} run failed"}
            track.finished(spec, {**error, "elapsed_s": 0.0})
        else:
            students.append(spec)
    prepare(students)
    students = longest_first(students)
    _run_students(runner, students, actions, track, lambda s: payload(s, res.threads), poll_s)


def _upstream(runs: Sequence[RunSpec]) -> Callable[[RunSpec], set[str]]:
    """The keys of the runs among the teachers and pretraining runs of ``runs`` whose final.pt
    a run starts from or learns from, and theirs in turn (a student's teacher's own pretraining)."""
    finals = {str(RunFolder(s.run_dir).final): s for s in runs if s.experiment is None}

    def upstream(spec: RunSpec) -> set[str]:
        model = spec.config.model
        keys: set[str] = set()
        for path in (model.teacher_checkpoint, model.student_pretrained):
            if path in finals:
                keys |= {finals[path].key, *upstream(finals[path])}
        return keys

    return upstream


def _run_teacher(
    runner: Any,
    teacher: RunSpec,
    actions: Mapping[str, tuple[str, str]],
    track: _Progress,
    payload: dict[str, Any],
    poll_s: float,
) -> None:
    """Train the teacher here, or wait for the process that trains it and reuse its run."""
    while True:
        holder = holder_of(run_lock(teacher.run_dir))
        if holder is None:
            track.started(teacher.key, *actions[teacher.key])
            result = runner.run_one(payload)
            if result["status"] != BUSY:
                track.finished(teacher, result)
                return
            track.busy(teacher.key, result["holder"])
            holder = result["holder"]
        logger.info("%s: trained by %s; its students wait for its final.pt", teacher.key, holder)
        wait_until_free(run_lock(teacher.run_dir), poll_s=poll_s, what=f"the {teacher.key} run")
        action, why = run_action(teacher)
        if action == "reuse":
            track.reused(teacher, f"trained by another process: {why}")
            return
        # The other process died: take its run over (resumed; --force no longer applies).
        actions = {**actions, teacher.key: (action, why)}
        payload = {**payload, "resume": action == "resume", "force": action == "retrain"}
        payload["forced"] = False


def _run_students(
    runner: Any,
    todo: Sequence[RunSpec],
    actions: Mapping[str, tuple[str, str]],
    track: _Progress,
    payload: Callable[[RunSpec], dict[str, Any]],
    poll_s: float,
) -> None:
    """Every student run: those no other process holds first; then, again and again, those
    that were held: reused when the other process finished them, else run here."""
    actions = dict(actions)
    pending = list(todo)
    announced: set[str] = set()
    while pending:
        holders = {s.key: holder_of(run_lock(s.run_dir)) for s in pending}
        held = {key for key, holder in holders.items() if holder is not None}
        for key in sorted(held - announced):
            logger.info("%s: being trained by %s; later", key, holders[key])
        free = [s for s in pending if s.key not in held]
        if free:
            held |= _run_round(runner, free, actions, track, payload, taken_over=announced)
        else:
            time.sleep(poll_s)
        announced |= held
        pending = []
        for spec in (s for s in todo if s.key in held):
            actions[spec.key] = run_action(spec)
            if actions[spec.key][0] == "reuse":
                track.reused(spec, f"trained by another process: {actions[spec.key][1]}")
            else:
                pending.append(spec)


def _run_round(
    runner: Any,
    specs: Sequence[RunSpec],
    actions: Mapping[str, tuple[str, str]],
    track: _Progress,
    payload: Callable[[RunSpec], dict[str, Any]],
    *,
    taken_over: set[str],
) -> set[str]:
    """Run ``specs`` through the executor; the keys of those another process held after all.
    A run another process held before (``taken_over``) is taken over as that process left it:
    ``--force`` no longer applies to it."""
    by_key = {s.key: s for s in specs}
    busy: set[str] = set()

    def made(spec: RunSpec) -> dict[str, Any]:
        base = payload(spec)
        return {**base, "forced": base["forced"] and spec.key not in taken_over}

    def ended(key: str, result: Mapping[str, Any]) -> None:
        if result["status"] == BUSY:
            busy.add(key)
            track.busy(key, result["holder"])
        else:
            track.finished(by_key[key], result)

    runner.run_many(
        [(s.key, made(s)) for s in specs],
        started=lambda key: track.started(key, *actions[key]),
        finished=ended,
    )
    return busy
