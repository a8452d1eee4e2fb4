"""A tiny runs tree for smoke checks, tests and chapters with no runs yet.

:func:`make_demo_runs` trains one with the pipeline itself (the smoke profile of the plan,
in-process, one iteration per run); :func:`demo_tree` keeps one in a cached folder shared by the
chapters checked one after the other. The numbers of such a tree mean nothing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from skdlib.filelock import FileLock

__all__ = ["demo_experiments", "demo_tree", "make_demo_runs"]

PathLike = str | os.PathLike[str]


def _plan_path(repo: PathLike | None) -> Path:
    """The plan of the project ``repo`` (default: the repository of the installed package, an
    editable install).

    Raises:
        FileNotFoundError: no plan there.
    """
    from skdlib.experiments import DEFAULT_PLAN

    root = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]
    plan = root / DEFAULT_PLAN
    if not plan.is_file():
        raise FileNotFoundError(f"repo: no plan {DEFAULT_PLAN} in {root}")
    return plan


def demo_experiments(
    repo: PathLike | None = None, *, profile: str = "smoke"
) -> dict[str, dict[str, Any]]:
    """The pipeline's experiments ``{name: {groups, label, description, overrides}}`` from its
    plan (``configs/experiments.yaml``), their settings expanded as ``profile`` expands them (the
    smoke profile's tiny sizes by default)."""
    from skdlib.experiments import load_plan

    plan = load_plan(_plan_path(repo))
    prof = plan.profile(profile)
    return {
        e.name: {
            "groups": list(e.groups),
            "label": e.label,
            "description": e.description,
            "overrides": list(plan.overrides(e, prof)),
        }
        for e in plan.experiments
    }


def make_demo_runs(
    root: PathLike,
    experiments: Iterable[str],
    *,
    iters: int = 1,
    repo: PathLike | None = None,
    num_train: int = 8,
    num_val: int = 2,
    reuse: bool = False,
    threads: int = 1,
) -> Path:
    """Train a tiny runs tree with the pipeline itself and return its profile folder
    (``<root>/smoke``).

    :func:`skdlib.experiments.run_pipeline` runs the smoke profile of the plan in-process (no
    notebook) for the listed experiments: a teacher and one run per experiment, ``iters``
    iterations each, on a generated 128x128 embedded data set of ``num_train`` / ``num_val``
    images placed under ``root`` (as every data set the runs read). About a second per run on a
    CPU; the numbers mean nothing. ``threads`` torch threads (restored afterwards): on a shared
    2-core machine one thread was measured 8x faster than two for such a tree.

    Existing run folders are trained again from scratch, unless ``reuse`` is set and the folder
    holds a finished run of the same config (the pipeline's reuse by config hash). Callers
    sharing ``root`` across processes should hold a lock (as :func:`demo_tree` does).

    Raises:
        ValueError: an unknown experiment name, ``iters < 1`` or ``threads < 1`` (before any
            work).
    """
    from skdlib.experiments import run_pipeline

    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    plan = _plan_path(repo)
    sets = [
        f"data.options={{height: 128, width: 128, num_train: {num_train}, num_val: {num_val}}}",
        f"train.max_iters={iters}",
        "train.log_every=1",
    ]
    result = run_pipeline(
        "smoke",
        plan_path=plan,
        runs_root=Path(root).resolve(),
        project_root=plan.parents[1],
        data_base=Path(root).resolve(),
        executor="inprocess",
        force=not reuse,
        only=list(experiments),
        sets=sets,
        jobs=1,
        threads=threads,
        teacher_threads=threads,
    )
    if result["failed"]:
        raise RuntimeError(f"demo runs failed: {result['failed']} (see the log)")
    return Path(result["index"]).parent


def _source_digest() -> str:
    """A short hash of the ``skdlib`` sources: a cached demo tree is reused only by the same
    code."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def demo_tree(
    experiments: Sequence[str],
    *,
    repo: PathLike | None = None,
    folder: PathLike | None = None,
) -> Path:
    """The profile folder of a demo tree holding ``experiments`` (one seed, one iteration per
    run, :func:`make_demo_runs`), built or completed in ``folder``.

    When ``folder`` is ``None`` the tree is cached in the temporary folder under a name that
    hashes the ``skdlib`` sources, so chapters checked one after the other share the runs they
    have in common (finished runs with the same config are reused). An exclusive file lock
    serialises processes building it at the same time; its index lists this caller's
    experiments when it returns (later callers only add theirs).
    """
    where = (
        Path(folder)
        if folder is not None
        else Path(tempfile.gettempdir()) / f"skd-demo-runs-{os.getuid()}-{_source_digest()}"
    )
    where.mkdir(parents=True, exist_ok=True)
    with FileLock(where / ".lock"):
        return make_demo_runs(where, experiments, iters=1, repo=repo, reuse=True)
