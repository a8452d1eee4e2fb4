"""The pipeline: every run of a profile, reused, resumed or trained, and ``index.json``.

``run_pipeline("quick", notebook=NOTEBOOK)`` (what ``make book`` calls first, with the book's
training chapter):

1. reads and validates the plan and builds the configuration of every run, so a typo fails in
   seconds, before the teacher trains;
2. generates the embedded data sets the runs read (labelled sets, unlabeled pools) when missing;
3. runs the teacher, then every student run (``jobs`` at a time) through an executor
   (:mod:`skdlib.experiments.executors`);
4. after every run, rewrites ``<runs_root>/<profile>/index.json`` atomically.

Which runs train (see :func:`skdlib.experiments.runs.run_action`): a finished run whose config
hash equals the one the plan makes now is reused; a folder written for another configuration is
trained again from scratch; an interrupted run is resumed; ``force`` trains everything again. A
failed run is recorded as failed and the pipeline goes on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from skdlib.experiments.executors import LocalExecutor
from skdlib.experiments.index import INDEX_NAME, write_index
from skdlib.experiments.plan import DEFAULT_PLAN, TEACHER_DIR, Plan, PlanError, Profile, load_plan
from skdlib.experiments.runs import PORTABLE_HASH, RunSpec, build_runs, resolve, run_action
from skdlib.train.config import ExperimentConfig
from skdlib.train.runfolder import RunFolder, atomic_write_json

__all__ = ["EXECUTORS", "run_pipeline"]

logger = logging.getLogger(__name__)

#: ``local``: papermill executions of the training notebook; ``inprocess``: ``train()`` directly.
EXECUTORS = ("local", "inprocess")
Executor = Literal["local", "inprocess"]

_EMBEDDED_OPTIONS = ("seed", "height", "width", "num_train", "num_val", "small_object_scale")


def _embedded_sets(cfg: ExperimentConfig) -> list[tuple[Path, dict[str, Any]]]:
    """The embedded data sets ``cfg`` reads: ``(root, generator options)`` for its labelled data
    and for its unlabeled stream, when they are the embedded data set."""
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
    """Generate every embedded data set the runs read that is missing, one after the other
    before any run starts; the teacher's class count (else None)."""
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

    def finished(self, spec: RunSpec, result: Mapping[str, Any]) -> None:
        if spec.kept_in is not None and result["status"] == "finished":
            _mark_portable(spec)
        self.done_count += 1
        self.states[spec.key] = dict(result)
        self.write()
        if spec.key != TEACHER_DIR:
            self.durations.append(float(result["elapsed_s"]))
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


def _mark_portable(spec: RunSpec) -> None:
    """Record in a kept run's ``summary.json`` the hash that matches it in any checkout."""
    folder = RunFolder(spec.run_dir)
    summary = folder.read_summary()
    if summary is not None:
        atomic_write_json(folder.summary, {**summary, PORTABLE_HASH: spec.reuse_hash})


def _payload(spec: RunSpec, action: str, threads: int, progress: bool) -> dict[str, Any]:
    return {
        "run_dir": str(spec.run_dir),
        "config": str(spec.config_path),
        "overrides": list(spec.overrides),
        "resume": action == "resume",
        "force": action == "retrain",
        "threads": threads,
        "progress": progress,
    }


def _check_counts(jobs: int, threads: int, teacher_threads: int) -> None:
    for name, value in (("jobs", jobs), ("threads", threads), ("teacher-threads", teacher_threads)):
        if value < 1:
            raise PlanError(f"--{name}: must be >= 1, got {value}")


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
    progress: bool = False,
    teacher_only: bool = False,
) -> dict[str, Any]:
    """Run every run of ``profile`` and return ``{"index", "failed", "actions"}``.

    Args:
        profile: a profile of the plan.
        plan_path, runs_root: relative to ``project_root``.
        project_root: the folder preset paths are relative to (also the notebooks' working
            directory); relative data paths inside the configs are pinned to ``data_base``
            (default: ``project_root``).
        notebook: the training notebook (a MyST ``.md`` or ``.ipynb``) that the ``local``
            executor runs with papermill for each run.
        executor: ``local`` (papermill, needs ``notebook``) or ``inprocess``.
        jobs, threads, teacher_threads: default to the profile's values.
        teacher_only: train (or reuse) the teacher and stop.

    Raises:
        PlanError: a bad plan, profile, experiment name, override or count (before any run).
    """
    root = Path(project_root).resolve()
    plan = load_plan(resolve(plan_path, root))
    prof = plan.profile(profile)
    if executor not in EXECUTORS:
        raise PlanError(f"--executor: expected one of {EXECUTORS}, got {executor!r}")
    if executor == "local" and notebook is None:
        raise PlanError("--executor local runs the training notebook: pass --notebook FILE")
    runs = build_runs(
        plan,
        profile,
        runs_root=runs_root,
        project_root=root,
        data_base=resolve(data_base, root) if data_base is not None else root,
        sets=sets,
        only=only,
    )
    if teacher_only:
        runs = runs[:1]
    jobs = prof.jobs if jobs is None else jobs
    threads = prof.threads if threads is None else threads
    teacher_threads = prof.teacher_threads if teacher_threads is None else teacher_threads
    _check_counts(jobs, threads, teacher_threads)
    logger.info(
        "profile %s: %d runs (teacher + %d student runs), plan %s, %d job(s) x %d thread(s), "
        "teacher %d thread(s), executor %s",
        profile,
        len(runs),
        len(runs) - 1,
        plan.source,
        jobs,
        threads,
        teacher_threads,
        executor,
    )
    num_classes = _ensure_data(runs)
    actions = {spec.key: run_action(spec, force=force) for spec in runs}
    todo = [spec for spec in runs if actions[spec.key][0] != "reuse"]
    track = _Progress(
        plan=plan,
        profile=prof,
        runs=runs,
        index_path=resolve(runs_root, root) / profile / INDEX_NAME,
        project_root=root,
        num_classes=num_classes,
        jobs=jobs,
        total=len(todo),
    )
    for spec in runs:
        reused = actions[spec.key][0] == "reuse"
        track.states[spec.key] = {"status": "finished" if reused else "pending"}
        if reused:
            logger.info("reuse %s (%s)", spec.key, actions[spec.key][1])
    track.write()
    notebook_path = resolve(notebook, root) if executor == "local" else None
    with LocalExecutor(notebook=notebook_path, cwd=root, jobs=jobs) as runner:
        _execute(runner, list(todo), actions, track, threads, teacher_threads, progress)
    failed = [key for key, state in track.states.items() if state["status"] == "failed"]
    logger.info(
        "profile %s: %d run(s) trained, %d reused, %d failed, in %s; index %s",
        profile,
        len(todo),
        len(runs) - len(todo),
        len(failed),
        _fmt(time.perf_counter() - track.t0),
        track.index_path,
    )
    actions_only = {k: a for k, (a, _) in actions.items()}
    return {"index": track.index_path, "failed": failed, "actions": actions_only}


def _execute(
    runner: LocalExecutor,
    todo: list[RunSpec],
    actions: Mapping[str, tuple[str, str]],
    track: _Progress,
    threads: int,
    teacher_threads: int,
    progress: bool,
) -> None:
    """The teacher alone first (the students need its final.pt), then the students."""
    specs = {spec.key: spec for spec in todo}
    if todo and todo[0].key == TEACHER_DIR:
        teacher = todo.pop(0)
        track.started(teacher.key, *actions[teacher.key])
        payload = _payload(teacher, actions[teacher.key][0], teacher_threads, progress)
        track.finished(teacher, runner.run_one(payload))
        if track.states[TEACHER_DIR]["status"] == "failed":
            logger.error("the teacher failed: the student runs need its final.pt; not started")
            for spec in todo:
                error = {"status": "failed", "error": "the teacher run failed", "elapsed_s": 0.0}
                track.finished(spec, error)
            return
    runner.run_many(
        [(s.key, _payload(s, actions[s.key][0], threads, progress)) for s in todo],
        started=lambda key: track.started(key, *actions[key]),
        finished=lambda key, result: track.finished(specs[key], result),
    )
